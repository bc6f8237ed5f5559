"""What servekit finds on this machine: Python, engines and their versions, GPUs, cache sizes, where state
and run files live, how links to servers are made. ``servekit doctor`` prints it; ``--json`` for scripts.

>>> print(servekit.doctor.report())   # in a notebook: the same text
"""

from __future__ import annotations

import os
import platform
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from . import __version__
from .gpus import Gpu, gpus


@dataclass(frozen=True)
class EngineStatus:
    """One engine as servekit would launch it here."""

    name: str
    display_name: str
    installed: bool
    version: str | None
    detail: str
    install_hint: str


@dataclass(frozen=True)
class Report:
    """Everything ``servekit doctor`` prints."""

    python: str
    python_version: str
    platform: str
    servekit_version: str
    engines: list[EngineStatus]
    gpus: list[Gpu]
    cache_dir: str
    cache_sizes_mb: dict[str, float]
    state_dir: str
    run_dir: str
    links: str
    link_template: str
    servers: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["gpus"] = [gpu.to_dict() for gpu in self.gpus]
        return data

    def __str__(self) -> str:
        return "\n".join(self.lines())

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:  # IPython shows the text, not the dataclass
        printer.text(str(self))

    def lines(self) -> list[str]:
        out = [f"servekit {self.servekit_version} on Python {self.python_version} ({self.python})",
               f"platform: {self.platform}", "", "engines:"]
        for engine in self.engines:
            if engine.installed:
                out.append(f"  {engine.display_name:12s} {engine.version or '?'}  {engine.detail}")
            else:
                out.append(f"  {engine.display_name:12s} not installed: {engine.install_hint}")
        out += ["", "GPUs:"]
        out += [f"  {gpu.describe()}" for gpu in self.gpus] or ["  none: engines run on the CPU"]
        out += ["", f"cache:  {self.cache_dir}  ({_size(sum(self.cache_sizes_mb.values()))})"]
        out += [f"  {name:12s} {_size(mb)}" for name, mb in sorted(self.cache_sizes_mb.items())]
        out += [f"state:  {self.state_dir}", f"run:    {self.run_dir}  (sockets and temp files of running servers)",
                f"links:  {self.links}: {self.link_template}"]
        out.append(f"servers: {', '.join(self.servers) if self.servers else 'none running'}")
        if self.problems:
            out += ["", "problems:"] + [f"  {problem}" for problem in self.problems]
        return out


def _size(megabytes: float) -> str:
    return f"{megabytes / 1024:.1f} GiB" if megabytes >= 1024 else f"{megabytes:.0f} MB"


def folder_mb(path: Path) -> float:
    """Bytes on disk under ``path`` in MB (symlinks not followed; unreadable entries skipped)."""
    total, stack = 0, [path]
    while stack:
        try:
            entries = list(os.scandir(stack.pop()))
        except OSError:
            continue
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(Path(entry.path))
                elif entry.is_file(follow_symlinks=False):
                    total += entry.stat(follow_symlinks=False).st_blocks * 512
            except OSError:
                continue
    return total / 2**20


def engine_statuses() -> list[EngineStatus]:
    """Each registered engine: installed or not, its version and where it runs from, or how to install it."""
    from .engines import engine_names, get_engine

    statuses = []
    for name in engine_names():
        engine = get_engine(name)
        try:
            found = engine.available()
        except Exception as exc:  # noqa: BLE001 - an engine that cannot be checked is reported, not fatal
            statuses.append(EngineStatus(name, engine.display_name, False, None, "", f"could not check: {exc}"))
            continue
        statuses.append(EngineStatus(name, engine.display_name, bool(found), found.version, found.detail,
                                     found.install_hint))
    return statuses


def report(*, sizes: bool = True) -> Report:
    """Look at this machine (a few seconds with ``sizes``: the cache folders are walked)."""
    from . import links, paths

    problems: list[str] = []
    cache = paths.cache_dir()
    cache_sizes = {child.name: folder_mb(child) for child in sorted(cache.iterdir()) if child.is_dir()} \
        if sizes else {}
    try:
        state = str(paths.state_dir())
    except Exception as exc:  # noqa: BLE001 - reported as a problem with its fix
        state, problems = "(unusable)", [*problems, str(exc)]
    try:
        run = str(paths.run_root())
    except Exception as exc:  # noqa: BLE001
        run, problems = "(unusable)", [*problems, str(exc)]
    servers = _servers(problems)
    try:
        template = links.link_template()
    except Exception as exc:  # noqa: BLE001 - a bad SERVEKIT_PUBLIC_URL
        template, problems = "(unusable)", [*problems, str(exc)]
    return Report(
        python=sys.executable, python_version=platform.python_version(),
        platform=f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs", servekit_version=__version__,
        engines=engine_statuses(), gpus=list(gpus()), cache_dir=str(cache), cache_sizes_mb=cache_sizes,
        state_dir=state, run_dir=run, links=links.where().note, link_template=template, servers=servers,
        problems=problems,
    )


def _servers(problems: list[str]) -> list[str]:
    from .server import running

    try:
        return [f"{s.name} ({s.engine.display_name}, {s.state})" for s in running()]
    except Exception as exc:  # noqa: BLE001
        problems.append(f"could not list servers: {exc}")
        return []


__all__ = ["EngineStatus", "Report", "engine_statuses", "folder_mb", "report"]
