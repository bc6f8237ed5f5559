"""Notebook widgets over servekit's Python API: :class:`ServerPanel`, :class:`LiveMetrics`, :class:`ChatPanel`,
:class:`Launcher`, :func:`dashboard` and :func:`panel_for`.

Why ipywidgets 8 and no chart widget: the controls are ipywidgets' own, and the live charts are inline SVG
inside an ``ipywidgets.HTML``, redrawn whole once a tick. Data only ever flows from the kernel to the page,
so they render and move in JupyterLab, Notebook 7, VS Code and Colab with nothing to install and nothing
to load, also while the kernel runs another cell. plotly's ``FigureWidget`` (an anywidget) was the first
choice, for zoom and hover; it froze in the browser test (2 of 5 runs) when a cell that made another
chart ran right after it: its views need replies from the kernel, which a busy kernel does not read.
A redraw costs one message of a few kB (``svg`` polylines of at most a few hundred points). Where no
widget can render (nbconvert, a static HTML export, GitHub) each widget's output also carries a static
HTML copy — the same SVG — refreshed when its server stops. The throughput–latency plot of a finished
sweep (``bench.plot``) is a plain plotly figure: it never changes, so nothing is live about it.

Threads: a panel polls its server once a second, a chart redraws when its recorder has sampled (one
redraw per tick for all servers on it), a chat reply streams in a thread of its own. They set widget
traits from those threads (ipywidgets 8 sends them from any thread; nothing uses ``with out:``), never
block the kernel, and end when their server stops or the widget is closed (:meth:`close`).
Nothing here knows an engine: names, links and metrics come from the server, its engine and its recorder.
"""

from __future__ import annotations

import html
import logging
import math
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ipywidgets as W

from . import links

if TYPE_CHECKING:
    from .metrics import MetricsRecorder
    from .server import Server

log = logging.getLogger(__name__)

STATE_COLORS = {"starting": "#d58512", "ready": "#2e7d32", "stopping": "#d58512", "stopped": "#757575",
                "crashed": "#c62828"}
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf")
LOG_TAIL_BYTES = 64 * 1024


# -- shared pieces ----------------------------------------------------------------------------------
class _Ticker:
    """A daemon thread calling ``step()`` every ``interval`` seconds until it returns False or :meth:`stop`."""

    def __init__(self, name: str, interval: float, step: Callable[[], bool],
                 on_end: Callable[[], None] | None = None) -> None:
        self.interval, self._step, self._on_end = interval, step, on_end
        self._stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> _Ticker:
        self.thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        if self.thread.is_alive() and self.thread is not threading.current_thread():
            self.thread.join(timeout)

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def _run(self) -> None:
        try:
            while not self._stopping.is_set():
                try:
                    if not self._step():
                        break
                except Exception:  # noqa: BLE001 - a display glitch must not end the panel
                    log.warning("servekit widget update failed", exc_info=True)
                self._stopping.wait(self.interval)
        finally:
            if self._on_end is not None and not self._stopping.is_set():
                _quietly(self._on_end)


def _quietly(function: Callable[[], Any]) -> None:
    try:
        function()
    except Exception:  # noqa: BLE001
        log.warning("servekit widget callback failed", exc_info=True)


class _StaticFallback:
    """Adds a static ``text/html`` copy to a widget's output, for frontends that cannot render widgets.

    Shown through a display id, so the copy is rewritten when the widget's server stops or it closes."""

    _display_handles: list[Any]
    _on_final: list[Callable[[], None]]
    finished: bool  # its thread has ended (server stopped) and the static copy is final

    def _init_fallback(self) -> None:
        self._display_handles, self._on_final, self.finished = [], [], False

    def static_html(self) -> str:
        raise NotImplementedError

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        data = dict(super()._repr_mimebundle_(**kwargs) or {})  # type: ignore[misc]
        data["text/html"] = self.static_html()
        return data

    def _ipython_display_(self) -> None:
        from IPython.display import display

        self._display_handles.append(display(self._repr_mimebundle_(), raw=True, display_id=True))

    def _publish_final(self, live: bool = True) -> None:
        """Rewrite the displayed output with the current static copy (``live``: keep the widget view too)."""
        self.finished = True
        bundle = self._repr_mimebundle_() if live else {"text/plain": repr(self), "text/html": self.static_html()}
        for handle in self._display_handles:
            _quietly(lambda handle=handle: handle.update(bundle, raw=True))
        for callback in list(self._on_final):
            _quietly(callback)


def _duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h {minutes:02d}m {secs:02d}s" if hours else f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"


def _link(url: str, text: str | None = None) -> str:
    return (f'<a href="{html.escape(url)}" target="_blank" rel="noopener" style="color:#1565c0">'
            f"{html.escape(text or url)}</a>")


def _read_tail(path: Path, lines: int, seen: tuple[int, float] | None) -> tuple[str | None, tuple[int, float] | None]:
    """The last ``lines`` lines of ``path`` — None when the file is unchanged since ``seen`` (size, mtime)."""
    try:
        info = path.stat()
    except OSError:
        return ("" if seen is not None else None), None
    stamp = (info.st_size, info.st_mtime)
    if stamp == seen:
        return None, seen
    with open(path, "rb") as handle:
        handle.seek(max(0, info.st_size - LOG_TAIL_BYTES))
        text = handle.read().decode("utf-8", errors="replace")
    return "\n".join(text.splitlines()[-lines:]), stamp


def _recorder_for(server: Server, interval: float = 1.0) -> tuple[MetricsRecorder, bool]:
    """The server's shared recorder when it has one (``server.recorder()``), else a new started one.

    Returns (recorder, owned): an owned recorder is stopped by the widget that made it; either stops by
    itself when the server stops."""
    shared = getattr(server, "recorder", None)
    if callable(shared):
        return shared(interval=interval), False
    from .metrics import MetricsRecorder

    command = tuple(getattr(server.record, "command", None) or ())
    recorder = MetricsRecorder.for_engine(server.engine, server.url, headers=server.headers(), command=command,
                                          interval=interval, should_continue=server.is_running, name=server.name)
    return recorder.start(), True


