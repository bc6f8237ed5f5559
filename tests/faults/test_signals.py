"""Signals at any phase: the foreground CLI stops its server on SIGINT, SIGTERM and SIGHUP; an interrupted
``%%chat`` closes its request and leaves the server ready."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from faultkit import servekit_processes, wait_until

import servekit
from servekit import registry

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("llama_server_ready")]

CLI = [sys.executable, "-m", "servekit.cli", "serve", "llamacpp", "demo-tiny", "--name", "fg"]


def _default_signals() -> None:
    """The CLI starts as from a terminal, whatever started pytest: a background job of a script (SIGINT
    ignored) or nohup (SIGHUP ignored) hands its children ignored signals, and the CLI keeps them ignored."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP], ids=lambda s: s.name)
@pytest.mark.parametrize("delay", [0.05, 0.15, 0.3, 0.5, "ready"])
def test_foreground_cli_stops_its_server_on_a_signal_at_any_phase(sig, delay):
    proc = subprocess.Popen(CLI, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"}, preexec_fn=_default_signals)
    try:
        if delay == "ready":
            for line in proc.stdout:
                if "press Ctrl-C" in line:
                    break
            assert [s.name for s in servekit.running()] == ["fg"]
        else:
            time.sleep(delay)
        proc.send_signal(sig)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    wait_until(lambda: not servekit_processes(), timeout=5)
    assert registry.load_all() == []


def test_under_nohup_a_hangup_leaves_the_server_serving():
    """Started with SIGHUP ignored (``nohup servekit serve``): a hangup changes nothing; SIGTERM still stops it."""
    def nohup() -> None:
        _default_signals()
        signal.signal(signal.SIGHUP, signal.SIG_IGN)

    proc = subprocess.Popen(CLI, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"}, preexec_fn=nohup)
    try:
        for line in proc.stdout:
            if "press Ctrl-C" in line:
                break
        proc.send_signal(signal.SIGHUP)
        time.sleep(1.0)
        assert proc.poll() is None and servekit.get_server("fg").ping()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    wait_until(lambda: not servekit_processes(), timeout=5)
    assert registry.load_all() == []


def test_interrupted_chat_closes_the_request_and_the_server_stays_ready(kernel):
    # --context-shift: the reply never fills the context (2048 tokens take ~0.5 s, a window a busy CI machine
    # missed); it streams until max_tokens (~1 min), so the interrupt lands while it streams
    out, errors = kernel.run("%serve llamacpp demo-tiny --name talk --parallel 1 --quiet -- --ignore-eos --context-shift")
    assert not errors, errors
    server = servekit.get_server("talk")
    chat = kernel.start("%%chat talk --max-tokens 200000\nTell me everything.")
    wait_until(lambda: server.metrics().get("requests_running", 0) == 1, timeout=30)
    time.sleep(0.5)
    kernel.manager.interrupt_kernel()
    out, errors = kernel.collect(chat, timeout=30)
    assert not errors, errors  # the magic handled the interrupt: no traceback
    assert "[interrupted: the request was closed; the server is still ready]" in out
    wait_until(lambda: server.metrics().get("requests_running", 0) == 0, timeout=10)  # llama-server saw it close
    out, errors = kernel.run("import servekit; print(servekit.get_server('talk').state)")
    assert out.strip() == "ready" and not errors
    done = server.client().completions.create(model=server.model, prompt="x", max_tokens=3)
    assert done.usage.completion_tokens == 3  # and it still serves
    kernel.run("%stop talk")


@pytest.mark.parametrize("where", ["after the record is written", "before the engine starts"])
def test_an_interrupt_at_the_reservation_leaves_no_record(where, monkeypatch):
    """The moments a signal test hits only now and then (0.15 s into `servekit serve`), made certain."""
    from servekit import server as server_module

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    if where == "after the record is written":
        monkeypatch.setattr(registry, "prune_logs", interrupt)
    else:
        monkeypatch.setattr(server_module, "_launch", interrupt)
    with pytest.raises(KeyboardInterrupt):
        servekit.serve("llamacpp", "demo-tiny", name="cut")
    assert registry.load_all() == [] and servekit.running() == []
    assert not servekit_processes()
