"""100 start/stop cycles in one process: no growth in open files, threads or child processes; every port freed."""

from __future__ import annotations

import threading
import time

import psutil
import pytest
from faultkit import servekit_processes

import servekit
from servekit.server import port_is_free

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.usefixtures("llama_server_ready")]

CYCLES = 100


def census() -> tuple[int, int, int]:
    me = psutil.Process()
    return me.num_fds(), threading.active_count(), len(me.children(recursive=True))


def test_hundred_cycles_leak_nothing():
    servekit.serve("llamacpp", "demo-tiny").stop()  # warm-up: the watchdog starts once per process
    before = census()
    ports = []
    started = time.monotonic()
    for _ in range(CYCLES):
        server = servekit.serve("llamacpp", "demo-tiny", name="cycle")
        ports.append(server.port)
        server.stop()
    per_cycle = (time.monotonic() - started) / CYCLES
    after = census()
    print(f"{CYCLES} start/stop cycles: {per_cycle * 1000:.0f} ms a cycle; fds/threads/children {before} -> {after}")
    assert after == before, f"(fds, threads, children) grew: {before} -> {after}"
    assert all(port_is_free("127.0.0.1", port) for port in set(ports))
    assert servekit.running() == [] and not servekit_processes()
