"""The processes of a server, found by identity, and stopped together.

Every engine process servekit starts carries ``SERVEKIT_SERVER_ID=<server id>`` in its environment,
and every process it forks or spawns inherits it (vLLM's EngineCore and workers, SGLang's scheduler).
A process belongs to a server only when it runs as this user *and* carries that marker — a reused
pid or process group of some unrelated program never does, so servekit never signals one.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterable

import psutil

MARKER = "SERVEKIT_SERVER_ID"
_POLL = 0.02


def members(server_ids: Iterable[str]) -> dict[str, list[psutil.Process]]:
    """Live processes of each server (one scan of this user's processes); zombies count as gone."""
    wanted = set(server_ids)
    found: dict[str, list[psutil.Process]] = {sid: [] for sid in wanted}
    if not wanted:
        return found
    uid = os.getuid()
    for proc in psutil.process_iter(["uids"]):
        try:
            uids = proc.info["uids"]
            if uids is None or uids.real != uid or proc.pid == os.getpid():
                continue
            sid = proc.environ().get(MARKER)
            if sid in wanted and not _gone(proc):
                found[sid].append(proc)
        except (psutil.Error, OSError):
            continue
    return found


def members_of(server_id: str) -> list[psutil.Process]:
    """Live processes of one server."""
    return members([server_id])[server_id]


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


def terminate(server_ids: Iterable[str], timeout: float = 15.0, kill_wait: float = 5.0) -> None:
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
