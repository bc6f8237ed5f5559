"""servekit's load generator: how many users can a server take, and how fast does it answer them?

>>> result = servekit.bench.run(server, concurrency=4, requests=64, input_tokens=128, output_tokens=64)
>>> result.summary["output_throughput"], result.summary["ttft_p99_ms"]
>>> result.records                      # one row per request (pandas)
>>> table = servekit.bench.sweep(server, concurrency=[1, 2, 4, 8], requests=64)
>>> servekit.bench.plot(table)          # throughput against latency, saturated points marked

Closed loop (``concurrency=N``: N users, each sending its next request when the last one ends) or open
loop (``rate=R`` requests/s, Poisson or gamma arrivals with ``burstiness``; with ``concurrency`` too, a
cap on requests in flight). Definitions of every number: :mod:`servekit.bench.records`.

The run is asyncio on a thread of its own (it works in a Jupyter kernel and in a script); it never
hangs: each request has a ``timeout``, ``max_time`` bounds the whole run, Ctrl-C or a kernel interrupt
returns what was measured so far, and a server that dies gives failed requests, not a hang.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import InvalidBenchmark
from .load import LoadShape, arrival_offsets, make_shape
from .records import RequestRecord, per_token_gaps, summarize
from .results import BenchResult, load
from .runner import BenchProgress, LoadRun, ProgressCallback, ProgressFeed, execute
from .sweeps import as_servers, mark_saturation, plot, run_sweep, sweep_points
from .target import target_of
from .workloads import Conversations, Prompt, Prompts, Synthetic, Workload, demo_tasks

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "BenchProgress", "BenchResult", "Conversations", "LoadShape", "Prompt", "Prompts", "RequestRecord", "Synthetic",
    "Workload", "arrival_offsets", "demo_tasks", "load", "mark_saturation", "per_token_gaps", "plot", "run",
    "summarize", "sweep",
]

DEFAULT_TIMEOUT_S = 300.0
PROGRESS_INTERVAL_S = 0.25


def run(server: Any, concurrency: int | None = None, rate: float | None = None, *, requests: int | None = None,
        duration: float | None = None, input_tokens: int | None = None, output_tokens: int | None = None,
        prompts: Sequence[str | Sequence[dict[str, Any]]] | None = None, dataset: str | Path | None = None,
        workload: Workload | str | None = None, api: str | None = None, burstiness: float = 1.0,
        warmup: int = 0, seed: int = 0, slos: Mapping[str, float] | None = None,
        timeout: float = DEFAULT_TIMEOUT_S, max_time: float | None = None, progress: bool = True,
        on_progress: ProgressCallback | Sequence[ProgressCallback] | None = None, label: str | None = None,
        adapter: str | None = None) -> BenchResult:
    """Put load on ``server`` and measure every request.

    Load: ``concurrency`` alone (closed loop; default 1), ``rate`` (open loop, requests/s; ``math.inf``
    sends all at once) with optional ``concurrency`` cap and ``burstiness`` (1 = Poisson). It ends after
    ``requests`` measured requests (default 64) or ``duration`` seconds; ``warmup`` extra requests go
    first and are left out of the summary.

    What is sent (one of): synthetic prompts of ``input_tokens`` tokens asking for exactly ``output_tokens``
    tokens (the default: 128/128); ``prompts`` (strings or chat message lists); ``dataset`` (a JSONL/JSON
    file of chat conversations, OpenAI or ShareGPT style); ``workload="demo"`` (the demo tasks' prompts,
    or ``"demo:add"``); or any :class:`Workload`. ``api``: ``"completions"`` or ``"chat"``.

    ``adapter``: every request applies this LoRA adapter of the server (``server.lora_request_options``).
    ``slos`` (ms, e.g. ``{"ttft": 500, "tpot": 50}``) adds goodput. ``timeout`` bounds each request,
    ``max_time`` the whole run. ``on_progress`` callbacks get a :class:`BenchProgress` snapshot every
    0.25 s in this thread (a live chart subscribes here); ``progress=True`` shows a progress bar.
    """
    shape = make_shape(concurrency, rate, requests, duration, burstiness, warmup, seed)
    chosen = _workload(workload, input_tokens, output_tokens, prompts, dataset, api, seed)
    _check_timeouts(timeout, max_time)
    target = target_of(server, label, adapter)
    _raise_open_files_limit(shape.users if not shape.open_loop else (shape.concurrency or 1024))
    load_run = LoadRun(target, chosen, shape, timeout=float(timeout), max_time=max_time,
                       give_up_after=max(8, shape.users if shape.concurrency else 8))
    callbacks = _callbacks(on_progress, progress)
    interrupted = execute(load_run, ProgressFeed(load_run, f"{target.label} {_load_label(shape)}", callbacks),
                          PROGRESS_INTERVAL_S)
    config = {
        "server": target.label, "engine": target.engine.name, "model": target.model, "url": target.url,
        "load": _load_label(shape), **shape.describe(), **chosen.describe(), "timeout": timeout, "max_time": max_time,
    }
    return BenchResult(load_run.live.records, config, slos=slos, started_at=load_run.live.started_at,
                       interrupted=interrupted, aborted=load_run.live.aborted)


def sweep(servers: Any, concurrency: Sequence[int] | None = None, rates: Sequence[float] | None = None, *,
          max_concurrency: int | None = None, min_scaling: float = 0.25, min_latency_rise: float = 0.25,
          **run_options: Any) -> pd.DataFrame:
    """Run every load level on every server; one row per (server, level), with ``saturated`` marked.

    ``servers``: one server, a list, or ``{label: server}`` (engines, quantizations, LoRA on/off side by
    side). Levels: ``concurrency=[1, 2, 4, 8]`` (closed loop) or ``rates=[1, 2, 4]`` requests/s (open
    loop, capped by ``max_concurrency`` if given). ``run_options`` go to :func:`run` for every point
    (``requests=``/``duration=``, ``input_tokens=``, ``workload=``, ``slos=`` …). Columns: the summary's
    (``ttft_*``, ``tpot_*``, ``itl_*``, ``e2el_*`` in ms, ``output_throughput`` …) plus ``server``,
    ``engine``, ``concurrency``, ``rate``, ``scaling`` and ``saturated`` (see :func:`mark_saturation`).
    An interrupt stops the sweep; the rows measured so far come back (the last one marked ``interrupted``).
    """
    kind, levels = sweep_points(concurrency, rates)
    pairs = as_servers(servers)
    for key in ("concurrency", "rate", "label"):
        if key in run_options:
            raise InvalidBenchmark(f"sweep() sets {key} itself; leave it out of the options.")
    what = {k: run_options.pop(k, None) for k in _WORKLOAD_OPTIONS}
    workloads: dict[str, Workload] = {}  # one per server, prepared once (synthetic prompts are measured on it)

    def run_point(label: str, server: Any, level: float) -> BenchResult:
        if label not in workloads:
            made = _workload(**what, seed=run_options.get("seed", 0))
            workloads[label] = copy.deepcopy(made) if made is what["workload"] else made
        options = {**run_options, "workload": workloads[label], "label": label}
        if kind == "concurrency":
            return run(server, concurrency=int(level), **options)
        return run(server, concurrency=max_concurrency, rate=float(level), **options)

    return run_sweep(pairs, kind, levels, run_point, lambda s: target_of(s).engine.name, cap=max_concurrency,
                     min_scaling=min_scaling, min_latency_rise=min_latency_rise)


# -- helpers -------------------------------------------------------------------------------------
_WORKLOAD_OPTIONS = ("workload", "input_tokens", "output_tokens", "prompts", "dataset", "api")


def _workload(workload: Workload | str | None, input_tokens: int | None, output_tokens: int | None,
              prompts: Sequence[Any] | None, dataset: str | Path | None, api: str | None, seed: int) -> Workload:
    given = [name for name, value in (("workload", workload), ("prompts", prompts), ("dataset", dataset))
             if value is not None]
    if len(given) > 1:
        raise InvalidBenchmark(f"Give one of workload=, prompts= and dataset=, not {' and '.join(given)}.")
    if given and input_tokens is not None:
        raise InvalidBenchmark(f"input_tokens applies to synthetic prompts only, not to {given[0]}=.")
    if isinstance(workload, str):
        task = workload.partition(":")[2] or None
        if workload.partition(":")[0] != "demo":
            raise InvalidBenchmark(f"Unknown workload {workload!r}: use 'demo' or 'demo:TASK', or pass prompts=/dataset=.")
        return demo_tasks(task, output_tokens=output_tokens, seed=1234 + seed)
    if workload is not None:
        for attribute in ("api", "prompt", "prepare", "describe"):
            if not hasattr(workload, attribute):
                raise InvalidBenchmark(f"workload= needs a Workload (api, prepare(), prompt(), describe()); "
                                       f"{workload!r} has no {attribute}.")
        return workload
    if prompts is not None:
        return Prompts(prompts, output_tokens, api=api or "chat")
    if dataset is not None:
        return Conversations(dataset, output_tokens, seed=seed)
    return Synthetic(input_tokens or 128, output_tokens or 128, api=api or "completions", seed=seed)


def _check_timeouts(timeout: float, max_time: float | None) -> None:
    if not isinstance(timeout, (int, float)) or not 0 < timeout < math.inf:
        raise InvalidBenchmark(f"timeout must be a positive number of seconds per request, got {timeout!r}.")
    if max_time is not None and (not isinstance(max_time, (int, float)) or not max_time > 0):
        raise InvalidBenchmark(f"max_time must be a positive number of seconds, got {max_time!r}.")


def _load_label(shape: LoadShape) -> str:
    if not shape.open_loop:
        return f"c={shape.users}"
    rate = "inf" if shape.rate is not None and math.isinf(shape.rate) else f"{shape.rate:g}/s"
    return f"rate={rate}" + (f" cap={shape.concurrency}" if shape.concurrency else "")


def _raise_open_files_limit(connections: int) -> None:
    """Each stream holds a socket: lift the soft open-files limit towards the hard one when needed."""
    try:
        import resource
    except ImportError:  # Windows: no such limit to lift
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = connections + 256
    if soft != resource.RLIM_INFINITY and soft < wanted:
        new = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
        except (ValueError, OSError):
            pass


def _callbacks(on_progress: ProgressCallback | Sequence[ProgressCallback] | None, bar: bool) -> list[ProgressCallback]:
    callbacks: list[ProgressCallback] = []
    if bar:
        callbacks.append(ProgressBar())
    if callable(on_progress):
        callbacks.append(on_progress)
    elif on_progress is not None:
        callbacks.extend(on_progress)
    return callbacks


class ProgressBar:
    """A tqdm bar (``tqdm.auto``: a widget in Jupyter, text in a terminal) fed by progress snapshots."""

    def __init__(self) -> None:
        self._bar: Any = None
        self._shown = 0

    def __call__(self, snap: BenchProgress) -> None:
        if snap.phase == "preparing" and not snap.done:
            return
        if self._bar is None:
            from tqdm.auto import tqdm

            timed = snap.total is None
            self._bar = tqdm(total=snap.duration_s if timed else snap.total, desc=snap.label,
                             unit="s" if timed else "req", leave=True, dynamic_ncols=True,
                             bar_format=None if not timed else "{l_bar}{bar}| {n:.0f}/{total:.0f} s {postfix}")
        position = int(min(snap.elapsed_s, snap.duration_s or 0.0)) if snap.total is None else snap.completed + snap.failed
        self._bar.update(position - self._shown)
        self._shown = position
        rate = snap.output_tokens / snap.elapsed_s if snap.elapsed_s > 0 else 0.0
        self._bar.set_postfix_str(f"ok={snap.completed} failed={snap.failed} in flight={snap.in_flight} "
                                  f"{rate:.0f} tok/s", refresh=False)
        if snap.done:
            self._bar.refresh()
            self._bar.close()