# -- ServerPanel ------------------------------------------------------------------------------------
class ServerPanel(_StaticFallback, W.VBox):
    """One server at a glance: engine, model, state (with the exit status after a crash), uptime, links
    to its API and web page that work where the notebook runs, a live log tail and a Stop button."""

    def __init__(self, server: Server, *, interval: float = 1.0, log_lines: int = 12) -> None:
        self.server, self.log_lines = server, log_lines
        self._init_fallback()
        self._header = W.HTML()
        self._state = W.HTML(layout=W.Layout(min_width="11em"))
        self._state.add_class("servekit-state")
        self._links = W.HTML(self._links_html())
        self._log = W.HTML(layout=W.Layout(width="100%"))
        self._log.add_class("servekit-log")
        self._error = W.HTML()
        self._stop_button = W.Button(description="Stop", icon="stop", button_style="danger",
                                     tooltip="Stop the server (SIGTERM, then SIGKILL); frees its port",
                                     layout=W.Layout(width="9em"))  # room for "Stopping…" and "Stopped"
        self._stop_button.add_class("servekit-stop")
        self._stop_button.on_click(lambda _button: self.stop_server())
        self._log_box = W.Accordion(children=[self._log], titles=(f"Log (last {log_lines} lines)",))
        self._log_box.selected_index = 0
        self._top = W.HBox([self._state, self._header, self._stop_button],
                           layout=W.Layout(align_items="center", justify_content="space-between", width="100%"))
        super().__init__(children=[self._top, self._links, self._error, self._log_box],
                         layout=W.Layout(border="1px solid #ddd", padding="6px", width="100%"))
        self.add_class("servekit-panel")
        self._log_seen: tuple[int, float] | None = None
        self._last_state = ""
        self._stopper: threading.Thread | None = None
        self._ended_at: float | None = None
        self.refresh()
        self._ticker = _Ticker(f"servekit-panel-{server.name}", interval, self.refresh,
                               on_end=self._publish_final).start()

    @property
    def state(self) -> str:
        """The state the panel shows now."""
        return self._last_state

    @property
    def active(self) -> bool:
        """True while the panel's thread follows the server."""
        return self._ticker.thread.is_alive()

    def refresh(self) -> bool:
        """Bring the panel up to date; False once the server has ended (the thread then stops)."""
        server = self.server
        state, text = server.state, server.state_text
        ended = state in ("stopped", "crashed")
        if ended and self._ended_at is None:
            self._ended_at = time.time()
        if text != self._last_state:
            self._last_state = text
            color = STATE_COLORS.get(state, "#333")
            self._state.value = (f'<span style="background:{color};color:white;border-radius:4px;padding:2px 8px;'
                                 f'font-weight:600">{html.escape(text)}</span>')
            self._set_button(state)
        self._header.value = self._header_html()
        tail, self._log_seen = _read_tail(server.log_path, self.log_lines, self._log_seen)
        if tail is not None:
            self._log.value = _pre(_redact(tail, server.api_key))
        return not ended

    def stop_server(self) -> threading.Thread:
        """Stop the server in a background thread (the kernel stays free); the panel follows."""
        if self._stopper is None or not self._stopper.is_alive():
            self._stop_button.disabled, self._stop_button.description = True, "Stopping…"
            self._stopper = threading.Thread(target=self._stop_now, name=f"servekit-stop-{self.server.name}",
                                             daemon=True)
            self._stopper.start()
        return self._stopper

    def _stop_now(self) -> None:
        try:
            self.server.stop()
        except Exception as exc:  # noqa: BLE001 - shown in the panel
            self._error.value = _error_html(exc)
        finally:
            ended = not self.refresh()
            if ended and not self._ticker.thread.is_alive():
                self._publish_final()

    def _set_button(self, state: str) -> None:
        button = self._stop_button
        if state == "stopped":
            button.disabled, button.description, button.icon = True, "Stopped", "check"
        elif state == "crashed":
            button.disabled, button.description, button.icon = False, "Clear", "trash"
            button.tooltip = "The server crashed: clear it from the listing (its log stays)"
        elif state == "stopping":
            button.disabled, button.description = True, "Stopping…"
        else:
            button.disabled, button.description, button.icon = False, "Stop", "stop"

    def _header_html(self) -> str:
        server = self.server
        end = self._ended_at or time.time()
        uptime = _duration(end - float(server.record.started_at or end))
        since = "ran" if self._ended_at else "up"
        return (f"<b>{html.escape(server.name)}</b> · {html.escape(server.engine.display_name)} · "
                f"<code>{html.escape(server.model)}</code> · pid <span class='servekit-pid'>{server.pid}</span> · "
                f"{since} {uptime}")

    def _links_html(self) -> str:
        server = self.server
        api = links.server_url(server, "v1")
        page = server.engine.web_ui(server.url)
        web = _link(links.public_link(server, page.url), page.note or "web page") if page.url \
            else html.escape(page.note or "none")
        key = f"{server.api_key[:4]}… (<code>server.api_key</code>)" if server.api_key else "none"
        rows = (("API", f"{_link(api)} · key {key}"), ("Web page", web), ("", html.escape(links.where().note)))
        return "<table style='font-size:90%'>" + "".join(
            f"<tr><td style='color:#666;padding-right:1em;white-space:nowrap;vertical-align:top'>{k}</td><td>{v}</td></tr>" for k, v in rows) + "</table>"

    def static_html(self) -> str:
        return (f"<div style='border:1px solid #ddd;padding:6px'>{self._state.value} {self._header.value}"
                f"{self._links.value}{self._log.value}</div>")

    def close(self) -> None:
        """Stop following the server (the server keeps running) and close the widget."""
        self._ticker.stop()
        if self._display_handles:
            self._publish_final(live=False)
        for child in (self._header, self._state, self._links, self._log, self._error, self._stop_button,
                      self._log_box, self._top):
            child.close()
        super().close()


def _static_copy(*parts: str) -> str:
    """The HTML a live chart widget leaves in the notebook: its parts, and a line saying the copy is static."""
    return (f"<div>{''.join(parts)}"
            "<div style='color:#888;font-size:80%'>static copy (live charts need a running kernel)</div></div>")


def _pre(text: str) -> str:
    return ("<pre style='max-height:16em;overflow:auto;font-size:85%;margin:0;white-space:pre-wrap'>"
            f"{html.escape(text) or '(empty)'}</pre>")


def _redact(text: str, key: str | None) -> str:
    from .server import redact

    return redact(text, key)


def _error_html(exc: BaseException) -> str:
    from .errors import ServekitError

    kind = "" if isinstance(exc, ServekitError) else f"{type(exc).__name__}: "
    return (f"<div class='servekit-error' style='color:#b71c1c;white-space:pre-wrap;font-family:monospace;"
            f"font-size:90%'>{html.escape(kind + str(exc))}</div>")


