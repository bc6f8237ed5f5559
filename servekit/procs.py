"""The processes of a server, found by identity, and stopped together.

Every engine process servekit starts carries ``SERVEKIT_SERVER_ID=<server id>`` in its environment,
and every process it forks or spawns inherits it (vLLM's EngineCore and workers, SGLang's scheduler).
A process belongs to a server only when it runs as this user *and* carries that marker — a reused
pid or process group of some unrelated program never does, so servekit never signals one.

Some engine processes rewrite their title (vLLM's ``VLLM::EngineCore`` and workers, SGLang's scheduler
through ``setproctitle``), which overwrites the memory ``/proc/PID/environ`` shows, so the marker can
vanish from view. Those processes keep the working directory servekit started the engine in — the
server's private run directory (0700, named by the random part of the server id) — and its session
(the engine is started in a session of its own). So a process of this user whose working directory is
a server's run directory *and* whose session is the server's belongs to that server too, when the
caller passes the server's record (anything with ``id``, ``run_dir`` and ``pgid``). A shell someone
opened in the run directory has a session of its own and is never taken for the server.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterable
from typing import Protocol

import psutil

MARKER = "SERVEKIT_SERVER_ID"
_POLL = 0.02


class Identified(Protocol):
    """A server as procs needs it: its id (the marker's value) and its private run directory."""

    id: str
    run_dir: str
    pgid: int  # the engine's session and process group (its leader's pid); 0 before it starts


Target = str | Identified


def _ids_and_dirs(targets: Iterable[Target]) -> tuple[set[str], dict[str, tuple[str, int]]]:
    ids: set[str] = set()
    by_dir: dict[str, tuple[str, int]] = {}
    for target in targets:
        if isinstance(target, str):
            ids.add(target)
            continue
        ids.add(target.id)
        if target.run_dir and target.pgid > 0:
            by_dir[os.path.realpath(target.run_dir)] = (target.id, target.pgid)
    return ids, by_dir


def members(targets: Iterable[Target]) -> dict[str, list[psutil.Process]]:
    """Live processes of each server (one scan of this user's processes), keyed by server id; zombies count
    as gone. ``targets``: server ids (marker only), or records (marker, or working directory = run dir)."""
    wanted, by_dir = _ids_and_dirs(targets)
    found: dict[str, list[psutil.Process]] = {sid: [] for sid in wanted}
    if not wanted:
        return found
    uid = os.getuid()
    for proc in psutil.process_iter(["uids"]):
        try:
            uids = proc.info["uids"]
            if uids is None or uids.real != uid or proc.pid == os.getpid():
                continue
            sid = _server_of(proc, wanted, by_dir)
            if sid is not None and not _gone(proc):
                found[sid].append(proc)
        except (psutil.Error, OSError):
            continue
    return found


def _server_of(proc: psutil.Process, wanted: set[str], by_dir: dict[str, tuple[str, int]]) -> str | None:
    try:
        sid = proc.environ().get(MARKER)
    except (psutil.Error, OSError):
        sid = None
    if sid in wanted:
        return sid
    if not by_dir:
        return None
    try:
        sid, session = by_dir.get(proc.cwd(), (None, 0))
        return sid if sid is not None and os.getsid(proc.pid) == session else None
    except (psutil.Error, OSError):
        return None


def members_of(target: Target) -> list[psutil.Process]:
    """Live processes of one server."""
    sid = target if isinstance(target, str) else target.id
    return members([target])[sid]


def _gone(proc: psutil.Process) -> bool:
    """True once a process has exited — a zombie waiting to be reaped holds no port and no memory."""
    try:
        return not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE
    except psutil.Error:
        return True


def signal_all(procs: Iterable[psutil.Process], sig: int) -> None:
    for proc in procs:
        try:
            proc.send_signal(sig)
        except psutil.Error:
            pass


def wait_gone(procs: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Wait until every process has exited (zombies included); return those still alive at the deadline."""
    deadline = time.monotonic() + timeout
    alive = [p for p in procs if not _gone(p)]
    while alive and time.monotonic() < deadline:
        time.sleep(_POLL)
        alive = [p for p in alive if not _gone(p)]
    return alive


def terminate(server_ids: Iterable[Target], timeout: float = 15.0, kill_wait: float = 5.0) -> None:
    """Stop every process of these servers at once: SIGTERM, wait up to ``timeout``, SIGKILL what is left.

    Processes forked while this runs are found by a second scan and killed too. Bounded by
    ``timeout + 2 * kill_wait`` seconds, however many servers are given.
    """
    ids = list(server_ids)
    procs = [p for group in members(ids).values() for p in group]
    signal_all(procs, signal.SIGTERM)
    alive = wait_gone(procs, timeout)
    signal_all(alive, signal.SIGKILL)
    wait_gone(alive, kill_wait)
    late = [p for group in members(ids).values() for p in group]  # forked while we were stopping
    signal_all(late, signal.SIGKILL)
    wait_gone(late, kill_wait)
