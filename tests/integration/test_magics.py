"""%serve, %servers, %%chat, %logs and %stop in a real IPython shell against a real llama-server."""

from __future__ import annotations

import pytest
from IPython.utils.capture import capture_output

import servekit

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("llama_server_ready")]


@pytest.fixture()
def ip(ipython):
    return ipython


def test_serve_chat_servers_stop(ip):
    with capture_output() as started:
        server = ip.run_line_magic("serve", "llamacpp demo-tiny --name nb -- --seed 7")
    assert "nb is ready at http://127.0.0.1:" in started.stdout
    assert server.name == "nb" and "--seed" in " ".join(server.record.command)
    from servekit.widgets import ServerPanel

    assert isinstance(server.view, ServerPanel) and server.view.server is server  # the cell shows the live panel
    server.view.close()
    try:
        table = ip.run_line_magic("servers", "")
        assert "nb" in repr(table) and "ready" in repr(table) and server.api_key not in repr(table)

        with capture_output() as chatted:
            ip.run_cell_magic("chat", "nb --max-tokens 12", "Say hello")
        assert chatted.stdout.strip(), "the reply was streamed into the cell output"

        with capture_output() as logged:
            ip.run_line_magic("logs", "nb -n 5")
        assert logged.stdout.count("\n") <= 5 and logged.stdout
    finally:
        with capture_output() as stopped:
            ip.run_line_magic("stop", "nb")
    assert "Stopped: nb" in stopped.stdout
    assert servekit.running() == []


def test_serve_help_and_errors(ip):
    from IPython.core.error import UsageError

    assert "ENGINE MODEL" in (ip.find_line_magic("serve").__doc__ or "")
    assert "--parallel" in ip.find_line_magic("serve").__doc__
    with pytest.raises(UsageError, match="Unknown engine"):
        ip.run_line_magic("serve", "nosuch demo")
    with pytest.raises(UsageError, match="No server named .ghost."):
        ip.run_line_magic("stop", "ghost")
    with capture_output() as out:
        ip.run_line_magic("stop", "--all")
    assert "No servers were running." in out.stdout


def test_serve_quiet_shows_the_table_not_the_panel(ip):
    with capture_output():
        server = ip.run_line_magic("serve", "llamacpp demo-tiny --name nbq --quiet")
    try:
        assert server.view is None
        assert "servekit server nbq" in server._repr_html_()
    finally:
        server.stop()