# -- LiveMetrics --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Line:
    column: str
    label: str
    dash: str = "solid"
    scale: float = 1.0


@dataclass(frozen=True)
class _Chart:
    title: str
    unit: str
    lines: tuple[_Line, ...]


CHARTS: tuple[_Chart, ...] = (
    _Chart("generated tokens/s", "tok/s", (_Line("generation_tokens_per_s", "tokens/s"),)),
    _Chart("requests: running ── waiting ┄┄", "requests",
           (_Line("requests_running", "running"), _Line("requests_waiting", "waiting", "dot"))),
    _Chart("KV-cache use", "%", (_Line("kv_cache_usage", "KV cache", scale=100.0),)),
    _Chart("TTFT p50 ── p90 - - · ITL p50 ┄┄", "ms",
           (_Line("ttft_p50", "TTFT p50", scale=1000.0), _Line("ttft_p90", "TTFT p90", "dash", 1000.0),
            _Line("itl_p50", "ITL p50", "dot", 1000.0))),
)


class _Series:
    """One server's recent rows as columns (local wall time in ms, and each charted value)."""

    def __init__(self, window_s: float, max_points: int, charts: Sequence[_Chart] = CHARTS) -> None:
        self.window_ms, self.max_points = window_s * 1000.0, max_points
        self.x: deque[float] = deque()
        self.values: dict[str, deque[float]] = {line.column: deque() for chart in charts for line in chart.lines}
        self.latest: dict[str, Any] = {}

    def add(self, row: dict[str, Any]) -> None:
        stamp = row.get("time")
        if stamp is None:
            return
        if getattr(stamp, "tzinfo", None) is not None:
            stamp = stamp.astimezone().replace(tzinfo=None)  # local wall-clock time, as the axis shows it
        x = _local_ms(stamp)
        if self.x and x <= self.x[-1]:
            return  # already held (a row read from the history and also delivered to the subscriber)
        self.x.append(x)
        for column, values in self.values.items():
            values.append(_number(row.get(column)))
        self.latest = row
        while self.x and (len(self.x) > self.max_points or self.x[-1] - self.x[0] > self.window_ms):
            self.x.popleft()
            for values in self.values.values():
                values.popleft()

    def has(self, column: str) -> bool:
        return any(not math.isnan(v) for v in self.values[column])


