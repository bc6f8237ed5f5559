"""An engine killed while serving: state crashed with the signal, a clear error on the next request,
listed (``%servers``, ``servekit ps``) with its log readable until ``%stop`` clears it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
from faultkit import servekit_processes, wait_until

import servekit
from servekit.errors import ServerCrashed

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("llama_server_ready")]


def test_sigkill_while_serving_is_a_crash_with_its_signal(ipython):
    from IPython.utils.capture import capture_output

    with capture_output():
        server = ipython.run_line_magic("serve", "llamacpp demo-tiny --name crashy --quiet")
    client = server.client(max_retries=0)
    client.completions.create(model=server.model, prompt="hi", max_tokens=2)
    os.kill(server.pid, signal.SIGKILL)
    wait_until(lambda: server.state == "crashed", timeout=5)
    assert server.exit_code == -signal.SIGKILL and server.state_text == "crashed (killed by SIGKILL)"

    with pytest.raises(ServerCrashed, match=r"(?s)crashed \(killed by SIGKILL\).*%stop crashy"):
        client.completions.create(model=server.model, prompt="hi", max_tokens=2)

    table = repr(ipython.run_line_magic("servers", ""))
    assert "crashy" in table and "crashed (killed by SIGKILL)" in table
    listed = json.loads(subprocess.run([sys.executable, "-m", "servekit.cli", "ps", "--json"], capture_output=True,
                                       text=True, check=True).stdout)
    assert [(s["name"], s["state"], s["exit_code"]) for s in listed] == [("crashy", "crashed (killed by SIGKILL)", -9)]

    with capture_output() as logged:
        ipython.run_line_magic("logs", "crashy -n 5")
    assert logged.stdout.strip(), "the crashed server's log stays readable"

    with capture_output() as stopped:
        ipython.run_line_magic("stop", "crashy")
    assert "Stopped: crashy" in stopped.stdout
    assert servekit.running() == [] and not servekit_processes()
