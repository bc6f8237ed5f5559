"""Per-request records and the summary computed from them (pure logic: no I/O, no event loop).

Definitions (times in milliseconds; a request's clock starts when the client opens its connection):

* **TTFT** — send to the first chunk that carries at least one output token.
* **ITL** — one gap *per output token* after the first chunk: a chunk that brings ``n`` tokens
  ``g`` ms after the previous token-bearing chunk contributes ``n`` gaps of ``g / n``. Chunks that
  arrive in the same read count as one arrival (a server that coalesces writes sends them together).
  Tokens that arrive bundled into the first chunk have no observable gap and contribute none.
* **TPOT** — ``(E2EL - TTFT) / (output_tokens - 1)`` per request (needs 2+ tokens).
* **E2EL** — send to the last byte of the answer.
* Token counts come from the server: per chunk where the engine reports them (``per-chunk``), else
  the final ``usage`` (``final-usage``; ITL then assumes one token per text chunk), else one token
  per text chunk (``estimated``).

Only completed requests (``status == "ok"``) and no warm-up requests enter latencies and throughputs.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from ..errors import InvalidBenchmark

PERCENTILES: tuple[tuple[str, float], ...] = (("mean", math.nan), ("median", 50.0), ("p90", 90.0), ("p99", 99.0))
LATENCY_METRICS: tuple[str, ...] = ("ttft", "tpot", "itl", "e2el")
SLO_KEYS: tuple[str, ...] = ("ttft", "tpot", "e2el")
OK, ERROR, TIMEOUT, CANCELLED = "ok", "error", "timeout", "cancelled"


@dataclass
class RequestRecord:
    """What one request did. Times ``*_s`` are seconds since the run started; latencies are in ms."""

    index: int
    warmup: bool = False
    user: int | None = None  # the closed-loop user that sent it
    scheduled_s: float = math.nan  # when the load shape wanted it sent (open loop: its arrival)
    sent_s: float = math.nan
    end_s: float = math.nan
    status: str = OK
    error: str | None = None
    http_status: int | None = None
    ttft_ms: float | None = None
    tpot_ms: float | None = None
    e2el_ms: float | None = None
    itl_ms: list[float] = field(default_factory=list)
    prompt_tokens: int | None = None
    output_tokens: int | None = None
    expected_prompt_tokens: int | None = None  # what the workload asked for, where it knows
    first_chunk_tokens: int | None = None
    chunks: int = 0
    token_counts: str = "per-chunk"  # per-chunk | final-usage | estimated
    finish_reason: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == OK

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RequestRecord:
        known = {f.name for f in fields(cls)}
        values = {k: _nan_to_none(v) for k, v in data.items() if k in known}
        for key in ("scheduled_s", "sent_s", "end_s"):
            if values.get(key) is None:
                values[key] = math.nan
        values["itl_ms"] = list(values.get("itl_ms") or [])
        return cls(**values)


def _nan_to_none(value: Any) -> Any:
    return None if isinstance(value, float) and math.isnan(value) else value


# -- one request's chunks -> its latencies ------------------------------------------------------
def per_token_gaps(times: Sequence[float], counts: Sequence[int]) -> list[float]:
    """Inter-token gaps, one per token after the first chunk, from token-bearing chunks.

    ``times[i]`` is when chunk ``i`` arrived and ``counts[i]`` the cumulative output tokens it brought
    the total to. A chunk bringing ``n`` tokens ``g`` after the previous one gives ``n`` gaps of ``g/n``;
    a chunk that brings none adds no gap (its time folds into the next token-bearing chunk's gap).
    """
    if len(times) != len(counts):
        raise ValueError("times and counts must have the same length")
    gaps: list[float] = []
    last_time: float | None = None
    last_count = 0
    for time_, count in zip(times, counts):
        new = count - last_count
        if new <= 0:
            continue
        if last_time is not None:
            gaps.extend([(time_ - last_time) / new] * new)
        last_time, last_count = time_, count
    return gaps


@dataclass
class Timeline:
    """Collects one streamed answer: chunk arrival times, cumulative token counts, usage, errors."""

    sent: float  # time.perf_counter() when the request left
    times: list[float] = field(default_factory=list)  # token-bearing chunks only
    counts: list[int] = field(default_factory=list)
    chunks: int = 0
    usage: dict[str, Any] | None = None
    per_chunk: bool = True  # every token-bearing chunk said how many tokens it brought
    finish_reason: str | None = None
    error: str | None = None
    last: float | None = None  # arrival of the last chunk of any kind

    @property
    def tokens(self) -> int:
        return self.counts[-1] if self.counts else 0

    def add(self, now: float, chunk: Mapping[str, Any], reported: int | None) -> None:
        """One decoded chunk that arrived at ``now``; ``reported``: the engine's running token count, if any."""
        self.chunks += 1
        self.last = now
        if "error" in chunk:
            self.error = _error_text(chunk["error"])
            return
        usage = chunk.get("usage")
        if usage:
            self.usage = usage
        choices = chunk.get("choices") or ()
        if choices and choices[0].get("finish_reason"):
            self.finish_reason = choices[0]["finish_reason"]
        if reported is None:
            if not _has_output(choices):
                return
            self.per_chunk = False
            reported = self.tokens + 1
        if reported > self.tokens:
            if self.times and self.times[-1] == now:  # chunks read together arrived together: one arrival
                self.counts[-1] = int(reported)
            else:
                self.times.append(now)
                self.counts.append(int(reported))


def _has_output(choices: Sequence[Mapping[str, Any]]) -> bool:
    """True when a chunk's first choice carries generated text (content, reasoning, tool calls, or text)."""
    if not choices:
        return False
    choice = choices[0]
    if choice.get("text"):
        return True
    delta = choice.get("delta") or {}
    return bool(delta.get("content") or delta.get("reasoning_content") or delta.get("reasoning")
                or delta.get("tool_calls"))


def _error_text(error: Any) -> str:
    if isinstance(error, Mapping):
        return str(error.get("message") or error)
    return str(error)


def finish_record(record: RequestRecord, timeline: Timeline, end: float) -> None:
    """Fill a completed request's latencies and token counts from its timeline (``end``: perf_counter)."""
    record.chunks = timeline.chunks
    record.finish_reason = timeline.finish_reason
    record.e2el_ms = (end - timeline.sent) * 1000.0
    usage = timeline.usage or {}
    record.prompt_tokens = usage.get("prompt_tokens")
    final = usage.get("completion_tokens")
    record.output_tokens = int(final) if final is not None else timeline.tokens
    if timeline.per_chunk and timeline.counts:
        record.token_counts = "per-chunk"
    else:
        record.token_counts = "final-usage" if final is not None else "estimated"
    if timeline.times:
        record.ttft_ms = (timeline.times[0] - timeline.sent) * 1000.0
        record.first_chunk_tokens = timeline.counts[0]
        record.itl_ms = [gap * 1000.0 for gap in per_token_gaps(timeline.times, timeline.counts)]
    if record.ttft_ms is not None and record.output_tokens and record.output_tokens > 1:
        record.tpot_ms = (record.e2el_ms - record.ttft_ms) / (record.output_tokens - 1)


# -- many records -> the summary ----------------------------------------------------------------
def check_slos(slos: Mapping[str, float] | None) -> dict[str, float]:
    """SLOs as ``{"ttft": ms, "tpot": ms, "e2el": ms}`` (any subset); raises for unknown keys or bad values."""
    if not slos:
        return {}
    out = {}
    for key, value in slos.items():
        if key not in SLO_KEYS:
            raise InvalidBenchmark(f"Unknown SLO {key!r}: use ttft, tpot and/or e2el, each in milliseconds.")
        if not isinstance(value, (int, float)) or value <= 0:
            raise InvalidBenchmark(f"SLO {key} must be a positive number of milliseconds, got {value!r}.")
        out[key] = float(value)
    return out


def meets_slos(record: RequestRecord, slos: Mapping[str, float]) -> bool:
    """True for a completed request within every SLO (a TPOT SLO is met by a 1-token answer)."""
    if not record.ok:
        return False
    for key, limit in slos.items():
        value = getattr(record, f"{key}_ms")
        if value is None:
            if key == "tpot":
                continue
            return False
        if value > limit:
            return False
    return True


def stats(values: Sequence[float]) -> dict[str, float]:
    """mean, median, p90 and p99 (NaN when there are no values); percentiles interpolate linearly between
    the closest ranks, as numpy.percentile does by default (no numpy import: the client stays light)."""
    if not values:
        return {name: math.nan for name, _ in PERCENTILES}
    ordered = sorted(values)
    return {name: math.fsum(ordered) / len(ordered) if math.isnan(q) else percentile(ordered, q)
            for name, q in PERCENTILES}


def percentile(ordered: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) of sorted values, linear between closest ranks."""
    rank = q / 100.0 * (len(ordered) - 1)
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def measured(records: Iterable[RequestRecord]) -> list[RequestRecord]:
    """The records that count: every request except warm-up ones."""
    return [r for r in records if not r.warmup]


def window(records: Sequence[RequestRecord]) -> float:
    """Seconds from the first measured send to the last measured end (0 when nothing was measured)."""
    sends = [r.sent_s for r in records if not math.isnan(r.sent_s)]
    ends = [r.end_s for r in records if not math.isnan(r.end_s)]
    if not sends or not ends:
        return 0.0
    return max(0.0, max(ends) - min(sends))


def summarize(records: Sequence[RequestRecord], slos: Mapping[str, float] | None = None) -> dict[str, Any]:
    """The run's summary from its records: counts, throughputs, goodput and latency statistics (ms)."""
    slos = check_slos(slos)
    counted = measured(records)
    done = [r for r in counted if r.ok]
    seconds = window(counted)
    output_tokens = sum(r.output_tokens or 0 for r in done)
    prompt_tokens = sum(r.prompt_tokens or 0 for r in done)
    summary: dict[str, Any] = {
        "requests": len(counted),
        "completed": len(done),
        "failed": sum(1 for r in counted if r.status in (ERROR, TIMEOUT)),
        "cancelled": sum(1 for r in counted if r.status == CANCELLED),
        "warmup_requests": len(records) - len(counted),
        "duration_s": seconds,
        "total_input_tokens": prompt_tokens,
        "total_output_tokens": output_tokens,
        "request_throughput": _rate(len(done), seconds),
        "output_throughput": _rate(output_tokens, seconds),
        "total_token_throughput": _rate(prompt_tokens + output_tokens, seconds),
    }
    if slos:
        good = sum(1 for r in done if meets_slos(r, slos))
        summary["goodput"] = _rate(good, seconds)
        summary["goodput_fraction"] = good / len(done) if done else math.nan
        summary["slos"] = dict(slos)
    samples = {
        "ttft": [r.ttft_ms for r in done if r.ttft_ms is not None],
        "tpot": [r.tpot_ms for r in done if r.tpot_ms is not None],
        "itl": [gap for r in done for gap in r.itl_ms],
        "e2el": [r.e2el_ms for r in done if r.e2el_ms is not None],
    }
    for metric in LATENCY_METRICS:
        for name, value in stats(samples[metric]).items():
            summary[f"{metric}_{name}_ms"] = value
    summary["max_in_flight"] = max_in_flight(counted)
    summary["errors"] = error_counts(counted)
    return summary


def _rate(count: float, seconds: float) -> float:
    return count / seconds if seconds > 0 else math.nan


def max_in_flight(records: Sequence[RequestRecord]) -> int:
    """The most requests that were between send and end at one moment."""
    edges = [(r.sent_s, 1) for r in records if not math.isnan(r.sent_s) and not math.isnan(r.end_s)]
    edges += [(r.end_s, -1) for r in records if not math.isnan(r.sent_s) and not math.isnan(r.end_s)]
    peak = level = 0
    for _, step in sorted(edges, key=lambda edge: (edge[0], edge[1])):
        level += step
        peak = max(peak, level)
    return peak


def error_counts(records: Iterable[RequestRecord], top: int = 5) -> dict[str, int]:
    """The most frequent error messages of failed requests, with their counts."""
    counts: dict[str, int] = {}
    for record in records:
        if record.status in (ERROR, TIMEOUT) and record.error:
            counts[record.error] = counts.get(record.error, 0) + 1
    return dict(sorted(counts.items(), key=lambda item: -item[1])[:top])
