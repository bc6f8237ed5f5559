"""The watchdog: stops a process's servers when that process ends — also when it is killed with SIGKILL.

``python -m servekit._watchdog OWNER_PID OWNER_CREATE_TIME`` is started (once per owner process, in a
session of its own so a terminal's Ctrl-C or a kernel's process-group kill does not reach it) with a
pipe on its stdin whose only writer is the owner. The owner writes ``watch ID`` before it starts a
server and ``forget ID`` once the server is stopped or detached. The watchdog acts when the pipe
reaches end-of-file — the kernel closes it when the owner dies, however it dies — or when the owner's
pid (with its start time) is gone, checked every second (a forked child may hold the pipe open).
It then stops every watched server at once (SIGTERM, then SIGKILL after a bound) by the identity
marker in the servers' environment (or their run directory and session), removes their records, and exits.

It runs no code of the owner's and needs nothing from it: the guarantee holds for SIGKILL, an
out-of-memory kill, a segfault or a hard kernel restart. Its cost: one small Python process per owner
that has started servers (~15 MB RSS, no CPU while it waits).
"""

from __future__ import annotations

import os
import select
import signal
import sys

OWNER_POLL_SECONDS = 1.0
STOP_TIMEOUT = 10.0


def _owner_alive(pid: int, create_time: float) -> bool:
    import psutil

    try:
        proc = psutil.Process(pid)
        return abs(proc.create_time() - create_time) <= 0.5 and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def watch(owner_pid: int, owner_create_time: float) -> set[str]:
    """Read commands until the owner is gone; return the ids still watched then."""
    watched: set[str] = set()
    stdin = sys.stdin.buffer
    buffer = b""
    while True:
        ready, _, _ = select.select([stdin], [], [], OWNER_POLL_SECONDS)
        if not ready:
            if not _owner_alive(owner_pid, owner_create_time):
                return watched
            continue
        chunk = os.read(stdin.fileno(), 4096)
        if not chunk:
            return watched
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            verb, _, server_id = line.decode(errors="replace").strip().partition(" ")
            if verb == "watch" and server_id:
                watched.add(server_id)
            elif verb == "forget":
                watched.discard(server_id)


def stop_servers(server_ids: set[str]) -> None:
    """Stop the servers' processes together, then forget their records."""
    from . import procs, registry

    if not server_ids:
        return
    records = [r for r in registry.load_all() if r.id in server_ids]
    known = {r.id for r in records}
    procs.terminate([*records, *(server_ids - known)], timeout=STOP_TIMEOUT)
    for record in records:
        registry.discard(record)


def main(argv: list[str]) -> int:
    for sig in (signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)  # a terminal's Ctrl-C or hang-up is for the owner, not for us
    owner_pid, owner_create_time = int(argv[0]), float(argv[1])
    watched = watch(owner_pid, owner_create_time)
    if watched:
        print(f"servekit watchdog: owner {owner_pid} is gone; stopping {', '.join(sorted(watched))}",
              file=sys.stderr, flush=True)
        stop_servers(watched)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
