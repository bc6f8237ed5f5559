"""The docs site builds with `mkdocs build --strict` (a broken link, a missing page or an API reference that no
longer resolves fails it); the built site is kept in .ci/artifacts/site."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SITE = ROOT / ".ci" / "artifacts" / "site"


@pytest.mark.timeout(300)
def test_docs_site_builds_strict():
    pytest.importorskip("mkdocs", reason="the docs extra: pip install -e '.[docs]' (the Makefile's venv has it)")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(SITE)], cwd=ROOT,
                          capture_output=True, text=True, timeout=280, env=env, check=False)
    assert done.returncode == 0, done.stderr[-4000:]
    for page in ("index.html", "install/index.html", "reference/api/index.html", "reference/cli/index.html",
                 "notebooks/06-tool-calling/index.html"):
        assert (SITE / page).is_file(), page
    cli = (SITE / "reference/cli/index.html").read_text()
    assert "servekit doctor" in cli and "servekit serve" in cli  # written from the parser itself
    api = (SITE / "reference/api/index.html").read_text()
    assert "constraint_options" in api and "attach" in api
    assert ":class:<code>" not in api and ":func:<code>" not in api  # Sphinx roles shown as plain code
