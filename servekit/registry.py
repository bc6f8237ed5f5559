"""On-disk record of servers: one JSON file (mode 0600, in a 0700 folder) per server in the state directory.

Any process of the same user can list, adopt and stop servers from these records — also after the
process that started them (a notebook kernel, say) was restarted or killed. Records written by
another user, or that do not have the expected fields and types, are ignored, never trusted.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import stat
import time
import types
import typing
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil

from . import procs
from .paths import private_dir, state_dir, state_dir_error

STATES = ("starting", "ready", "stopping", "stopped", "crashed")
LOCK_TIMEOUT = 30.0


@dataclass
class ServerRecord:
    """Everything needed to find, talk to and stop one server from any process.

    ``id`` is also the identity marker in the environment of each of the server's processes
    (:data:`servekit.procs.MARKER`). ``pid`` is 0 while the name is reserved and nothing runs yet.
    ``exit_code``: how the engine ended when it crashed (>= 0 an exit code, < 0 minus the signal).
    """

    id: str
    name: str
    engine: str
    model: str
    served_name: str
    host: str
    port: int
    url: str
    pid: int
    pgid: int
    create_time: float
    log_path: str
    run_dir: str
    api_key: str | None = None
    owner_pid: int | None = None
    owner_create_time: float | None = None
    started_at: float = 0.0
    command: list[str] = field(default_factory=list)
    state: str = "starting"
    exit_code: int | None = None
    ended_at: float | None = None
    source_model: str = ""  # the model as the user named it ("demo:Q4_K_M"); ``model`` is what the engine loads

    @property
    def record_path(self) -> Path:
        return records_dir() / f"{self.id}.json"


def records_dir() -> Path:
    try:
        return private_dir(state_dir() / "servers")
    except OSError as exc:
        raise state_dir_error(exc) from exc


def save(record: ServerRecord) -> None:
    """Write the record atomically with mode 0600 (it holds the API key)."""
    target = record.record_path
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(asdict(record), handle, indent=1)
        os.replace(tmp, target)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise state_dir_error(exc) from exc


def update(record: ServerRecord, **changes: Any) -> None:
    """Change fields of a record and write it — unless it was discarded meanwhile (never resurrect one)."""
    for key, value in changes.items():
        setattr(record, key, value)
    if record.record_path.exists():
        save(record)


def _field_types() -> dict[str, Any]:
    hints = typing.get_type_hints(ServerRecord)
    return {f.name: hints[f.name] for f in dataclasses.fields(ServerRecord)}


def _matches(value: Any, hint: Any) -> bool:
    """True when a JSON value fits a field's type hint (bools are not numbers here)."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return any(_matches(value, arg) for arg in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if typing.get_origin(hint) is list:
        return isinstance(value, list) and all(isinstance(v, str) for v in value)
    return isinstance(value, hint)


def parse_record(data: Any) -> ServerRecord | None:
    """A record from parsed JSON, or None when a field is missing or has the wrong type."""
    if not isinstance(data, dict):
        return None
    known = _field_types()
    defaults = {f.name for f in dataclasses.fields(ServerRecord)
                if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING}
    values = {}
    for name, hint in known.items():
        if name not in data:
            if name in defaults:
                continue
            return None
        if not _matches(data[name], hint):
            return None
        values[name] = data[name]
    record = ServerRecord(**values)
    if record.state not in STATES or not record.id or "/" in record.id or record.id.startswith("."):
        return None
    return record


def _read(path: Path) -> ServerRecord | None:
    """The record in ``path`` — only when this user wrote it, as a plain file, with valid content."""
    try:
        info = path.lstat()
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.getuid():
            return None
        return parse_record(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError):
        return None


def load_all() -> list[ServerRecord]:
    """Every valid record on disk, in any state, oldest first; others are skipped."""
    try:
        paths = list(records_dir().glob("*.json"))
    except OSError as exc:
        raise state_dir_error(exc) from exc
    records = [r for r in map(_read, paths) if r is not None and r.record_path.name == f"{r.id}.json"]
    return sorted(records, key=lambda r: r.started_at)


def load(record_id: str) -> ServerRecord | None:
    """The current record with this id, or None when it is gone."""
    return _read(records_dir() / f"{record_id}.json")


def discard(record: ServerRecord) -> None:
    """Forget a server: remove its record and its private run directory (the log file stays)."""
    record.record_path.unlink(missing_ok=True)
    if record.run_dir:
        shutil.rmtree(record.run_dir, ignore_errors=True)


@contextmanager
def lock() -> Iterator[None]:
    """Serialise name reservations across every process of this user (an flock on the state directory)."""
    from filelock import FileLock, Timeout

    path = state_dir() / "registry.lock"
    try:
        with FileLock(str(path), timeout=LOCK_TIMEOUT, mode=0o600):
            yield
    except Timeout as exc:
        raise state_dir_error(OSError(f"another process holds {path} for over {LOCK_TIMEOUT:.0f} s")) from exc
    except OSError as exc:
        raise state_dir_error(exc) from exc


def same_process(pid: int | None, create_time: float | None) -> psutil.Process | None:
    """The live process with this pid *and* start time (a reused pid is not a match)."""
    if not pid:
        return None
    try:
        proc = psutil.Process(pid)
        if create_time is not None and abs(proc.create_time() - create_time) > 0.5:
            return None
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        return proc
    except psutil.Error:
        return None


def owner_alive(record: ServerRecord) -> bool:
    """False when the process that started a non-detached server is gone (the server is an orphan)."""
    return record.owner_pid is None or same_process(record.owner_pid, record.owner_create_time) is not None


def observed_state(record: ServerRecord, alive: bool) -> str:
    """The record's state, corrected by what the processes show: a server whose processes are all gone
    without being stopped has crashed; one stopping has stopped. ``alive``: any of its processes runs."""
    if alive or record.state in ("stopped", "crashed"):
        return record.state
    if record.state == "stopping":
        return "stopped"
    if record.state == "starting" and record.pid == 0 and owner_alive(record):
        return "starting"  # the name is reserved; the engine is about to be started
    return "crashed"


def mark_crashed(record: ServerRecord, exit_code: int | None) -> None:
    """Record that a server's process ended without being stopped."""
    update(record, state="crashed", exit_code=exit_code, ended_at=time.time())


def is_live(record: ServerRecord) -> bool:
    """True while any process of the server runs."""
    return bool(procs.members_of(record))


def prune_logs(keep: int = 200, max_age_days: float = 14.0, protected: set[str] | None = None) -> int:
    """Delete old server logs: beyond the ``keep`` newest, or older than ``max_age_days``; never a
    log of a listed server. Returns how many were removed."""
    folder = state_dir() / "logs"
    if not folder.is_dir():
        return 0
    protected = protected or set()
    logs = sorted(folder.glob("*.log"), key=lambda p: p.stat().st_mtime, reverse=True)
    cutoff = time.time() - max_age_days * 86400
    removed = 0
    for index, path in enumerate(logs):
        if str(path) in protected:
            continue
        try:
            if index >= keep or path.stat().st_mtime < cutoff:
                path.unlink()
                removed += 1
        except OSError:
            continue
    return removed
