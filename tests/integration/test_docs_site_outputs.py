"""The docs site's tutorials show what a run of them showed: tables, charts and the printed numbers under the code.

Marked ``after_notebooks``: in the test command it runs once the notebooks have run; conftest.py (the repository's
root) kept their outputs in .ci/artifacts/notebooks/. The stored notebooks have none (tests/unit/test_notebooks.py
checks that), so without this the site would show code only. The built site is the CI artefact .ci/artifacts/site.
"""

from __future__ import annotations

import html
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SITE = ROOT / ".ci" / "artifacts" / "site"


@pytest.mark.after_notebooks
@pytest.mark.timeout(300)
def test_tutorial_pages_show_this_runs_outputs(executed_notebooks):
    if not executed_notebooks:
        pytest.skip("no notebook ran in this session: the test command runs them before this file")
    pytest.importorskip("mkdocs", reason="the docs extra: pip install -e '.[docs]' (the Makefile's venv has it)")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "SERVEKIT_DOCS_NOTEBOOKS": str(executed_notebooks[0].parent)}
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(SITE)], cwd=ROOT,
                          capture_output=True, text=True, timeout=280, env=env, check=False)
    assert done.returncode == 0, done.stderr[-4000:]
    figures = 0
    for notebook in executed_notebooks:
        outputs = [o for cell in json.loads(notebook.read_text())["cells"] if cell["cell_type"] == "code"
                   for o in cell.get("outputs", [])]
        assert outputs, f"{notebook.name}: the run kept no outputs"
        page = (SITE / "notebooks" / notebook.stem / "index.html").read_text()
        shown = html.unescape(re.sub(r"<[^>]+>", "", page))
        for output in outputs:  # what each cell printed is on the page under its code
            printed = "".join(output.get("text", "")).strip().splitlines()
            if output["output_type"] == "stream" and printed:
                assert printed[0][:60] in shown, (notebook.name, printed[0])
        drawn = sum("application/vnd.plotly.v1+json" in o.get("data", {}) for o in outputs)
        assert page.count('class="plotly-graph-div"') == drawn, notebook.name  # every chart, drawn by plotly.js
        figures += drawn
    if figures:
        assert (SITE / "assets" / "javascripts" / "plotly.min.js").is_file(), "plotly.js comes with the site"
