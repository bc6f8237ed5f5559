"""The API key: never on a command line, never whole in what servekit shows; files 0600 in 0700 folders;
a stock client gets what it needs from ``server.env()``; a 401 says which key the server expects."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import warnings

import httpx
import openai
import psutil
import pytest
from faultkit import servekit_processes

import servekit
from servekit import registry
from servekit.errors import KeyRejected
from servekit.server import ExposedServerWarning

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("llama_server_ready")]


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_the_key_is_on_no_command_line_and_every_file_is_private():
    with servekit.serve("llamacpp", "demo-tiny") as server:
        key = server.api_key
        for proc in servekit_processes():
            assert key not in " ".join(proc.cmdline())
        assert key not in " ".join(server.record.command) and key not in server.logs(500)
        assert key not in repr(server) and key not in server._repr_html_()
        for path in (server.record.record_path, server.log_path):
            assert mode(path) == 0o600, path
        for folder in (registry.state_dir(), registry.records_dir(), server.log_path.parent, server.record.run_dir):
            assert mode(folder) == 0o700, folder
        listed = subprocess.run([sys.executable, "-m", "servekit.cli", "ps"], capture_output=True, text=True,
                                check=True).stdout
        assert server.name in listed and key not in listed
        printed = subprocess.run([sys.executable, "-m", "servekit.cli", "key", server.name], capture_output=True,
                                 text=True, check=True).stdout
        assert printed.strip() == key  # servekit key NAME: the one place that prints it, for scripts


def test_a_stock_client_connects_through_env_and_a_wrong_key_is_explained(monkeypatch):
    with servekit.serve("llamacpp", "demo-tiny", name="keyed") as server:
        assert httpx.get(server.base_url + "/models").status_code == 401
        assert httpx.get(server.base_url + "/models", headers={"Authorization": "Bearer EMPTY"}).status_code == 401
        for name, value in server.env().items():
            monkeypatch.setenv(name, value)
        stock = openai.OpenAI()  # reads OPENAI_BASE_URL and OPENAI_API_KEY, as any example script does
        assert [m.id for m in stock.models.list()] == [server.model]
        wrong = server.client(api_key="EMPTY")
        with pytest.raises(KeyRejected, match=r"expects the key sk-.*servekit key keyed") as info:
            wrong.models.list()
        assert isinstance(info.value, openai.AuthenticationError)  # still catchable as before
        assert server.api_key not in str(info.value)


def test_no_key_on_loopback_and_a_warning_off_it():
    with servekit.serve("llamacpp", "demo-tiny", api_key="") as server:
        assert server.api_key is None
        assert httpx.get(server.base_url + "/models").status_code == 200
    with pytest.warns(ExposedServerWarning, match="reachable from other machines"):
        exposed = servekit.serve("llamacpp", "demo-tiny", host="0.0.0.0")
    with exposed:
        bound = {c.laddr.ip for c in psutil.Process(exposed.pid).net_connections("tcp") if c.status == "LISTEN"}
        assert bound == {"0.0.0.0"}
        assert httpx.get(f"http://127.0.0.1:{exposed.port}/v1/models").status_code == 401
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with servekit.serve("llamacpp", "demo-tiny") as server:  # the default: loopback, no warning
            bound = {c.laddr.ip for c in psutil.Process(server.pid).net_connections("tcp") if c.status == "LISTEN"}
            assert bound == {"127.0.0.1"}


def test_readiness_proves_identity_and_a_lost_port_race_moves_on():
    """Something else answers on the port servekit picked (as when another program grabs it meanwhile):
    servekit's engine cannot bind it, and servekit starts it on another free port."""
    with servekit.serve("llamacpp", "demo-tiny", name="squatter") as squatter:
        import servekit.server as srv

        real_free_port = srv.free_port
        calls = iter([squatter.port])
        srv.free_port = lambda host, avoid=(): next(calls, None) or real_free_port(host, avoid)
        try:
            with servekit.serve("llamacpp", "demo-tiny", name="mover") as mover:
                assert mover.port != squatter.port and mover.ping()
        finally:
            srv.free_port = real_free_port
