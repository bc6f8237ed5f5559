"""The notebook widgets against real llama-servers on 127.0.0.1: the panel follows the server (starting,
ready, crashed with its signal, stopped), Stop stops it, the log tail follows the log, the charts redraw
once per tick for several servers, the launcher shows servekit's errors, the chat streams with its numbers,
and every widget thread ends when its server stops or the widget is closed."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

pytest.importorskip("ipywidgets")
pytest.importorskip("ipywidgets")

import servekit  # noqa: E402
from servekit import widgets  # noqa: E402
from servekit.server import port_is_free  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("llama_server_ready")]
NO_EOS = {"ignore_eos": True}  # random weights often emit EOS at once
TOKENS_PER_S = "generation_tokens_per_s"


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    """Poll ``condition`` until it holds; fail with ``what`` after ``timeout`` seconds (a limit, not a goal)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:.0f} s: {what}")
        time.sleep(0.05)


def _load(server: servekit.Server, stop: threading.Event, tokens: int = 64) -> threading.Thread:
    def run() -> None:
        client = server.client(max_retries=0)
        while not stop.is_set() and server.is_running():
            try:
                client.completions.create(model=server.model, prompt="hello", max_tokens=tokens, extra_body=NO_EOS)
            except Exception:  # noqa: BLE001 - the server was stopped mid-request
                return

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_panel_follows_starting_ready_crashed_and_clear():
    server = servekit.serve("llamacpp", "demo-tiny", wait=False)
    panel = None
    try:
        panel = widgets.ServerPanel(server, interval=0.1)
        assert panel.state in ("starting", "ready")
        server.wait_ready()
        wait_for(lambda: panel.state == "ready", "the panel reads ready")
        assert "ready" in panel._state.value and str(server.pid) in panel._header.value
        assert f"{server.port}/v1" in panel._links.value and server.api_key not in panel._links.value
        os.kill(server.pid, signal.SIGKILL)  # the engine dies on its own
        wait_for(lambda: panel.state.startswith("crashed"), "the panel reads crashed")
        assert panel.state == "crashed (killed by SIGKILL)"
        wait_for(lambda: not panel.active, "the panel's thread ends with the server")
        assert panel._stop_button.description == "Clear" and not panel._stop_button.disabled
        panel._stop_button.click()  # clears the crashed server from the listing
        wait_for(lambda: panel.state == "stopped", "the panel reads stopped after Clear")
        assert servekit.running() == []
    finally:
        if panel is not None:
            panel.close()
        server.stop()


def test_stop_button_stops_the_server():
    server = servekit.serve("llamacpp", "demo-tiny")
    panel = widgets.ServerPanel(server, interval=0.1)
    try:
        pid = server.pid
        assert not panel._stop_button.disabled and panel._stop_button.description == "Stop"
        panel._stop_button.click()
        wait_for(lambda: panel.state == "stopped", "the panel reads stopped")
        wait_for(lambda: not panel.active, "the panel's thread ends")
        assert panel._stop_button.disabled
        assert port_is_free("127.0.0.1", server.port)
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
        assert servekit.running() == []
        assert panel.finished and "stopped" in panel.static_html()
    finally:
        panel.close()
        server.stop()


