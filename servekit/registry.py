"""On-disk record of running servers: one JSON file (mode 0600) per server in the state directory.

Any process of the same user can list, adopt and stop servers from these records — also after the
process that started them (a notebook kernel, say) was restarted or killed.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil

from .paths import state_dir


@dataclass
class ServerRecord:
    """Everything needed to find, talk to and stop one server from any process."""

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

    @property
    def record_path(self) -> Path:
        return records_dir() / f"{self.id}.json"


def records_dir() -> Path:
    path = state_dir() / "servers"
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def save(record: ServerRecord) -> None:
    """Write the record atomically with mode 0600 (it holds the API key)."""
    target = record.record_path
    tmp = target.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(asdict(record), handle, indent=1)
    os.replace(tmp, target)


def load_all() -> list[ServerRecord]:
    """Every record on disk, live or not, oldest first; unreadable files are skipped."""
    records = []
    for path in records_dir().glob("*.json"):
        try:
            records.append(ServerRecord(**json.loads(path.read_text(encoding="utf-8"))))
        except (OSError, ValueError, TypeError):
            continue
    return sorted(records, key=lambda r: r.started_at)


def discard(record: ServerRecord) -> None:
    """Forget a server: remove its record and its private run directory (the log file stays)."""
    record.record_path.unlink(missing_ok=True)
    shutil.rmtree(record.run_dir, ignore_errors=True)


def same_process(pid: int | None, create_time: float | None) -> psutil.Process | None:
    """The live process with this pid *and* start time (a reused pid is not a match)."""
    if pid is None:
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


def group_members(record: ServerRecord) -> list[psutil.Process]:
    """Live processes of the server: its process group plus every descendant that left the group."""
    members: dict[int, psutil.Process] = {}
    for proc in psutil.process_iter(["create_time"]):
        try:
            if os.getpgid(proc.pid) == record.pgid and proc.info["create_time"] >= record.create_time - 0.5:
                members[proc.pid] = proc
        except (OSError, psutil.Error):
            continue
    leader = same_process(record.pid, record.create_time)
    roots = list(members.values()) + ([leader] if leader else [])
    for root in roots:
        try:
            for child in root.children(recursive=True):
                members.setdefault(child.pid, child)
        except psutil.Error:
            continue
    return [p for p in members.values() if _alive(p)]


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def is_live(record: ServerRecord) -> bool:
    """True while any process of the server is running."""
    return same_process(record.pid, record.create_time) is not None or bool(group_members(record))


def owner_alive(record: ServerRecord) -> bool:
    """False when the process that started the server is gone (the server is an orphan)."""
    return record.owner_pid is None or same_process(record.owner_pid, record.owner_create_time) is not None


def live_records() -> list[ServerRecord]:
    """Records of running servers; records of dead ones are pruned."""
    live = []
    for record in load_all():
        if is_live(record):
            live.append(record)
        else:
            discard(record)
    return live
