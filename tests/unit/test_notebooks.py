"""The tutorials as stored: no outputs (the test command runs them), and a parameters cell up front."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).parents[2] / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebooks_are_stored_without_outputs(path):
    cells = json.loads(path.read_text())["cells"]
    code = [c for c in cells if c["cell_type"] == "code"]
    assert code, "a notebook without code"
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code), \
        f"{path.name} has outputs: clear them before committing (Jupyter: Edit > Clear Outputs of All Cells)"


@pytest.mark.parametrize("path", [p for p in NOTEBOOKS if not p.name.startswith("01-")], ids=lambda p: p.name)
def test_each_lesson_starts_with_a_parameters_cell(path):
    cells = json.loads(path.read_text())["cells"]
    first_code = [c for c in cells if c["cell_type"] == "code"][1]  # after the Colab set-up cell
    source = "".join(first_code["source"])
    assert "parameters" in first_code["metadata"].get("tags", [])
    for name in ("ENGINE", "MODEL", "DEVICE"):
        assert f"{name} = " in source, f"{path.name}: the parameters cell sets {name}"


def colab_cell(path: Path) -> dict:
    return next(c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code")


def test_every_notebook_opens_with_the_same_colab_setup_cell():
    cells = {path.name: colab_cell(path) for path in NOTEBOOKS}
    sources = {"".join(cell["source"]) for cell in cells.values()}
    assert len(sources) == 1, "the Colab set-up cells differ: keep them identical"
    assert all("colab-setup" in cell["metadata"].get("tags", []) for cell in cells.values())
    source = sources.pop()
    for words in ("import google.colab", "pip", "SERVEKIT_PIP_SPEC", "enable_custom_widget_manager"):
        assert words in source


def test_the_colab_cell_does_nothing_outside_colab(tmp_path):
    import subprocess
    import sys

    source = "".join(colab_cell(NOTEBOOKS[0])["source"])
    done = subprocess.run([sys.executable, "-c", source], capture_output=True, text=True, timeout=60, cwd=tmp_path,
                          check=False)
    assert done.returncode == 0 and done.stdout == "" and done.stderr == "", done
