"""Sweeps over concurrency levels or request rates (one or several servers), saturation detection, and the
throughput–latency figure."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..errors import InvalidBenchmark, ServekitError
from .results import BenchResult

if TYPE_CHECKING:
    import pandas as pd
    import plotly.graph_objects as go

MIN_SCALING = 0.25  # a step that adds load but gains less than 25 % of the proportional throughput ...
MIN_LATENCY_RISE = 0.25  # ... while the median E2E latency rises by more than 25 % is past saturation
_SUMMARY_SKIPPED = ("errors", "slos")


def as_servers(servers: Any) -> list[tuple[str, Any]]:
    """(label, server) pairs from one server, a list of them, or a ``{label: server}`` mapping."""
    if isinstance(servers, Mapping):
        pairs = [(str(k), v) for k, v in servers.items()]
    elif isinstance(servers, (list, tuple)):
        pairs = [(str(getattr(s, "name", None) or getattr(s, "model", "server")), s) for s in servers]
    else:
        pairs = [(str(getattr(servers, "name", None) or getattr(servers, "model", "server")), servers)]
    if not pairs:
        raise InvalidBenchmark("Give at least one server to sweep.")
    labels = [label for label, _ in pairs]
    if len(set(labels)) != len(labels):
        raise InvalidBenchmark(f"Two servers share a label ({labels}): pass {{label: server}} to tell them apart.")
    return pairs


def sweep_points(concurrency: Sequence[int] | None, rates: Sequence[float] | None) -> tuple[str, list[float]]:
    """("concurrency" | "rate", the load levels in the order given)."""
    if (concurrency is None) == (rates is None):
        raise InvalidBenchmark("Sweep over concurrency=[...] or over rates=[...] (one of them).")
    kind, values = ("concurrency", concurrency) if concurrency is not None else ("rate", rates)
    if isinstance(values, (int, float)) or not values:
        raise InvalidBenchmark(f"{kind} must be a non-empty list of load levels, e.g. [1, 2, 4, 8].")
    return kind, list(values)  # type: ignore[arg-type]


def summary_row(label: str, engine: str, kind: str, level: float, result: BenchResult,
                cap: int | None = None) -> dict[str, Any]:
    """One sweep row: which server and load, then the run's summary."""
    row: dict[str, Any] = {"server": label, "engine": engine, "load": kind,
                           "concurrency": int(level) if kind == "concurrency" else cap,
                           "rate": float(level) if kind == "rate" else None}
    row.update({k: v for k, v in result.summary.items() if k not in _SUMMARY_SKIPPED})
    row["interrupted"] = result.interrupted
    row["aborted"] = result.aborted
    return row


def run_sweep(pairs: Sequence[tuple[str, Any]], kind: str, levels: Sequence[float],
              run_point: Callable[[str, Any, float], BenchResult], engine_name: Callable[[Any], str],
              cap: int | None = None, min_scaling: float = MIN_SCALING,
              min_latency_rise: float = MIN_LATENCY_RISE) -> pd.DataFrame:
    """Every level on every server, in turn; stops at an interrupt and returns what was measured."""
    import pandas as pd

    rows: list[dict[str, Any]] = []
    stop = False
    for label, server in pairs:
        for level in levels:
            try:
                result = run_point(label, server, level)
            except KeyboardInterrupt:  # between two points: keep what was measured
                stop = True
                break
            except ServekitError as exc:  # this server cannot go on (it died, say): note it, go to the next
                rows.append({"server": label, "engine": engine_name(server), "load": kind, kind: level,
                             "interrupted": False, "aborted": str(exc)})
                break
            rows.append(summary_row(label, engine_name(server), kind, level, result, cap))
            if result.interrupted:
                stop = True
                break
        if stop:
            break
    frame = pd.DataFrame(rows)
    return mark_saturation(frame, min_scaling, min_latency_rise) if rows else frame