def test_log_tail_follows_the_log():
    server = servekit.serve("llamacpp", "demo-tiny", parallel=1)
    panel = widgets.ServerPanel(server, interval=0.1, log_lines=5)
    try:
        wait_for(lambda: server.logs(1).strip().split("\n")[-1] in panel._log.value, "the tail shows the last line")
        before = panel._log.value
        server.client().completions.create(model=server.model, prompt="hello", max_tokens=4, extra_body=NO_EOS)
        wait_for(lambda: panel._log.value != before, "the tail changes when the engine writes to its log")
        last = server.logs(1).strip()
        wait_for(lambda: last[-40:] in panel._log.value.replace("&#x27;", "'").replace("&quot;", '"')
                 .replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&"), "the new last line is shown")
        assert server.api_key not in panel._log.value
    finally:
        panel.close()
        server.stop()


def test_charts_of_two_servers_redraw_once_per_tick():
    first = servekit.serve("llamacpp", "demo-tiny", name="chart-a", parallel=2)
    second = servekit.serve("llamacpp", "demo-tiny", name="chart-b", parallel=2)
    stop = threading.Event()
    charts = widgets.LiveMetrics([first, second], interval=0.25)
    messages: list[str] = []
    charts.charts.observe(lambda change: messages.append(change["name"]), names=["value"])
    try:
        loads = [_load(server, stop) for server in (first, second)]
        def generating(index: int) -> bool:
            return charts.points(index) >= 6 and any(v > 0 for v in charts._series[index].values[TOKENS_PER_S])

        wait_for(lambda: generating(0) and generating(1), "both servers gain points with tokens/s", 120)
        charts.close()  # no more redraws: the counts below are final
        stop.set()
        assert charts.redraws >= 3
        assert 3 <= len(messages) <= charts.redraws, (len(messages), charts.redraws)  # one message per redraw at most
        svgs = charts.charts.value.split("<svg")[1:]  # the four charts, each server a colour
        assert len(svgs) == len(widgets.CHARTS)
        tokens = svgs[0]
        assert tokens.count("<polyline") == 2 and widgets.PALETTE[0] in tokens and widgets.PALETTE[1] in tokens
        assert int(tokens.split("data-points='")[1].split("'")[0]) >= 6
        assert float(tokens.split("data-max='")[1].split("'")[0]) > 0
        # llama-server has no latency histograms: the chart says so instead of drawing zeros
        assert f"not reported by {first.engine.display_name}" in svgs[3] and "<polyline" not in svgs[3]
        assert "chart-a" in charts._summary.value and "tok/s" in charts._summary.value
        for thread in loads:
            thread.join(30)
    finally:
        stop.set()
        charts.close()
        first.stop()
        second.stop()
    assert not charts.active and not any(recorder.running for recorder in charts.recorders)


def test_threads_end_when_the_server_stops():
    server = servekit.serve("llamacpp", "demo-tiny")
    board = server.dashboard()  # the Server method the notebooks use: the same widget
    try:
        assert isinstance(board, widgets.Dashboard) and board.panel.server is server
        board.panel.refresh()
        wait_for(lambda: board.metrics.points() >= 2, "the charts gain points")
        bundle = board._repr_mimebundle_()
        assert "application/vnd.jupyter.widget-view+json" in bundle  # the live widget …
        assert "<svg" in bundle["text/html"] and "ready" in bundle["text/html"]  # … and a static copy
        server.stop()
        wait_for(lambda: not board.panel.active, "the panel's thread ends")
        wait_for(lambda: not board.metrics.active, "the charts' thread ends")
        assert not any(recorder.running for recorder in board.metrics.recorders)
        wait_for(lambda: board.finished, "the dashboard's static copy is final")
        assert "stopped" in board.static_html()
        names = {thread.name for thread in threading.enumerate()}
        assert not any(name.startswith(("servekit-panel", "servekit-charts", f"servekit-metrics-{server.name}"))
                       for name in names), names
    finally:
        board.close()
        server.stop()


def test_closing_the_widgets_ends_their_threads_and_keeps_the_server():
    server = servekit.serve("llamacpp", "demo-tiny")
    try:
        board = widgets.dashboard(server)
        chat = widgets.ChatPanel(server)
        wait_for(lambda: board.metrics.points() >= 1, "the charts gain a point")
        board.close()
        chat.close()
        assert not board.panel.active and not board.metrics.active
        # a recorder the widget started stops with it; the server's shared one goes on until the server stops
        assert not any(recorder.running for recorder, owned, _ in board.metrics._recorders if owned)
        assert server.state == "ready" and server.ping()
    finally:
        server.stop()
    assert not any(recorder.running for recorder in board.metrics.recorders)


def test_launcher_shows_servekits_error_for_a_bad_choice(tmp_path: Path):
    launcher = widgets.Launcher(roots=[tmp_path])
    try:
        assert launcher.checked.wait(120)
        launcher.select_engine("llamacpp")
        assert launcher.engine == "llamacpp"
        missing = tmp_path / "no-such-model.gguf"
        launcher.set(model=str(missing))
        launcher.start().join(120)
        assert "servekit-error" in launcher.message and "no-such-model.gguf" in launcher.message
        assert "Traceback" not in launcher.message
        assert servekit.running() == [] and launcher.servers == []
        launcher.set(model="demo-tiny", lora="nonsense")  # LoRA must be NAME=PATH
        launcher.start().join(120)
        assert "NAME=PATH" in launcher.message and servekit.running() == []
    finally:
        launcher.close()


def test_launcher_starts_a_server_and_shows_its_panel(tmp_path: Path):
    launcher = widgets.Launcher(roots=[tmp_path])
    try:
        assert launcher.checked.wait(120)
        launcher.select_engine("llamacpp")
        launcher.set(model="demo-tiny", parallel=2, ctx=512)
        launcher.start().join(180)
        assert "is ready" in launcher.message, launcher.message
        (server,) = launcher.servers
        assert server.state == "ready" and "-np" in " ".join(server.record.command)
        (panel,) = launcher._panels.children
        assert isinstance(panel, widgets.ServerPanel) and panel.server is server
        wait_for(lambda: panel.state == "ready", "the new server's panel reads ready")
    finally:
        launcher.close()
        for server in launcher.servers:
            server.stop()


def test_chat_streams_with_adapter_and_usage_numbers():
    server = servekit.serve("llamacpp", "demo+loras")
    chat = widgets.ChatPanel(server, temperature=0.0, max_tokens=16)
    try:
        wait_for(lambda: not chat._adapter.disabled, "the adapters are offered")
        assert set(chat._adapter.options) == {widgets.ChatPanel.BASE, "next", "opposite"}
        chat.send("reverse: hot big day").join(120)
        chat._adapter.value = "opposite"
        chat.reset()
        chat.send("reverse: hot big day").join(120)
        (base, base_stats), (opposite, opposite_stats) = chat.replies
        assert base.strip() == "day big hot", base
        assert opposite.strip() == "night small cold", opposite
        for stats in (base_stats, opposite_stats):
            assert stats.ttft_s is not None and stats.ttft_s > 0
            assert stats.completion_tokens and stats.completion_tokens >= 3
            assert stats.prompt_tokens and stats.prompt_tokens > 3
        shown = [child.value for child in chat._transcript.children]
        assert any("TTFT" in value and "completion tokens" in value for value in shown)
        assert chat.messages[-1] == {"role": "assistant", "content": opposite}
    finally:
        chat.close()
        server.stop()
