"""mkdocs hooks: the home page is the README and the command-line reference is written from servekit's own
argument parser, so neither can drift. (The tutorials come in through the symlink docs/notebooks.)"""

from __future__ import annotations

import re
from pathlib import Path

from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parents[1]


def on_files(files: Files, config) -> Files:  # noqa: ANN001 - mkdocs' config object
    files.append(File.generated(config, "index.md", content=readme()))
    files.append(File.generated(config, "reference/cli.md", content=cli_reference()))
    return files


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


def on_page_content(html: str, page, config, files) -> str:  # noqa: ANN001 - mkdocs' objects
    """Docstrings name objects the Sphinx way (:class:`Server`); the API pages show just the name, as code."""
    return _ROLE.sub("", html)
