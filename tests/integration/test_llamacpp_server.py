"""A real llama-server on 127.0.0.1 with the tiny demo model: lifecycle, clients, errors."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import psutil
import pytest

import servekit
from servekit.errors import ModelNotFound, PortInUse, ServerStartError

# every test here runs on the compiled llama-server and on the prebuilt server (xllamacpp)
pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("llama_server_ready", "llama_build")]
NO_EOS = {"ignore_eos": True}  # random weights often emit EOS at once


def server_processes_gone(pid: int) -> bool:
    try:
        proc = psutil.Process(pid)
        return proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_chat_streaming_and_clean_stop():
    server = servekit.serve("llamacpp", "demo-tiny", parallel=2)
    try:
        assert server.url.startswith("http://127.0.0.1:")
        assert server.api_key and server.api_key not in repr(server) and server.api_key not in server._repr_html_()
        client = server.client()
        reply = client.chat.completions.create(
            model=server.model, messages=[{"role": "user", "content": "hello"}], max_tokens=8, extra_body=NO_EOS
        )
        assert reply.usage.completion_tokens == 8
        assert reply.choices[0].message.content
        chunks = list(client.chat.completions.create(
            model=server.model, messages=[{"role": "user", "content": "hello"}], max_tokens=8, stream=True,
            extra_body=NO_EOS,
        ))
        assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) >= 2  # really streamed
        children = psutil.Process(server.pid).children(recursive=True)
        log = server.logs(500)
        assert "# servekit: " in log.splitlines()[0]  # servekit's header line …
        assert "listening on" in log and "llama" in log  # … then llama-server's own output
        assert server.command and str(server.port) in server.command and server.api_key not in server.command
        assert server.command_text().startswith(server.command[0]) and f"--port {server.port}" in server.command_text()
        held = server.memory_mb()
        assert 1 < held < psutil.virtual_memory().total / 1e6  # the engine's own memory, in MB
    finally:
        server.stop()
    assert server.memory_mb() == 0.0  # nothing left to hold any
    assert servekit.server.port_is_free("127.0.0.1", server.port)
    assert server_processes_gone(server.pid)
    assert all(server_processes_gone(c.pid) for c in children)
    assert servekit.running() == []


def test_api_key_is_required():
    import httpx

    with servekit.serve("llamacpp", "demo-tiny") as server:
        assert httpx.get(server.base_url + "/models").status_code == 401
        assert httpx.get(server.base_url + "/models", headers=server.headers()).status_code == 200


def test_async_client_and_metrics():
    import asyncio

    with servekit.serve("llamacpp", "demo-tiny") as server:
        before = server.metrics().get("generation_tokens_total", 0.0)

        async def one() -> int:
            reply = await server.async_client().chat.completions.create(
                model=server.model, messages=[{"role": "user", "content": "hi"}], max_tokens=5, extra_body=NO_EOS
            )
            return reply.usage.completion_tokens

        assert asyncio.run(one()) == 5
        assert server.metrics()["generation_tokens_total"] == before + 5


def test_corrupt_model_fails_fast_with_llama_cpp_error(tmp_path):
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + os.urandom(4096))
    started = time.monotonic()
    with pytest.raises(ServerStartError) as info:
        servekit.serve("llamacpp", str(bad), timeout=60)
    elapsed = time.monotonic() - started
    message = str(info.value)
    assert "exited with code" in message
    assert "gguf_init_from_file" in message or "failed to load model" in message  # llama.cpp's own words
    assert elapsed < 3, f"took {elapsed:.1f} s: the death of the process must be noticed at once"
    assert servekit.running() == []


def test_busy_port_gives_clear_error_and_starts_nothing():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        with pytest.raises(PortInUse, match=f"Port {port}.*already in use.*free one"):
            servekit.serve("llamacpp", "demo-tiny", port=port)
    assert servekit.running() == []


def test_missing_model_raises_before_start():
    with pytest.raises(ModelNotFound, match="neither a local GGUF"):
        servekit.serve("llamacpp", "./nowhere/model.gguf")


def test_bad_engine_flag_reports_llama_server_error():
    with pytest.raises(ServerStartError, match="invalid argument|unknown argument|error"):
        servekit.serve("llamacpp", "demo-tiny", extra_args=["--no-such-flag"], timeout=30)
    assert servekit.running() == []


CHILD = """
import json, sys, servekit
server = servekit.serve("llamacpp", "demo-tiny", name=sys.argv[1], detach=sys.argv[1] == "kept")
print(json.dumps({"pid": server.pid, "port": server.port}), flush=True)
sys.stdin.read()  # wait to be killed
"""


def start_in_child(name: str) -> tuple[subprocess.Popen, dict]:
    child = subprocess.Popen([sys.executable, "-c", CHILD, name], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True)
    return child, json.loads(child.stdout.readline())


def test_a_killed_owner_takes_its_server_along_and_a_detached_one_stays():
    owner, info = start_in_child("owned")
    keeper, kept = start_in_child("kept")
    for child in (owner, keeper):
        child.send_signal(signal.SIGKILL)
        child.wait()
    deadline = time.monotonic() + 10
    while not server_processes_gone(info["pid"]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server_processes_gone(info["pid"]), "the watchdog stops the server of a killed owner"
    assert servekit.server.port_is_free("127.0.0.1", info["port"])
    listed = [(s.name, s.state, s.detached) for s in servekit.running()]
    assert listed == [("kept", "ready", True)]
    assert servekit.stop_all() == ["kept"]
    assert server_processes_gone(kept["pid"])


def test_an_orphan_the_watchdog_missed_is_reaped_by_the_next_call():
    """If the watchdog is gone too (killed with its owner), the next servekit call stops the orphan."""
    owner, info = start_in_child("orphan")
    watchdogs = [p for p in psutil.process_iter(["cmdline"])
                 if "servekit._watchdog" in " ".join(p.info["cmdline"] or []) and str(owner.pid) in p.info["cmdline"]]
    assert len(watchdogs) == 1
    watchdogs[0].kill()
    owner.send_signal(signal.SIGKILL)
    owner.wait()
    assert psutil.Process(info["pid"]).is_running()
    out = subprocess.run([sys.executable, "-m", "servekit.cli", "ps"], capture_output=True, text=True, check=True).stdout
    assert "Stopped orphaned server(s) orphan" in out
    assert server_processes_gone(info["pid"]) and servekit.running() == []


def test_cli_serve_ps_stop():
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cli = [sys.executable, "-m", "servekit.cli"]
    serving = subprocess.Popen([*cli, "serve", "llamacpp", "demo-tiny", "--name", "cli-demo"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        lines = []
        for line in serving.stdout:
            lines.append(line)
            if "press Ctrl-C" in line:
                break
        assert any("base URL: http://127.0.0.1:" in line for line in lines), lines
        listed = json.loads(subprocess.run([*cli, "ps", "--json"], capture_output=True, text=True, check=True).stdout)
        assert [(s["name"], s["engine"], s["status"]) for s in listed] == [("cli-demo", "llamacpp", "ready")]
        assert listed[0]["api_key"].endswith("…")
        pid = listed[0]["pid"]
        stopped = subprocess.run([*cli, "stop", "--all"], capture_output=True, text=True, check=True).stdout
        assert "cli-demo" in stopped
        assert serving.wait(timeout=30) == 0  # the foreground `serve` notices and exits
        assert server_processes_gone(pid)
    finally:
        if serving.poll() is None:
            serving.kill()
            serving.wait()


def test_check_runs_llama_servers_own_parser_and_builds_nothing(tmp_path):
    cli = [sys.executable, "-m", "servekit.cli", "check", "llamacpp"]
    bad = subprocess.run([*cli, "demo-tiny", "--", "--no-such-flag"], capture_output=True, text=True)
    assert bad.returncode == 2 and "llama-server rejects this command line: invalid argument: --no-such-flag" in bad.stderr
    good = subprocess.run([*cli, "demo-tiny", "--parallel", "2", "--", "--seed", "3"], capture_output=True, text=True)
    assert good.returncode == 0 and "llama-server's parser accepts" in good.stdout and "--seed 3" in good.stdout
    # the trained demo model is not built in an empty cache: check must not build it (minutes), only name its path
    env = {**os.environ, "SERVEKIT_CACHE_DIR": str(tmp_path / "cache"),
           "SERVEKIT_LLAMA_SERVER": str(servekit.get_engine("llamacpp").available().detail)}
    started = time.monotonic()
    quick = subprocess.run([*cli, "demo:Q4_K_M"], capture_output=True, text=True, env=env)
    assert quick.returncode == 0, quick.stderr
    assert time.monotonic() - started < 30 and not list((tmp_path / "cache").glob("demo/trained-*/gguf.json"))
