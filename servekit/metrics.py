"""Scrape an engine's Prometheus ``/metrics``, give the numbers servekit's names, and record them over time.

One scrape: :func:`scrape` / :func:`parse` return a :class:`MetricsSnapshot` whose ``values`` and
``histograms`` carry servekit's normalised names (each engine maps them to its own families in its
``metric_names``): ``requests_running``, ``requests_waiting``, ``kv_cache_usage`` (0..1),
``prompt_tokens_total``, ``generation_tokens_total``, ``requests_total`` and the histograms
``ttft_seconds``, ``itl_seconds``, ``e2e_seconds``.

Over time: :class:`MetricsRecorder` scrapes in one background thread (default once a second) and keeps a
bounded history; :meth:`MetricsRecorder.history` returns it as a pandas DataFrame with the same
columns (:data:`COLUMNS`) for every engine. A value an engine does not expose is NaN, never guessed.
docs/metrics.md says, per engine, which column is measured, derived, read from ``/slots`` or absent.

=========================== ===========================================================================
column                      meaning
=========================== ===========================================================================
time                        local wall-clock time when the scrape began (``datetime``)
elapsed_s                   seconds since the recorder started (monotonic clock)
requests_running            requests being processed now (gauge)
requests_waiting            requests queued, not yet scheduled (gauge)
kv_cache_usage              share of the KV cache held by running requests, 0..1 (llama.cpp: ``/slots``)
kv_cache_tokens             tokens held in the KV cache by running requests (SGLang; llama.cpp: ``/slots``)
slots_busy, slots_total     llama.cpp only (``/slots``): slots processing a request, and all slots
slot_context_max            llama.cpp only: the fullest busy slot's tokens / its context size, 0..1
prompt_tokens_total         the engine's prompt-token counter
generation_tokens_total     the engine's generated-token counter
requests_finished_total     the engine's finished-request counter
prompt_tokens_per_s         derived: prompt-token counter increase / seconds since the previous sample
generation_tokens_per_s     derived: generated tokens / second since the previous sample (see docs)
requests_per_s              derived: finished requests / second since the previous sample
ttft_p50, ttft_p90, ttft_p99  time to first token (s), quantiles over the last ``window`` seconds
itl_p50, itl_p90, itl_p99   inter-token latency (s), same window
e2e_p50, e2e_p90, e2e_p99   end-to-end request latency (s), same window
latency_window_requests     number of TTFT observations in that window (how much the quantiles rest on)
scrape_ms                   how long the scrape (``/metrics`` plus any ``/slots``) took
error                       None, or why this sample failed (its other values are then NaN)
=========================== ===========================================================================

Counters become rates robustly: a counter that goes down means the engine restarted, and that
interval's increase is the new value (never negative). Quantiles come from the histograms' bucket
increases between samples, summed over the window (a reset is handled the same way), and are
interpolated inside the bucket as PromQL's ``histogram_quantile`` does.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import httpx
    import pandas

    from .engines.base import Engine

log = logging.getLogger(__name__)

QUANTILES: tuple[tuple[str, float], ...] = (("p50", 0.5), ("p90", 0.9), ("p99", 0.99))
LATENCIES: tuple[tuple[str, str], ...] = (("ttft", "ttft_seconds"), ("itl", "itl_seconds"), ("e2e", "e2e_seconds"))
GAUGES: tuple[str, ...] = ("requests_running", "requests_waiting", "kv_cache_usage", "kv_cache_tokens",
                           "slots_busy", "slots_total", "slot_context_max")
COUNTERS: tuple[tuple[str, str, str], ...] = (  # column, normalised counter, rate column
    ("prompt_tokens_total", "prompt_tokens_total", "prompt_tokens_per_s"),
    ("generation_tokens_total", "generation_tokens_total", "generation_tokens_per_s"),
    ("requests_finished_total", "requests_total", "requests_per_s"),
)
COLUMNS: tuple[str, ...] = (
    "time", "elapsed_s", *GAUGES, *(c[0] for c in COUNTERS), *(c[2] for c in COUNTERS),
    *(f"{short}_{suffix}" for short, _ in LATENCIES for suffix, _ in QUANTILES),
    "latency_window_requests", "scrape_ms", "error",
)
# Optional names that only feed generation_tokens_per_s, for engines whose generated-token counter
# moves only when a request ends (generated so far = max(counter, live counter) + in flight):
LIVE_GENERATION = "generation_tokens_live_total"  # a counter that advances during generation (SGLang)
IN_FLIGHT_GENERATION = "generation_tokens_in_flight"  # generated by running requests, not yet counted (llama.cpp)


@dataclass(frozen=True)
class Histogram:
    """A Prometheus histogram summed over its label sets: cumulative ``buckets`` of (upper bound, count)."""

    buckets: tuple[tuple[float, float], ...]
    count: float
    sum: float

    @property
    def mean(self) -> float:
        return self.sum / self.count if self.count else math.nan

    def quantile(self, q: float) -> float:
        """Estimate a quantile by linear interpolation inside the bucket (as PromQL's histogram_quantile)."""
        if not self.count or not self.buckets:
            return math.nan
        rank = q * self.count
        lower_bound, lower_count = 0.0, 0.0
        for bound, cumulative in self.buckets:
            if cumulative >= rank:
                if math.isinf(bound):
                    return lower_bound
                share = (rank - lower_count) / (cumulative - lower_count) if cumulative > lower_count else 0.0
                return lower_bound + (bound - lower_bound) * share
            lower_bound, lower_count = bound, cumulative
        return lower_bound

    def minus(self, earlier: Histogram) -> Histogram | None:
        """The observations made since ``earlier``; None when this histogram was reset (or re-bucketed) since."""
        if [b for b, _ in self.buckets] != [b for b, _ in earlier.buckets] or self.count < earlier.count:
            return None
        buckets = tuple((b, now - then) for (b, now), (_, then) in zip(self.buckets, earlier.buckets, strict=True))
        if any(n < 0 for _, n in buckets):
            return None
        return Histogram(buckets=buckets, count=self.count - earlier.count, sum=self.sum - earlier.sum)

    def plus(self, other: Histogram) -> Histogram:
        """Both histograms' observations together (same buckets)."""
        buckets = tuple((b, n + m) for (b, n), (_, m) in zip(self.buckets, other.buckets, strict=True))
        return Histogram(buckets=buckets, count=self.count + other.count, sum=self.sum + other.sum)


@dataclass(frozen=True)
class MetricsSnapshot:
    """One scrape: normalised ``values`` and ``histograms``, plus the raw parsed ``families``."""

    values: Mapping[str, float]
    histograms: Mapping[str, Histogram]
    families: Mapping[str, Any] = field(repr=False)
    text: str = field(repr=False, default="")

    def __getitem__(self, name: str) -> float:
        return self.values[name]

    def get(self, name: str, default: float | None = None) -> float | None:
        return self.values.get(name, default)


def _family_key(name: str) -> str:
    return name.removesuffix("_total")


def _selector(engine_name: str) -> tuple[str, dict[str, str]]:
    """``family{a="x",b="y"}`` -> (family, {a: x, b: y}); a plain family name has no label filter."""
    family, _, rest = engine_name.partition("{")
    labels = {}
    for pair in filter(None, (p.strip() for p in rest.rstrip("}").split(","))):
        key, _, value = pair.partition("=")
        labels[key.strip()] = value.strip().strip('"')
    return family, labels


def parse(text: str, metric_names: Mapping[str, str]) -> MetricsSnapshot:
    """Parse Prometheus exposition text and map it through ``metric_names`` (normalised -> engine family).

    An engine family may carry a label filter, ``family{label="value"}``; label sets are summed."""
    from prometheus_client.parser import text_string_to_metric_families

    families = {_family_key(f.name): f for f in text_string_to_metric_families(text)}
    values: dict[str, float] = {}
    histograms: dict[str, Histogram] = {}
    for normal, engine_name in metric_names.items():
        family_name, labels = _selector(engine_name)
        family = families.get(_family_key(family_name))
        if family is None:
            continue
        samples = [s for s in family.samples if all(s.labels.get(k) == v for k, v in labels.items())]
        if family.type == "histogram":
            histograms[normal] = _histogram(samples)
        else:
            values[normal] = float(sum(s.value for s in samples if not s.name.endswith("_created")))
    return MetricsSnapshot(values=values, histograms=histograms, families=families, text=text)


def _histogram(samples: Sequence[Any]) -> Histogram:
    buckets: dict[float, float] = {}
    count = total = 0.0
    for sample in samples:
        if sample.name.endswith("_bucket"):
            bound = float(sample.labels["le"])
            buckets[bound] = buckets.get(bound, 0.0) + sample.value
        elif sample.name.endswith("_count"):
            count += sample.value
        elif sample.name.endswith("_sum"):
            total += sample.value
    return Histogram(buckets=tuple(sorted(buckets.items())), count=count, sum=total)


def fetch_text(http: httpx.Client, url: str = "/metrics") -> str:
    """GET ``/metrics`` with ``http``; a clear error when the engine answers otherwise than 200."""
    from .errors import ServekitError

    response = http.get(url)
    if response.status_code != 200:
        raise ServekitError(
            f"{response.request.url} answered {response.status_code}: the engine may need metrics switched on "
            "(metrics=True)."
        )
    return response.text


def scrape(url: str, metric_names: Mapping[str, str], headers: Mapping[str, str] | None = None,
           timeout: float = 10.0) -> MetricsSnapshot:
    """GET ``url + /metrics`` and parse it."""
    import httpx

    with httpx.Client(headers=dict(headers or {}), timeout=timeout) as http:
        return parse(fetch_text(http, url.rstrip("/") + "/metrics"), metric_names)


# -- turning samples into rates and windowed quantiles ----------------------------------------------
class _CounterRate:
    """Per-interval increases of one counter, robust to resets.

    ``live`` is what the engine has generated so far by its own count (the counter, or the counter plus
    work still in flight); it is tracked by a high-water mark so that a dip between two reads (a request
    finishing between ``/metrics`` and ``/slots``) is neither negative nor counted twice. A counter that
    goes down means a restart: that interval's increase is the new value.
    """

    def __init__(self) -> None:
        self._counter: float | None = None
        self._high = 0.0

    def step(self, counter: float, live: float) -> float:
        if self._counter is not None and counter < self._counter:
            self._high = 0.0  # the engine restarted: everything counted now happened since
        self._counter = counter
        increase = max(0.0, live - self._high)
        self._high = max(self._high, live)
        return increase


class _HistogramWindow:
    """The observations of one histogram over the last ``window`` seconds, from increases between samples."""

    def __init__(self, window: float) -> None:
        self.window = window
        self._started = False
        self._previous: Histogram | None = None
        self._increases: deque[tuple[float, Histogram]] = deque()

    def step(self, histogram: Histogram | None, stamp: float) -> Histogram | None:
        """Add this sample; return the window's observations (None when nothing was observed in it).

        The first sample only sets the baseline: what it holds was observed before the recorder began."""
        if histogram is not None and self._started:
            increase = histogram.minus(self._previous) if self._previous is not None else None
            self._increases.append((stamp, increase if increase is not None else histogram))  # None: reset
        self._started, self._previous = True, histogram
        while self._increases and self._increases[0][0] <= stamp - self.window:
            self._increases.popleft()
        total: Histogram | None = None
        for _, increase in self._increases:
            if total is not None and [b for b, _ in total.buckets] != [b for b, _ in increase.buckets]:
                total = None  # re-bucketed (an engine restarted with other bounds): keep only what is newer
            total = increase if total is None else total.plus(increase)
        return total if total is not None and total.count > 0 else None


class Deriver:
    """Turns successive (snapshot, extra values, monotonic stamp) into history rows; no I/O, no threads.

    The first sample has no rates and no quantiles (nothing to compare with); a counter or histogram
    that first appears later counts from zero (Prometheus creates a labelled series on its first use).
    """

    def __init__(self, window: float = 10.0) -> None:
        self.window = window
        self._last_stamp: float | None = None
        self._counters = {column: _CounterRate() for column, _, _ in COUNTERS}
        self._histograms = {short: _HistogramWindow(window) for short, _ in LATENCIES}

    def row(self, snapshot: MetricsSnapshot, extra: Mapping[str, float], stamp: float) -> dict[str, Any]:
        """Measured gauges and counters, derived rates and windowed quantiles for one sample."""
        values = {**snapshot.values, **{k: float(v) for k, v in extra.items() if v is not None and not math.isnan(v)}}
        row: dict[str, Any] = {name: values.get(name, math.nan) for name in GAUGES}
        first = self._last_stamp is None
        seconds = stamp - self._last_stamp if self._last_stamp is not None else math.nan
        for column, normal, rate_column in COUNTERS:
            row[column] = values.get(normal, math.nan)
            increase = self._counters[column].step(*self._counter_and_live(column, normal, values))
            present = normal in values or (column == "generation_tokens_total" and LIVE_GENERATION in values)
            row[rate_column] = increase / seconds if present and not first and seconds > 0 else math.nan
        windows = {short: self._histograms[short].step(snapshot.histograms.get(normal), stamp)
                   for short, normal in LATENCIES}
        for short, window in windows.items():
            for suffix, q in QUANTILES:
                row[f"{short}_{suffix}"] = window.quantile(q) if window is not None and not first else math.nan
        ttft_present = "ttft_seconds" in snapshot.histograms and not first
        row["latency_window_requests"] = (windows["ttft"].count if windows["ttft"] else 0.0) if ttft_present else math.nan
        self._last_stamp = stamp
        return row

    @staticmethod
    def _counter_and_live(column: str, normal: str, values: Mapping[str, float]) -> tuple[float, float]:
        if column != "generation_tokens_total":
            value = values.get(normal, 0.0)
            return value, value
        counter = values.get(normal, 0.0)
        return counter, max(counter, values.get(LIVE_GENERATION, 0.0)) + values.get(IN_FLIGHT_GENERATION, 0.0)


# -- the recorder ----------------------------------------------------------------------------------
Row = dict[str, Any]


class MetricsRecorder:
    """Scrape in one background thread, derive rates and windowed quantiles, keep a bounded history.

    ``scrape`` returns one :class:`MetricsSnapshot` (e.g. ``server.metrics``); ``extra`` returns more
    numbers for the same sample, keyed by column or by the generated-token helpers (llama.cpp's
    ``/slots``). Every ``interval`` seconds the thread samples, appends a row (at most ``max_rows``
    are kept) and calls each subscriber with it. It never raises: a failed sample is a row with its
    ``error``; it stops when :meth:`stop` is called or when ``should_continue()`` returns False.
    ``on_stop`` runs once when the thread ends (to close a connection).
    """

    def __init__(self, scrape: Callable[[], MetricsSnapshot], extra: Callable[[], Mapping[str, float]] | None = None,
                 *, interval: float = 1.0, window: float = 10.0, max_rows: int = 3600,
                 should_continue: Callable[[], bool] | None = None, on_stop: Callable[[], None] | None = None,
                 clock: Callable[[], float] = time.monotonic, name: str = "") -> None:
        if interval <= 0 or window <= 0 or max_rows < 1:
            raise ValueError("interval and window must be positive and max_rows at least 1")
        self.interval, self.window, self.name = interval, window, name
        self._scrape, self._extra, self._should_continue, self._on_stop = scrape, extra, should_continue, on_stop
        self._clock = clock
        self._rows: deque[Row] = deque(maxlen=max_rows)
        self._lock = threading.Lock()
        self._sample_lock = threading.Lock()
        self._subscribers: list[Callable[[Row], None]] = []
        self._deriver = Deriver(window)
        self._started_at: float | None = None
        self._stopping = threading.Event()
        self._sampled = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def for_engine(cls, engine: Engine, url: str, *, headers: Mapping[str, str] | None = None,
                   command: Sequence[str] = (), timeout: float = 5.0, **options: Any) -> MetricsRecorder:
        """A recorder for a server at ``url`` run by ``engine``: one kept-alive connection for ``/metrics``
        and the engine's :meth:`extra_metrics`; ``command`` is the server's command line when known."""
        source = _HttpSource(engine, url, headers or {}, tuple(command), timeout)
        return cls(source.snapshot, source.extra, on_stop=source.close, **options)

    # -- lifecycle --------------------------------------------------------------------------------
    def start(self) -> MetricsRecorder:
        """Start the sampling thread (once; a second call does nothing)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"servekit-metrics-{self.name}", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop sampling and wait for the thread: at once between samples, at most ``timeout`` s mid-scrape."""
        self._stopping.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def wait_for_first_sample(self, timeout: float) -> bool:
        """Wait at most ``timeout`` s until the history holds a row; True once it does."""
        return self._sampled.wait(timeout)

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the thread to end by itself (``should_continue`` said no); True once it has."""
        if self._thread is not None:
            self._thread.join(timeout)
        return not self.running

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def __enter__(self) -> MetricsRecorder:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        try:
            next_at = self._clock()
            while not self._stopping.is_set() and self._keep_going():
                self.sample()
                next_at = max(next_at + self.interval, self._clock())  # no burst of catch-up samples after a stall
                self._stopping.wait(max(0.0, next_at - self._clock()))
        finally:
            self._stopping.set()
            if self._on_stop is not None:
                _quietly(self._on_stop)

    def _keep_going(self) -> bool:
        if self._should_continue is None:
            return True
        try:
            return bool(self._should_continue())
        except Exception:  # noqa: BLE001 - the thread must not die; a check that fails means stop
            log.debug("should_continue failed: stopping the recorder", exc_info=True)
            return False

    # -- sampling ---------------------------------------------------------------------------------
    def sample(self) -> Row:
        """Take one sample now, append it and notify subscribers; never raises (see ``error``)."""
        with self._sample_lock:
            row = self._take()
            with self._lock:
                self._rows.append(row)
                subscribers = list(self._subscribers)
            self._sampled.set()
        for callback in subscribers:
            _quietly(callback, row)
        return row

    def _take(self) -> Row:
        wall, stamp = time.time(), self._clock()
        if self._started_at is None:
            self._started_at = stamp
        errors: list[str] = []
        snapshot: MetricsSnapshot | None = None
        extra: Mapping[str, float] = {}
        try:
            snapshot = self._scrape()
        except Exception as exc:  # noqa: BLE001 - recorded in the row, the recorder goes on
            errors.append(_describe(exc))
        if snapshot is not None and self._extra is not None:
            try:
                extra = self._extra()
            except Exception as exc:  # noqa: BLE001
                errors.append("extra: " + _describe(exc))
        took = (self._clock() - stamp) * 1000.0
        row: Row = {name: math.nan for name in COLUMNS}
        if snapshot is not None:
            try:
                row.update(self._deriver.row(snapshot, extra, stamp))
            except Exception as exc:  # noqa: BLE001 - a malformed sample must not stop the thread
                errors.append("derive: " + _describe(exc))
        row.update(time=datetime.fromtimestamp(wall), elapsed_s=stamp - self._started_at, scrape_ms=took,
                   error="; ".join(errors) or None)
        return row

    # -- reading ----------------------------------------------------------------------------------
    def subscribe(self, callback: Callable[[Row], None]) -> Callable[[], None]:
        """Call ``callback(row)`` after each sample, from the recorder's thread; returns an unsubscribe function."""
        with self._lock:
            self._subscribers.append(callback)

        def unsubscribe() -> None:
            with self._lock:
                if callback in self._subscribers:
                    self._subscribers.remove(callback)

        return unsubscribe

    def rows(self) -> list[Row]:
        """A copy of the history, oldest first (plain dicts keyed by :data:`COLUMNS`)."""
        with self._lock:
            return [dict(row) for row in self._rows]

    def latest(self) -> Row | None:
        with self._lock:
            return dict(self._rows[-1]) if self._rows else None

    def history(self) -> pandas.DataFrame:
        """The history as a DataFrame with exactly :data:`COLUMNS` (see the module docstring)."""
        import pandas as pd

        frame = pd.DataFrame.from_records(self.rows(), columns=list(COLUMNS))
        frame["time"] = pd.to_datetime(frame["time"])
        return frame

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<MetricsRecorder {self.name!r} {state} every {self.interval:g} s, {len(self._rows)} rows>"


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".strip()


def _quietly(function: Callable[..., Any], *args: Any) -> None:
    try:
        function(*args)
    except Exception:  # noqa: BLE001 - a subscriber's bug must not stop the recorder
        log.warning("servekit metrics callback %r failed", function, exc_info=True)


class _HttpSource:
    """``/metrics`` and the engine's extra samples over one kept-alive connection, opened on first use."""

    def __init__(self, engine: Engine, url: str, headers: Mapping[str, str], command: tuple[str, ...],
                 timeout: float) -> None:
        self._engine, self._url, self._headers, self._command, self._timeout = engine, url, headers, command, timeout
        self._http: httpx.Client | None = None

    def _client(self) -> httpx.Client:
        if self._http is None:
            import httpx

            self._http = httpx.Client(base_url=self._url, headers=dict(self._headers), timeout=self._timeout)
        return self._http

    def snapshot(self) -> MetricsSnapshot:
        return parse(fetch_text(self._client()), self._engine.metric_names)

    def extra(self) -> Mapping[str, float]:
        return self._engine.extra_metrics(self._client(), self._command)

    def close(self) -> None:
        if self._http is not None:
            self._http.close()
            self._http = None
