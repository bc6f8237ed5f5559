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

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("llama_server_ready")]
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
        assert "main: " in server.logs(200) or server.logs(5)  # the log file holds the server's output
    finally:
        server.stop()
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
server = servekit.serve("llamacpp", "demo-tiny", name="orphaned")
print(json.dumps({"pid": server.pid, "port": server.port}), flush=True)
sys.stdin.read()  # wait to be killed
"""

INSPECT = """
import json, servekit
print(json.dumps([{"name": s.name, "orphan": s.orphan, "status": s.status, "pid": s.pid} for s in servekit.running()]))
print(json.dumps(servekit.stop_all()))
"""


def test_orphan_of_a_killed_process_is_listed_and_stopped_from_another_process():
    child = subprocess.Popen([sys.executable, "-c", CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    info = json.loads(child.stdout.readline())
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert psutil.Process(info["pid"]).is_running()  # the server outlives its owner
    out = subprocess.run([sys.executable, "-c", INSPECT], capture_output=True, text=True, check=True).stdout.splitlines()
    listed, stopped = json.loads(out[0]), json.loads(out[1])
    assert listed == [{"name": "orphaned", "orphan": True, "status": "orphan", "pid": info["pid"]}]
    assert stopped == ["orphaned"]
    assert server_processes_gone(info["pid"])
    assert servekit.server.port_is_free("127.0.0.1", info["port"])


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
