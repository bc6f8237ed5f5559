"""vLLM on the CPU (slow to start, four processes): an interrupt during ``wait_ready`` and a killed kernel
both leave nothing behind — the EngineCore child included."""

from __future__ import annotations

import json
import time

import pytest
from faultkit import servekit_processes, wait_until

import servekit
from servekit.engines import get_engine
from servekit.server import port_is_free

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module", autouse=True)
def vllm_installed():
    engine = get_engine("vllm")
    engine.install(progress=print)
    assert engine.available()


def test_interrupt_while_vllm_starts_leaves_nothing(kernel):
    cell = kernel.start("%serve vllm demo --name slow --quiet")
    wait_until(lambda: len(servekit_processes()) >= 2, timeout=300)  # the API server has spawned EngineCore
    kernel.manager.interrupt_kernel()
    out, errors = kernel.collect(cell, timeout=60)
    assert errors and errors[0]["ename"] == "KeyboardInterrupt"
    wait_until(lambda: not servekit_processes(), timeout=10)
    out, errors = kernel.run("import servekit; print(len(servekit.running()))")
    assert out.strip() == "0" and servekit.running() == []


def test_killed_kernel_takes_every_vllm_process_with_it(kernel):
    out, errors = kernel.run("%serve vllm demo --name doomed --quiet -- --enforce-eager", timeout=900)  # no compile
    assert not errors, errors
    out, _ = kernel.run("import json, servekit; s = servekit.get_server('doomed'); "
                        "print(json.dumps({'port': s.port}))")
    port = json.loads(out.strip().splitlines()[-1])["port"]
    names = {p.name() for p in servekit_processes()}
    assert len(servekit_processes()) >= 2, names  # API server, EngineCore (and a resource tracker on some machines)
    killed = time.monotonic()
    kernel.manager.restart_kernel(now=True)  # SIGKILL: no code of the kernel's runs
    seconds = wait_until(lambda: not servekit_processes() and port_is_free("127.0.0.1", port), timeout=30)
    print(f"vLLM: {len(names)} kinds of process gone {seconds:.1f} s after the kernel was killed "
          f"({time.monotonic() - killed:.1f} s incl. the restart)")
    assert servekit.running() == []