def mark_saturation(frame: pd.DataFrame, min_scaling: float = MIN_SCALING,
                    min_latency_rise: float = MIN_LATENCY_RISE, throughput: str = "output_throughput",
                    latency: str = "e2el_median_ms") -> pd.DataFrame:
    """Add ``scaling`` and ``saturated`` columns, per server in load order.

    ``scaling`` = (throughput gain) / (load gain) from the previous level: 1 is perfect scaling, 0 none.
    A level is ``saturated`` when its scaling is below ``min_scaling`` while ``latency`` rose by more
    than ``min_latency_rise`` — throughput stopped rising, latency kept climbing. Partial points
    (interrupted or aborted runs) are never judged. ``frame.attrs["saturation"]`` maps each server to
    its first saturated level (None if none) and ``frame.attrs["knee"]`` to the level before it.
    """
    frame = frame.copy()
    frame["scaling"] = math.nan
    frame["saturated"] = False
    first: dict[str, float | None] = {}
    knee: dict[str, float | None] = {}
    for label, group in frame.groupby("server", sort=False):
        level_col = group["load"].iloc[0]
        ordered = group.sort_values(level_col)
        previous = None
        first[label], knee[label] = None, None
        for index, row in ordered.iterrows():
            if _is_partial(row):
                continue
            if previous is not None:
                scaling, rose = _step(previous, row, level_col, throughput, latency)
                frame.at[index, "scaling"] = scaling
                if scaling < min_scaling and rose > min_latency_rise:
                    frame.at[index, "saturated"] = True
                    if first[label] is None:
                        first[label], knee[label] = row[level_col], previous[level_col]
            previous = row
    frame.attrs["saturation"] = first
    frame.attrs["knee"] = knee
    return frame


def _is_partial(row: Any) -> bool:
    return bool(row.get("interrupted")) or bool(row.get("aborted"))


def _step(previous: Any, row: Any, level_col: str, throughput: str, latency: str) -> tuple[float, float]:
    """(scaling efficiency, relative latency rise) from one load level to the next."""
    load_gain = row[level_col] / previous[level_col] - 1 if previous[level_col] else math.nan
    thr_before, thr_now = previous[throughput], row[throughput]
    if not thr_before or math.isnan(thr_before) or not load_gain or math.isnan(load_gain) or math.isinf(load_gain):
        scaling = math.nan
    else:
        scaling = (thr_now / thr_before - 1) / load_gain
    lat_before, lat_now = previous[latency], row[latency]
    rose = lat_now / lat_before - 1 if lat_before and not math.isnan(lat_before) else math.nan
    return scaling, rose


def plot(data: pd.DataFrame | BenchResult | Sequence[BenchResult], latency: str = "tpot_median_ms",
         throughput: str = "output_throughput", title: str | None = None) -> go.Figure:
    """Throughput (x) against latency (y): one line per server through its load levels; saturated points
    drawn as crosses. Takes a sweep's DataFrame (or results of :func:`servekit.bench.run`)."""
    import plotly.graph_objects as go

    frame = _as_frame(data)
    for column in (latency, throughput):
        if column not in frame.columns:
            raise InvalidBenchmark(f"No column {column!r} to plot; choose among {', '.join(map(str, frame.columns))}.")
    figure = go.Figure()
    for label, group in frame.groupby("server", sort=False):
        level_col = group["load"].iloc[0] if "load" in group else None
        group = group.sort_values(level_col) if level_col else group
        levels = [f"{level_col}={_fmt(v)}" for v in group[level_col]] if level_col else [""] * len(group)
        saturated = group["saturated"] if "saturated" in group else [False] * len(group)
        figure.add_trace(go.Scatter(
            x=group[throughput], y=group[latency], mode="lines+markers+text", name=str(label), text=levels,
            textposition="top center", marker={"symbol": ["x" if s else "circle" for s in saturated], "size": 10},
            hovertemplate=f"%{{text}}<br>{throughput}=%{{x:.1f}}<br>{latency}=%{{y:.1f}}<extra>{label}</extra>",
        ))
    figure.update_layout(title=title or "Throughput vs latency (x: saturated)", xaxis_title=_axis(throughput),
                         yaxis_title=_axis(latency), template="plotly_white")
    return figure


def _as_frame(data: Any) -> pd.DataFrame:
    import pandas as pd

    if isinstance(data, pd.DataFrame):
        return data
    results = [data] if isinstance(data, BenchResult) else list(data)
    rows = []
    for result in results:
        row = {k: v for k, v in result.summary.items() if k not in _SUMMARY_SKIPPED}
        row["server"] = result.config.get("server", "server")
        rows.append(row)
    return pd.DataFrame(rows)


def _fmt(value: Any) -> str:
    return f"{value:g}" if isinstance(value, (int, float)) else str(value)


def _axis(column: str) -> str:
    names = {"output_throughput": "output tokens/s", "request_throughput": "requests/s",
             "total_token_throughput": "tokens/s (prompt + output)"}
    if column in names:
        return names[column]
    return column.replace("_ms", " (ms)").replace("_", " ")
