"""A kernel that restarts or is killed takes its servers with it; a --keep server survives both."""

from __future__ import annotations

import json

import pytest
from faultkit import Kernel, servekit_processes, wait_until

import servekit
from servekit.server import port_is_free

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("llama_server_ready")]

GONE_WITHIN = 10.0  # seconds: the watchdog polls once a second, llama-server stops in ~50 ms


def start_two(kernel: Kernel, tag: str) -> list[dict]:
    for name in (f"{tag}-a", f"{tag}-b"):
        out, errors = kernel.run(f"%serve llamacpp demo-tiny --name {name} --quiet")
        assert not errors, errors
    out, _ = kernel.run("import json, servekit; print(json.dumps([{'name': s.name, 'pid': s.pid, 'port': s.port} "
                        "for s in servekit.running() if not s.detached]))")
    return json.loads(out.strip().splitlines()[-1])


def assert_all_gone(servers: list[dict]) -> float:
    def gone() -> bool:
        live = {p.pid for p in servekit_processes()}
        return all(s["pid"] not in live and port_is_free("127.0.0.1", s["port"]) for s in servers)

    return wait_until(gone, GONE_WITHIN)


def test_graceful_restart_and_sigkill_stop_every_server_but_the_kept_one(kernel):
    kernel.run("%serve llamacpp demo-tiny --name kept --keep --quiet")
    kept = servekit.get_server("kept")

    servers = start_two(kernel, "graceful")
    kernel.manager.restart_kernel(now=False)  # shutdown request: the kernel's exit handler runs
    seconds = assert_all_gone(servers)
    print(f"graceful restart: 2 servers gone {seconds:.2f} s after the restart returned")

    kernel.client.wait_for_ready(timeout=60)
    kernel.run("%load_ext servekit")
    servers = start_two(kernel, "killed")
    kernel.manager.restart_kernel(now=True)  # SIGKILL to the kernel's process group: no exit handler runs
    seconds = assert_all_gone(servers)
    print(f"SIGKILL restart: 2 servers gone {seconds:.2f} s after the kill (the watchdog's doing)")

    assert kept.is_running() and kept.ping(), "a --keep server survives its kernel's restarts"
    kernel.client.wait_for_ready(timeout=60)
    kernel.run("%load_ext servekit")
    out, errors = kernel.run("%stop kept")
    assert not errors and "Stopped: kept" in out
    assert servekit.running() == []
    assert not servekit_processes()
