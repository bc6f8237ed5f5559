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
    first_code = next(c for c in cells if c["cell_type"] == "code")
    source = "".join(first_code["source"])
    assert "parameters" in first_code["metadata"].get("tags", [])
    for name in ("ENGINE", "MODEL", "DEVICE"):
        assert f"{name} = " in source, f"{path.name}: the parameters cell sets {name}"
