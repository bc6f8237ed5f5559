"""attach(): a server another process started is watched like one of servekit's own, and never stopped."""

from __future__ import annotations

import subprocess
import sys

import pytest

import servekit
from servekit import bench
from servekit.errors import KeyRejected

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("llama_server_ready")]
CLI = [sys.executable, "-m", "servekit.cli"]


@pytest.fixture
def other_process_server():
    """A llama-server started (detached) by another process: servekit's CLI."""
    subprocess.run([*CLI, "serve", "llamacpp", "demo-tiny", "--name", "elsewhere", "--detach"], check=True,
                   capture_output=True)
    key = subprocess.run([*CLI, "key", "elsewhere"], capture_output=True, text=True, check=True).stdout.strip()
    url = next(s.url for s in servekit.running() if s.name == "elsewhere")
    yield url, key
    subprocess.run([*CLI, "stop", "elsewhere"], check=True, capture_output=True)


def test_attach_recognises_llama_cpp_and_measures_it(other_process_server):
    url, key = other_process_server
    with pytest.raises(KeyRejected, match="needs an API key"):
        servekit.attach(url)
    server = servekit.attach(url + "/v1", api_key=key, name="watched")
    assert server.engine.name == "llamacpp" and server.model == "demo-tiny" and server.attached
    reply = server.client().completions.create(model=server.model, prompt="hi", max_tokens=4,
                                               extra_body={"ignore_eos": True})
    assert reply.usage.completion_tokens == 4
    assert server.metrics()["generation_tokens_total"] >= 4
    run = bench.run(server, concurrency=2, requests=4, input_tokens=16, output_tokens=8, progress=False)
    assert run.summary["completed"] == 4 and run.summary["failed"] == 0, run.summary
    assert run.summary["total_output_tokens"] == 32, run.summary
    history = server.metrics_history()
    assert len(history) >= 1 and "generation_tokens_per_s" in history.columns
    assert "watched" in [s.name for s in servekit.running()] and server.state == "ready"
    server.stop()  # forgets the handle; the server itself keeps running
    assert "watched" not in [s.name for s in servekit.running()]
    assert servekit.get_server("elsewhere").ping()


def test_attach_by_engine_name_and_through_the_magic(other_process_server, ipython):
    from IPython.utils.capture import capture_output

    url, key = other_process_server
    with capture_output() as out:
        server = ipython.run_line_magic("serve", f"attach {url} --api-key {key} --name magic-attached")
    assert "Attached magic-attached: llama-server serving 'demo-tiny'" in out.stdout
    with capture_output() as chatted:
        ipython.run_cell_magic("chat", "magic-attached --max-tokens 4", "hello")
    assert chatted.stdout.strip()
    assert servekit.attach(url, api_key=key, engine="llama.cpp").engine.name == "llamacpp"
    for s in servekit.running():
        if s.attached:
            s.stop()