def _number(value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return math.nan
    return number if math.isfinite(number) else math.nan


def _local_ms(stamp: Any) -> float:
    """A naive local datetime as milliseconds, counted as if it were UTC (the charts' time axis shows it as is)."""
    from datetime import timezone

    if getattr(stamp, "tzinfo", None) is not None:
        stamp = stamp.astimezone().replace(tzinfo=None)
    return stamp.replace(tzinfo=timezone.utc).timestamp() * 1000.0


class LiveMetrics(_StaticFallback, W.VBox):
    """Live charts of one or several servers: generated tokens/s, running and waiting requests, KV-cache
    use, and TTFT/ITL where the engine reports them (else the chart says so). Each server has one colour.

    Rows come from each server's :class:`~servekit.metrics.MetricsRecorder`; a thread redraws once per
    tick, all servers in one SVG update. It ends when every server has stopped or on :meth:`close`."""

    def __init__(self, servers: Server | Iterable[Server], *, interval: float = 1.0, window_s: float = 300.0,
                 max_points: int = 600) -> None:
        self.servers: list[Server] = [servers] if hasattr(servers, "engine") else list(servers)  # type: ignore[arg-type]
        if not self.servers:
            raise ValueError("LiveMetrics needs at least one server")
        self.interval = interval
        self._init_fallback()
        self._series = [_Series(window_s, max_points) for _ in self.servers]
        self._pending: list[list[dict[str, Any]]] = [[] for _ in self.servers]
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._closed = threading.Event()
        self.redraws = 0
        self.charts = W.HTML()  # the four charts as SVG, redrawn whole once a tick
        self.charts.add_class("servekit-charts")
        self._summary = W.HTML()
        self._summary.add_class("servekit-metrics-summary")
        super().__init__(children=[self._summary, self.charts], layout=W.Layout(width="100%"))
        self.add_class("servekit-metrics")
        self._recorders: list[tuple[MetricsRecorder, bool, Callable[[], None]]] = []
        for index, server in enumerate(self.servers):
            recorder, owned = _recorder_for(server, interval)
            unsubscribe = recorder.subscribe(lambda row, index=index: self._receive(index, row))
            with self._lock:
                self._pending[index] = recorder.rows() + self._pending[index]  # what it sampled before
            self._recorders.append((recorder, owned, unsubscribe))
        self._wake.set()  # draw what the recorders already hold
        self._thread = threading.Thread(target=self._run, name="servekit-charts", daemon=True)
        self._thread.start()

    @property
    def active(self) -> bool:
        """True while the chart's thread is drawing."""
        return self._thread.is_alive()

    @property
    def recorders(self) -> list[MetricsRecorder]:
        return [recorder for recorder, _, _ in self._recorders]

    def points(self, index: int = 0) -> int:
        """How many samples of server ``index`` the charts hold."""
        return len(self._series[index].x)

    def _receive(self, index: int, row: dict[str, Any]) -> None:
        with self._lock:
            self._pending[index].append(row)
        self._wake.set()

    def _run(self) -> None:
        try:
            while not self._closed.is_set():
                self._wake.wait(self.interval)
                self._wake.clear()
                self._closed.wait(0.05)  # let the other servers' samples of this tick arrive: one redraw for all
                if self._closed.is_set():
                    return
                if self._drain():
                    self.redraw()
                if not any(recorder.running for recorder in self.recorders) and not self._has_pending():
                    break
            self._publish_final()
        except Exception:  # noqa: BLE001 - the charts stop; the kernel is unaffected
            log.warning("servekit charts stopped", exc_info=True)

    def _has_pending(self) -> bool:
        with self._lock:
            return any(self._pending)

    def _drain(self) -> bool:
        with self._lock:
            batches, self._pending = self._pending, [[] for _ in self.servers]
        for series, rows in zip(self._series, batches):
            for row in rows:
                series.add(row)
        return any(batches)

    def redraw(self) -> None:
        """Every server's points and the notes, as one new value of the charts' HTML (one message)."""
        self.charts.value = _charts_row(CHARTS, self._series, self._chart_notes())
        self.redraws += 1
        self._summary.value = self._summary_html()

    def _chart_notes(self) -> list[str]:
        """Per chart: empty, or which servers report none of its numbers (never a made-up zero)."""
        notes = []
        for chart in CHARTS:
            silent = [self.servers[i] for i, series in enumerate(self._series)
                      if series.x and not any(series.has(line.column) for line in chart.lines)]
            names = sorted({s.engine.display_name for s in silent})
            notes.append(f"not reported by {', '.join(names)}" if names else "")
        return notes

    def _summary_html(self) -> str:
        parts = []
        for index, (server, series) in enumerate(zip(self.servers, self._series)):
            row, color = series.latest, PALETTE[index % len(PALETTE)]
            if row.get("error"):
                detail = f"<span style='color:#b71c1c'>{html.escape(str(row['error'])[:160])}</span>"
            else:
                detail = " · ".join(_fmt(row.get(column), unit, scale) for column, unit, scale in (
                    ("generation_tokens_per_s", " tok/s", 1.0), ("requests_running", " running", 1.0),
                    ("requests_waiting", " waiting", 1.0), ("kv_cache_usage", "% KV cache", 100.0)))
            parts.append(f"<span style='color:{color}'>■</span> <b>{html.escape(server.name)}</b> {detail}")
        return "<div style='font-size:90%'>" + "<br>".join(parts) + "</div>"

    def static_html(self) -> str:
        return _static_copy(self._summary_html(), _charts_row(CHARTS, self._series, self._chart_notes()))

    def close(self) -> None:
        """Stop drawing, unsubscribe from the recorders (stopping those this widget started), close."""
        self._closed.set()
        self._wake.set()
        if self._thread is not threading.current_thread():
            self._thread.join(5)
        for recorder, owned, unsubscribe in self._recorders:
            unsubscribe()
            if owned:
                recorder.stop()
        if self._display_handles:
            self._publish_final(live=False)
        self._summary.close()
        self.charts.close()
        super().close()


def _fmt(value: Any, unit: str, scale: float) -> str:
    number = _number(value)
    return "–" + unit if math.isnan(number) else f"{_human(number * scale)}{unit}"


def _human(number: float) -> str:
    """3 significant digits, thousands as k and millions as M: 0.25, 18, 4590 -> 4.59k, 17000 -> 17k."""
    for limit, suffix in ((1e6, "M"), (1e3, "k")):
        if abs(number) >= limit:
            return f"{number / limit:.3g}{suffix}"
    return f"{number:.3g}"


def _svg_chart(chart: _Chart, servers: Sequence[Any], series: Sequence[_Series], width: int = 360,
               height: int = 170, note: str = "") -> str:
    """One chart as inline SVG: a polyline per server and line, the y range, the time span, the title;
    ``note`` (e.g. "not reported by llama-server") where it has no data. ``data-points`` / ``data-max``
    say what it shows (the browser test reads them)."""
    from datetime import datetime, timezone

    pad_l, pad_t, pad_b = 44, 20, 16
    plot_w, plot_h = width - pad_l - 8, height - pad_t - pad_b
    points = [(i, line, s) for i, s in enumerate(series) for line in chart.lines]
    xs = [x for s in series for x in s.x]
    ys = [v * line.scale for _, line, s in points for v in s.values[line.column] if not math.isnan(v)]
    body = [f"<text x='{pad_l}' y='13' font-size='12' fill='#333'>{html.escape(chart.title)}</text>"]
    top = 0.0
    if not xs or not ys:
        body.append(f"<text x='{pad_l + plot_w / 2}' y='{pad_t + plot_h / 2}' font-size='11' fill='#999' "
                    f"text-anchor='middle'>{html.escape(note or 'no data')}</text>")
    else:
        x0, x1 = min(xs), max(xs) or 1.0
        top = max(ys) or 1.0
        start = datetime.fromtimestamp(x0 / 1000.0, timezone.utc).strftime("%H:%M:%S")  # local time, stored as UTC
        body.append(f"<text x='{pad_l - 4}' y='{pad_t + 8}' font-size='10' fill='#666' text-anchor='end'>{_human(top)}</text>"
                    f"<text x='{pad_l - 4}' y='{pad_t + plot_h}' font-size='10' fill='#666' text-anchor='end'>0</text>"
                    f"<text x='{pad_l}' y='{height - 3}' font-size='10' fill='#666'>{start}</text>"
                    f"<text x='{pad_l + plot_w}' y='{height - 3}' font-size='10' fill='#666' text-anchor='end'>"
                    f"{_duration((x1 - x0) / 1000)} · {html.escape(chart.unit)}</text>")
        if note:
            body.append(f"<text x='{pad_l + 4}' y='{pad_t + 12}' font-size='10' fill='#999'>{html.escape(note)}</text>")
        for index, line, s in points:
            coords = [(pad_l + plot_w * (x - x0) / ((x1 - x0) or 1.0), pad_t + plot_h * (1 - v * line.scale / top))
                      for x, v in zip(s.x, s.values[line.column]) if not math.isnan(v)]
            if coords:
                dash = {"dot": "2,3", "dash": "6,3"}.get(line.dash, "")
                path = " ".join(f"{x:.1f},{y:.1f}" for x, y in coords)
                body.append(f"<polyline fill='none' stroke='{PALETTE[index % len(PALETTE)]}' stroke-width='1.5' "
                            f"stroke-dasharray='{dash}' points='{path}'/>")
    frame = f"<rect x='{pad_l}' y='{pad_t}' width='{plot_w}' height='{plot_h}' fill='none' stroke='#ddd'/>"
    shown = max((len(s.x) for s in series), default=0)
    return (f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' viewBox='0 0 {width} {height}' "
            f"data-chart='{html.escape(chart.title)}' data-points='{shown}' data-max='{top:g}'>"
            f"{frame}{''.join(body)}</svg>")


def _charts_row(charts: Sequence[_Chart], series: Sequence[_Series], notes: Sequence[str] = (),
                width: int = 360) -> str:
    """Charts side by side (wrapping), as one HTML block."""
    notes = list(notes) or [""] * len(charts)
    svgs = "".join(_svg_chart(chart, [], series, width=width, note=note) for chart, note in zip(charts, notes))
    return f"<div style='display:flex;flex-wrap:wrap;gap:8px'>{svgs}</div>"


# -- BenchChart ---------------------------------------------------------------------------------------
BENCH_CHARTS: tuple[_Chart, ...] = (
    _Chart("output tokens/s: client ── server ┄┄", "tok/s",
           (_Line("client_tokens_per_s", "client"), _Line("generation_tokens_per_s", "server", "dot"))),
    _Chart("requests in flight: client ── server ┄┄", "requests",
           (_Line("in_flight", "client"), _Line("requests_running", "server running", "dot"))),
    _Chart("TTFT of finished requests: p50 ── p90 - -", "ms",
           (_Line("ttft_p50", "TTFT p50"), _Line("ttft_p90", "TTFT p90", "dash"))),
)
BENCH_ROW_S = 1.0  # one point a second per server, however often progress arrives


class BenchChart(_StaticFallback, W.VBox):
    """The live view of a load-generator run or sweep: pass it as ``on_progress`` to
    :func:`servekit.bench.run` / :func:`~servekit.bench.sweep` (``%bench`` does).

    Once a second per server: output tokens/s and requests in flight as the client counts them, next to
    the server's own generated tokens/s and running requests (from its metrics recorder, the same time
    axis), and the TTFT p50/p90 of the requests that finished in that second. :meth:`finish` (or the
    end of the server) makes the static copy final."""

    def __init__(self, servers: Any, *, max_points: int = 3600) -> None:
        from .bench.sweeps import as_servers

        self._pairs = as_servers(servers)
        self.names = [name for name, _ in self._pairs]
        self._init_fallback()
        self._series = [_Series(max_points, max_points, BENCH_CHARTS) for _ in self._pairs]
        self._server_rows: list[dict[str, Any]] = [{} for _ in self._pairs]
        self._window: list[dict[str, Any]] = [{} for _ in self._pairs]  # what this second has seen so far
        self._unsubscribe: list[Callable[[], None]] = []
        self.redraws = 0
        self.charts = W.HTML()
        self._summary = W.HTML()
        super().__init__(children=[self._summary, self.charts], layout=W.Layout(width="100%"))
        self.add_class("servekit-bench-chart")
        for index, (_, server) in enumerate(self._pairs):
            recorder = getattr(server, "recorder", None)  # servekit servers: their own shared recorder
            if callable(recorder):
                self._unsubscribe.append(recorder().subscribe(lambda row, index=index: self._server_row(index, row)))

    def points(self, index: int = 0) -> int:
        """How many seconds of server ``index`` the charts hold."""
        return len(self._series[index].x)

    def _server_row(self, index: int, row: dict[str, Any]) -> None:
        self._server_rows[index] = row

    def _index(self, label: str) -> int:
        """Which server a progress label (``NAME c=4``) belongs to: the longest name it starts with."""
        matches = [i for i, name in enumerate(self.names) if label == name or label.startswith(name + " ")]
        return max(matches, key=lambda i: len(self.names[i])) if matches else 0

    def __call__(self, snap: Any) -> None:
        """A :class:`servekit.bench.BenchProgress` snapshot; adds a point once a second and redraws."""
        if snap.phase == "preparing":
            return
        index = self._index(snap.label)
        window = self._window[index]
        if window.get("label") != snap.label:  # a new run (a sweep's next level): counts start again
            window.clear()
            window.update(label=snap.label, since=snap.wall_time, tokens=snap.output_tokens, ttfts=[])
        window["ttfts"].extend(r.ttft_ms for r in snap.new_records if r.ok and r.ttft_ms is not None)
        elapsed = snap.wall_time - window["since"]
        if elapsed < BENCH_ROW_S and not snap.done:
            return
        series = self._series[index]
        if elapsed < BENCH_ROW_S / 2 and series.latest.get("label") == snap.label:  # the end, just after a point
            series.latest = {**series.latest, "completed": snap.completed, "failed": snap.failed, "in_flight": 0}
            self._summary.value = self._summary_html()
            return
        series.add(self._row(index, snap, window, elapsed))
        window.update(since=snap.wall_time, tokens=snap.output_tokens, ttfts=[])
        self.redraw()

    def _row(self, index: int, snap: Any, window: dict[str, Any], elapsed: float) -> dict[str, Any]:
        from datetime import datetime

        ttfts = sorted(window["ttfts"])
        server = self._server_rows[index]
        fresh = server and abs(_local_ms(server["time"]) / 1000.0 - _local_ms(datetime.fromtimestamp(snap.wall_time))
                                / 1000.0) < 3.0
        return {
            "time": datetime.fromtimestamp(snap.wall_time),
            "client_tokens_per_s": (snap.output_tokens - window["tokens"]) / elapsed if elapsed > 0 else math.nan,
            "in_flight": snap.in_flight,
            "ttft_p50": ttfts[len(ttfts) // 2] if ttfts else math.nan,
            "ttft_p90": ttfts[min(len(ttfts) - 1, int(len(ttfts) * 0.9))] if ttfts else math.nan,
            "generation_tokens_per_s": server.get("generation_tokens_per_s") if fresh else math.nan,
            "requests_running": server.get("requests_running") if fresh else math.nan,
            "label": snap.label, "completed": snap.completed, "failed": snap.failed,
        }

    def redraw(self) -> None:
        """Every server's points, as one new value of the charts' HTML (one message)."""
        self.charts.value = _charts_row(BENCH_CHARTS, self._series, width=300)
        self.redraws += 1
        self._summary.value = self._summary_html()

    def _summary_html(self) -> str:
        parts = []
        for index, (name, series) in enumerate(zip(self.names, self._series)):
            row, color = series.latest, PALETTE[index % len(PALETTE)]
            if not row:
                continue
            load = str(row["label"])[len(name):].strip() or str(row["label"])  # "NAME c=4" -> "c=4"
            detail = " · ".join([html.escape(load), f"{row['completed']} done",
                                 f"{row['failed']} failed", _fmt(row.get("client_tokens_per_s"), " tok/s", 1.0),
                                 _fmt(row.get("in_flight"), " in flight", 1.0)])
            parts.append(f"<span style='color:{color}'>■</span> <b>{html.escape(name)}</b> {detail}")
        return "<div style='font-size:90%'>" + ("<br>".join(parts) or "waiting for the first requests …") + "</div>"

    def static_html(self) -> str:
        return _static_copy(self._summary_html(), _charts_row(BENCH_CHARTS, self._series, width=300))

    def _stop_listening(self) -> None:
        for unsubscribe in self._unsubscribe:
            _quietly(unsubscribe)
        self._unsubscribe.clear()

    def finish(self) -> None:
        """The run is over: stop listening to the servers' recorders and make the static copy final."""
        self._stop_listening()
        if not self.finished:
            self._publish_final()

    def close(self) -> None:
        """Stop listening and close the chart (its last static copy stays in the output)."""
        if getattr(self, "_closing", False):
            return
        self._closing = True
        self._stop_listening()
        if self._display_handles:
            self._publish_final(live=False)
        self._summary.close()
        self.charts.close()
        super().close()


# -- ChatPanel ----------------------------------------------------------------------------------------
@dataclass
class ReplyStats:
    """How one reply went: TTFT and the token counts the server reported (``usage``)."""

    ttft_s: float | None = None
    total_s: float = 0.0
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    decode_s: float | None = None  # first to last content chunk

    @property
    def tokens_per_s(self) -> float | None:
        """Completion tokens after the first, per second from the first token to the last."""
        if not self.completion_tokens or self.completion_tokens < 2 or not self.decode_s:
            return None
        return (self.completion_tokens - 1) / self.decode_s

    def describe(self) -> str:
        parts = [f"TTFT {self.ttft_s * 1000:.0f} ms" if self.ttft_s is not None else "no tokens"]
        if self.tokens_per_s is not None:
            parts.append(f"{self.tokens_per_s:.1f} tokens/s")
        if self.completion_tokens is not None:
            parts.append(f"{self.prompt_tokens} prompt + {self.completion_tokens} completion tokens")
        else:
            parts.append("the server sent no usage report")
        parts.append(f"{self.total_s:.2f} s in all")
        return " · ".join(parts)


class ChatPanel(W.VBox):
    """Chat with a server in the notebook: streamed replies, a system prompt, temperature, max tokens,
    the LoRA adapter to apply (from ``server.loras()``), and under each reply its TTFT, tokens/s and
    token counts from the server's usage report. The conversation is kept until "New chat"."""

    BASE = "(base model)"

    def __init__(self, server: Server, *, system: str = "", temperature: float = 0.7, max_tokens: int = 256) -> None:
        self.server = server
        self.messages: list[dict[str, str]] = []
        self.replies: list[tuple[str, ReplyStats]] = []
        self._system = W.Textarea(value=system, placeholder="System prompt (optional)", rows=2,
                                  layout=W.Layout(width="100%"))
        self._temperature = W.FloatSlider(value=temperature, min=0.0, max=2.0, step=0.05, description="temperature",
                                          style={"description_width": "initial"})
        self._max_tokens = W.BoundedIntText(value=max_tokens, min=1, max=1_000_000, description="max tokens",
                                            layout=W.Layout(width="14em"))
        self._adapter = W.Dropdown(options=[self.BASE], value=self.BASE, description="LoRA", disabled=True,
                                   layout=W.Layout(width="18em"))
        self._prompt = W.Textarea(placeholder="Message", rows=3, layout=W.Layout(width="100%"))
        self._send_button = W.Button(description="Send", button_style="primary", icon="paper-plane")
        self._cancel_button = W.Button(description="Stop reply", icon="stop", disabled=True)
        self._new = W.Button(description="New chat", icon="eraser")
        self._transcript = W.VBox(layout=W.Layout(width="100%"))
        self._send_button.on_click(lambda _b: self.send())
        self._cancel_button.on_click(lambda _b: self.cancel())
        self._new.on_click(lambda _b: self.reset())
        self._cancel = threading.Event()
        self._worker: threading.Thread | None = None
        super().__init__(children=[
            self._system, W.HBox([self._temperature, self._max_tokens, self._adapter]), self._transcript,
            self._prompt, W.HBox([self._send_button, self._cancel_button, self._new]),
        ], layout=W.Layout(border="1px solid #ddd", padding="6px", width="100%"))
        self.add_class("servekit-chat")
        threading.Thread(target=self._load_adapters, name=f"servekit-chat-loras-{server.name}", daemon=True).start()

    @property
    def busy(self) -> bool:
        return self._worker is not None and self._worker.is_alive()

    def _load_adapters(self) -> None:
        try:
            names = [info.name for info in self.server.loras()]
        except Exception as exc:  # noqa: BLE001 - no adapters to offer; say why
            self._adapter.tooltip = f"no LoRA adapters: {exc}"
            return
        self._adapter.options = [self.BASE, *names]
        self._adapter.value = self.BASE
        self._adapter.disabled = not names

    def send(self, text: str | None = None) -> threading.Thread | None:
        """Send ``text`` (or the message box) and stream the reply in a thread; returns that thread."""
        text = (self._prompt.value if text is None else text).strip()
        if not text or self.busy:
            return None
        self._prompt.value = ""
        self.messages.append({"role": "user", "content": text})
        reply, stats = W.HTML(), W.HTML()
        stats.add_class("servekit-chat-stats")
        self._transcript.children = (*self._transcript.children, W.HTML(_bubble("you", text, "#e3f2fd")), reply, stats)
        adapter = None if self._adapter.value == self.BASE else str(self._adapter.value)
        self._cancel.clear()
        self._set_busy(True)
        self._worker = threading.Thread(target=self._reply, args=(reply, stats, adapter),
                                        name=f"servekit-chat-{self.server.name}", daemon=True)
        self._worker.start()
        return self._worker

    def cancel(self) -> None:
        """End the reply being streamed (the request is closed; the server goes on)."""
        self._cancel.set()

    def reset(self) -> None:
        """Forget the conversation."""
        self.cancel()
        self.messages.clear()
        self._transcript.children = ()

    def _request(self, adapter: str | None) -> dict[str, Any]:
        options = self.server.lora_request_options(adapter)
        system = self._system.value.strip()
        messages = ([{"role": "system", "content": system}] if system else []) + list(self.messages)
        return {"model": options["model"], "extra_body": options.get("extra_body") or None, "messages": messages,
                "max_tokens": int(self._max_tokens.value), "temperature": float(self._temperature.value),
                "stream": True, "stream_options": {"include_usage": True}}

    def _reply(self, reply: W.HTML, stats_box: W.HTML, adapter: str | None) -> None:
        stats, parts, shown = ReplyStats(), [], 0.0
        first = last = None
        started = time.perf_counter()
        try:
            client = self.server.client()  # made (and openai imported) before the clock starts: TTFT is the server's
            started = time.perf_counter()
            stream = client.chat.completions.create(**self._request(adapter))
            with stream:
                for chunk in stream:
                    if self._cancel.is_set():
                        parts.append(" [stopped]")
                        break
                    if getattr(chunk, "usage", None):
                        stats.prompt_tokens, stats.completion_tokens = (chunk.usage.prompt_tokens,
                                                                        chunk.usage.completion_tokens)
                    for choice in chunk.choices or ():
                        if choice.delta and choice.delta.content:
                            last = time.perf_counter()
                            first = first or last
                            parts.append(choice.delta.content)
                    if time.perf_counter() - shown > 0.05:  # at most ~20 redraws a second
                        reply.value, shown = _bubble(adapter or "assistant", "".join(parts) + "▌", "#f5f5f5"), \
                            time.perf_counter()
        except Exception as exc:  # noqa: BLE001 - shown under the message
            stats_box.value = _error_html(exc)
        else:
            stats.ttft_s = first - started if first else None
            stats.decode_s = (last - first) if first and last else None
            stats.total_s = time.perf_counter() - started
            stats_box.value = f"<div style='color:#666;font-size:85%'>{html.escape(stats.describe())}</div>"
            self.messages.append({"role": "assistant", "content": "".join(parts)})
            self.replies.append(("".join(parts), stats))
        finally:
            reply.value = _bubble(adapter or "assistant", "".join(parts), "#f5f5f5")
            self._set_busy(False)

    def _set_busy(self, busy: bool) -> None:
        self._send_button.disabled, self._cancel_button.disabled = busy, not busy

    def close(self) -> None:
        """End any reply being streamed and close the widget."""
        self.cancel()
        if self._worker is not None and self._worker is not threading.current_thread():
            self._worker.join(5)
        super().close()


def _bubble(who: str, text: str, background: str) -> str:
    return (f"<div style='background:{background};border-radius:6px;padding:4px 8px;margin:2px 0'>"
            f"<span style='color:#666;font-size:80%'>{html.escape(who)}</span><br>"
            f"<span style='white-space:pre-wrap'>{html.escape(text)}</span></div>")


# -- Launcher -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelChoice:
    """A model the Launcher offers: what to pass as ``model``, and its format (demo, gguf or hf)."""

    model: str
    kind: str


SKIP_DIRS = {".git", ".venv", "venv", "node_modules", "__pycache__", ".ipynb_checkpoints", ".tox", "site-packages"}


def find_models(roots: Sequence[Path] | None = None, *, max_depth: int = 3, limit: int = 200) -> list[ModelChoice]:
    """Demo names, then (at most ``limit``) GGUF files and Hugging Face folders under ``roots`` (default: the
    working directory and llama.cpp's model cache), then Hugging Face hub ids found in its cache."""
    found: list[ModelChoice] = []
    cwd = Path.cwd()
    for root in roots if roots is not None else [cwd, *_cache_roots()]:
        for path, kind in _scan(Path(root).expanduser(), max_depth):
            if len(found) >= limit:
                break
            shown = str(path.relative_to(cwd)) if path.is_relative_to(cwd) else str(path)
            found.append(ModelChoice(shown, kind))
    if roots is None:
        found += [ModelChoice(repo, "hf") for repo in _hub_ids()]
    return [ModelChoice(name, "demo") for name in _demo_names()] + found[:limit]


def _demo_names() -> list[str]:
    try:
        from .demo import ADAPTERS, QUANT_TYPES
    except Exception:  # noqa: BLE001 - the demo package needs its own dependencies
        return ["demo", "demo-tiny"]
    return ["demo", "demo-tiny", *(f"demo:{q}" for q in QUANT_TYPES), "demo+loras",
            *(f"demo+lora-{a}" for a in ADAPTERS)]


def _cache_roots() -> list[Path]:
    home = Path.home()
    llama = Path(os.environ.get("LLAMA_CACHE") or home / ".cache" / "llama.cpp")
    return [p for p in (llama, home / "models") if p.is_dir()]


def _scan(root: Path, max_depth: int) -> Iterable[tuple[Path, str]]:
    """GGUF files and HF folders (config.json plus weights) under ``root``, breadth first, hidden dirs skipped."""
    queue: deque[tuple[Path, int]] = deque([(root, 0)])
    visited = 0
    while queue and visited < 5000:
        folder, depth = queue.popleft()
        try:
            entries = sorted(folder.iterdir())
        except OSError:
            continue
        visited += len(entries)
        names = {e.name for e in entries}
        if "config.json" in names and any(n.endswith((".safetensors", ".bin")) for n in names):
            yield folder, "hf"
            continue
        for entry in entries:
            if entry.is_file() and entry.suffix.lower() == ".gguf" and "mmproj" not in entry.name.lower():
                yield entry, "gguf"
            elif entry.is_dir() and depth < max_depth and entry.name not in SKIP_DIRS \
                    and not entry.name.startswith("."):
                queue.append((entry, depth + 1))


def _hub_ids() -> list[str]:
    hub = Path(os.environ.get("HF_HUB_CACHE") or Path(os.environ.get("HF_HOME") or Path.home() / ".cache" /
                                                      "huggingface") / "hub")
    try:
        return sorted(p.name[len("models--"):].replace("--", "/") for p in hub.iterdir()
                      if p.name.startswith("models--"))
    except OSError:
        return []


class Launcher(W.VBox):
    """Start a server from a form: the engine (installed ones enabled, the install command shown for the
    others), the model (demo names, local GGUF files and HF folders, hub ids in the cache, or free text)
    and common options. Start shows the new server's panel; a bad choice shows servekit's error here."""

    def __init__(self, *, roots: Sequence[Path] | None = None) -> None:
        from .engines import engine_names, get_engine

        self.engine: str | None = None
        self.servers: list[Server] = []
        self.checked = threading.Event()  # set once engines and models have been looked up
        self._engines = {name: get_engine(name) for name in engine_names()}
        self._buttons = {name: W.Button(description=engine.display_name, disabled=True, tooltip="checking…")
                         for name, engine in self._engines.items()}
        for name, button in self._buttons.items():
            button.on_click(lambda _b, name=name: self.select_engine(name))
        self._engine_notes = W.HTML("<i>checking which engines are installed…</i>")
        self._model = W.Combobox(placeholder="demo, a .gguf file, a Hugging Face folder or id", ensure_option=False,
                                 description="model", layout=W.Layout(width="36em"))
        self._ctx = W.BoundedIntText(value=0, min=0, max=10_000_000, description="ctx", layout=W.Layout(width="12em"),
                                     tooltip="context length in tokens (0: the engine's default)")
        self._parallel = W.BoundedIntText(value=0, min=0, max=4096, description="parallel",
                                          layout=W.Layout(width="12em"),
                                          tooltip="concurrent sequences / slots (0: the engine's default)")
        self._lora = W.Text(placeholder="name=path, …", description="LoRA", layout=W.Layout(width="36em"))
        self._cpu = W.Checkbox(value=False, description="CPU", indent=False)
        self._start = W.Button(description="Start", button_style="success", icon="play", disabled=True)
        self._start.on_click(lambda _b: self.start())
        self._message = W.HTML()
        self._message.add_class("servekit-launcher-message")
        self._panels = W.VBox()
        super().__init__(children=[
            W.HBox([W.Label("engine"), *self._buttons.values()]), self._engine_notes, self._model,
            W.HBox([self._ctx, self._parallel, self._cpu]), self._lora, self._start, self._message, self._panels,
        ], layout=W.Layout(border="1px solid #ddd", padding="6px", width="100%"))
        self.add_class("servekit-launcher")
        self._starter: threading.Thread | None = None
        threading.Thread(target=self._look_up, args=(roots,), name="servekit-launcher-check", daemon=True).start()

    @property
    def message(self) -> str:
        """What the launcher says now (HTML): progress, or servekit's error."""
        return self._message.value

    def _look_up(self, roots: Sequence[Path] | None) -> None:
        try:
            notes = []
            for name, engine in self._engines.items():
                try:
                    availability = engine.available()
                except Exception as exc:  # noqa: BLE001 - an engine that cannot even be checked is not offered
                    availability, hint = None, f"could not check: {exc}"
                else:
                    hint = availability.install_hint
                button = self._buttons[name]
                button.disabled = not availability
                button.tooltip = (f"{engine.display_name} {availability.version or ''}".strip() if availability
                                  else hint)
                if not availability:
                    notes.append(f"<b>{html.escape(engine.display_name)}</b>: not installed — {html.escape(hint)}")
            self._engine_notes.value = "<div style='color:#666;font-size:90%'>" + "<br>".join(notes) + "</div>"
            installed = [n for n, b in self._buttons.items() if not b.disabled]
            if installed and self.engine is None:
                self.select_engine(installed[0])
            self._model.options = [choice.model for choice in find_models(roots)]
            if not self._model.value:
                self._model.value = "demo"
        finally:
            self.checked.set()

    def select_engine(self, name: str) -> None:
        """Choose the engine (one that is installed)."""
        if self._buttons[name].disabled:
            self._message.value = _error_html(ValueError(f"{self._engines[name].display_name} is not installed: "
                                                         f"{self._buttons[name].tooltip}"))
            return
        self.engine = name
        for other, button in self._buttons.items():
            button.button_style = "info" if other == name else ""
        self._start.disabled = False

    def set(self, *, model: str | None = None, ctx: int | None = None, parallel: int | None = None,
            lora: str | None = None, cpu: bool | None = None) -> None:
        """Fill in the form from code (what a person types)."""
        for field, value in ((self._model, model), (self._ctx, ctx), (self._parallel, parallel),
                             (self._lora, lora), (self._cpu, cpu)):
            if value is not None:
                field.value = value

    def options(self) -> dict[str, Any]:
        """``serve()`` keyword options from the form (0 and empty fields are left to the engine)."""
        options: dict[str, Any] = {}
        if self._ctx.value:
            options["ctx"] = int(self._ctx.value)
        if self._parallel.value:
            options["parallel"] = int(self._parallel.value)
        if self._cpu.value:
            options["cpu"] = True
        loras = [part.strip() for part in self._lora.value.split(",") if part.strip()]
        if loras:
            options["lora"] = loras
        return options

    def start(self) -> threading.Thread | None:
        """Start the chosen server in a thread (returned); its panel appears at once, the error if any here."""
        if self._starter is not None and self._starter.is_alive():
            return None
        if self.engine is None:
            self._message.value = _error_html(ValueError("Choose an installed engine first."))
            return None
        model = self._model.value.strip()
        if not model:
            self._message.value = _error_html(ValueError("Choose or type a model."))
            return None
        self._start.disabled = True
        self._message.value = f"<i>starting {html.escape(model)} on {html.escape(self.engine)} …</i>"
        self._starter = threading.Thread(target=self._launch, args=(self.engine, model, self.options()),
                                         name="servekit-launcher-start", daemon=True)
        self._starter.start()
        return self._starter

    def _launch(self, engine: str, model: str, options: dict[str, Any]) -> None:
        from .server import serve

        server = None
        try:
            server = serve(engine, model, wait=False, **options)
            self.servers.append(server)
            self._panels.children = (ServerPanel(server), *self._panels.children)
            server.wait_ready()
            self._message.value = f"<span style='color:#2e7d32'>{html.escape(server.name)} is ready.</span>"
        except Exception as exc:  # noqa: BLE001 - servekit's message, in the widget, not a traceback
            if server is not None:
                _quietly(server.stop)
            self._message.value = _error_html(exc)
        finally:
            self._start.disabled = self.engine is None

    def close(self) -> None:
        """Close the form and the panels it shows (servers keep running: stop them with their panel)."""
        for panel in self._panels.children:
            panel.close()
        super().close()


# -- composition ----------------------------------------------------------------------------------------
class Dashboard(_StaticFallback, W.VBox):
    """A server's panel above its live charts (:func:`dashboard`)."""

    def __init__(self, server: Server, *, interval: float = 1.0) -> None:
        self._init_fallback()
        self.panel = ServerPanel(server, interval=interval)
        self.metrics = LiveMetrics(server, interval=interval)
        for child in (self.panel, self.metrics):
            child._on_final.append(self._child_finished)
        super().__init__(children=[self.panel, self.metrics], layout=W.Layout(width="100%"))
        self.add_class("servekit-dashboard")

    def _child_finished(self) -> None:
        if self.panel.finished and self.metrics.finished:
            self._publish_final()

    def static_html(self) -> str:
        return self.panel.static_html() + self.metrics.static_html()

    def close(self) -> None:
        """Close panel and charts (the server keeps running)."""
        self.panel._on_final.clear()
        self.metrics._on_final.clear()
        if self._display_handles:
            self._publish_final(live=False)
        self.panel.close()
        self.metrics.close()
        super().close()


def panel_for(server: Server) -> ServerPanel:
    """The panel ``%serve`` shows for a server."""
    return ServerPanel(server)


def dashboard(server: Server) -> Dashboard:
    """Panel and live charts of one server (``server.dashboard()``)."""
    return Dashboard(server)


__all__ = ["BENCH_CHARTS", "CHARTS", "BenchChart", "ChatPanel", "Dashboard", "Launcher", "LiveMetrics", "ModelChoice", "ReplyStats",
           "ServerPanel", "dashboard", "find_models", "panel_for"]
