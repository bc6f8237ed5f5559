"""mkdocs hooks: the home page is the README and the command-line reference is written from servekit's own
argument parser, so neither can drift. (The tutorials come in through the symlink docs/notebooks.)"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parents[1]


def on_files(files: Files, config) -> Files:
    files.append(File.generated(config, "index.md", content=readme()))
    files.append(File.generated(config, "reference/cli.md", content=cli_reference()))
    executed = os.environ.get("SERVEKIT_DOCS_NOTEBOOKS")
    if executed:
        with_outputs(files, Path(executed))
    return files


def with_outputs(files: Files, executed: Path) -> None:
    """Each tutorial page from its copy in ``executed`` (the notebooks as the test command ran them, outputs
    included: conftest.py writes them), where there is one; the stored notebooks have no outputs."""
    for path in sorted(executed.glob("*.ipynb")):
        page = files.get_file_from_path(f"notebooks/{path.name}")
        if page is not None:
            page.abs_src_path = str(path)  # mkdocs-jupyter reads the notebook from here


def readme() -> str:
    """The README with its links made relative to the site: docs/X.md -> X.md, notebooks stay as pages."""
    text = (ROOT / "README.md").read_text()
    text = text.replace("](docs/", "](")
    return re.sub(r"\]\((?!https?://|#)([^)]+)\)", lambda m: f"]({_site_link(m.group(1))})", text)


def _site_link(target: str) -> str:
    if target.endswith((".md", ".ipynb")) or target.startswith("notebooks/"):
        return target
    return f"https://github.com/servekit/servekit/blob/main/{target}"  # a source file: link to the repository


def cli_reference() -> str:
    from servekit.cli import build_parser

    parser = build_parser()
    parts = ["# Command line", "", "`servekit COMMAND …` — every command's `--help`, as the installed version prints it.", ""]
    commands = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    for name, sub in commands.choices.items():
        parts += [f"## servekit {name}", "", "```text", sub.format_help().rstrip(), "```", ""]
    return "\n".join(parts)


_ROLE = re.compile(r":(?:class|func|meth|attr|data|mod|exc|obj):(?=<code>)")


def on_page_content(html: str, page, config, files) -> str:
    """Docstrings name objects the Sphinx way (:class:`Server`); the API pages show just the name, as code. A page
    with plotly charts (a tutorial with a run's outputs) loads plotly.js from the site itself."""
    if 'class="plotly-graph-div"' in html:
        up = "../" * page.url.count("/")
        html = f'<script src="{up}{PLOTLY_JS}"></script>\n' + html
    return _ROLE.sub("", html)


PLOTLY_JS = "assets/javascripts/plotly.min.js"


def on_post_build(config) -> None:
    """plotly.js (the one the plotly package ships) into the site, for the tutorials' charts: no CDN needed."""
    try:
        import plotly
    except ImportError:
        return
    bundled = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    target = Path(config["site_dir"]) / PLOTLY_JS
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(bundled, target)
