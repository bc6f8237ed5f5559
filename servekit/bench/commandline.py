"""One argument parser for ``servekit bench`` (the CLI) and ``%bench`` (the magic): both call :func:`execute`."""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import InvalidBenchmark


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``servekit bench`` / ``%bench``."""
    parser.add_argument("name", nargs="*", help="server name(s) (see `servekit ps`); default: the newest server")
    load = parser.add_argument_group("load (one of; a list sweeps)")
    load.add_argument("--concurrency", "-c", help="closed-loop users, e.g. 4 or 1,2,4,8 (default 1)")
    load.add_argument("--rate", "-r", help="open-loop requests/s (inf: all at once), e.g. 2 or 1,2,4")
    load.add_argument("--max-concurrency", type=int, help="cap on requests in flight for --rate")
    load.add_argument("--burstiness", type=float, default=1.0, help="arrival gaps' gamma shape (1 = Poisson)")
    load.add_argument("--requests", "-n", type=int, help="measured requests per point (default 64)")
    load.add_argument("--duration", "-d", type=float, help="seconds per point instead of a request count")
    load.add_argument("--warmup", type=int, default=0, help="extra requests first, left out of the results")
    work = parser.add_argument_group("workload")
    work.add_argument("--input-tokens", type=int, help="synthetic prompt length in tokens (default 128)")
    work.add_argument("--output-tokens", type=int, help="tokens to generate per request (default 128)")
    work.add_argument("--dataset", help="JSONL/JSON file of chat conversations (OpenAI or ShareGPT)")
    work.add_argument("--workload", help="'demo' or 'demo:TASK' for the demo tasks' prompts")
    work.add_argument("--api", choices=("completions", "chat"), help="endpoint (default: completions for synthetic)")
    work.add_argument("--adapter", help="apply this LoRA adapter of the server to every request")
    out = parser.add_argument_group("results")
    out.add_argument("--slo", action="append", default=[], metavar="NAME=MS",
                     help="goodput SLO: ttft=500, tpot=50, e2el=2000 (repeatable)")
    out.add_argument("--timeout", type=float, default=300.0, help="seconds per request (default 300)")
    out.add_argument("--max-time", type=float, help="seconds for the whole run")
    out.add_argument("--seed", type=int, default=0)
    out.add_argument("--save", help="write the result: .json/.csv (a run) or .csv/.json (a sweep's table)")
    out.add_argument("--no-progress", action="store_true", help="no progress bar")


@dataclass(frozen=True)
class Plan:
    """What the parsed options ask for: a single run or a sweep, and the keyword arguments for it."""

    servers: list[Any]
    levels: dict[str, list[float]]  # {"concurrency": [...]} or {"rates": [...]}
    options: dict[str, Any]

    @property
    def is_sweep(self) -> bool:
        return len(self.servers) > 1 or any(len(v) > 1 for v in self.levels.values())


def levels_of(text: str | None, what: str, whole: bool) -> list[float] | None:
    """``"1,2,4"`` -> ``[1, 2, 4]``; raises InvalidBenchmark for anything else."""
    if text is None:
        return None
    try:
        values = [float(part) for part in text.replace(" ", "").split(",") if part]
    except ValueError:
        raise InvalidBenchmark(f"--{what} takes numbers separated by commas, e.g. 1,2,4 (got {text!r}).") from None
    if not values or (whole and any(not math.isfinite(v) or v != int(v) for v in values)):
        raise InvalidBenchmark(f"--{what} takes whole numbers separated by commas, e.g. 1,2,4 (got {text!r}).")
    return [int(v) for v in values] if whole else values


def slos_of(items: Sequence[str]) -> dict[str, float] | None:
    slos = {}
    for item in items:
        key, sep, value = item.partition("=")
        try:
            slos[key.strip()] = float(value)
        except ValueError:
            raise InvalidBenchmark(f"--slo takes NAME=MILLISECONDS, e.g. ttft=500 (got {item!r}).") from None
        if not sep:
            raise InvalidBenchmark(f"--slo takes NAME=MILLISECONDS, e.g. ttft=500 (got {item!r}).")
    return slos or None


def plan(args: argparse.Namespace, servers: list[Any]) -> Plan:
    """Turn parsed options into a :class:`Plan` (servers already looked up by name)."""
    concurrency = levels_of(args.concurrency, "concurrency", whole=True)
    rates = levels_of(args.rate, "rate", whole=False)
    if concurrency and rates:
        if len(concurrency) > 1:
            raise InvalidBenchmark("With --rate, --concurrency is a single cap (or use --max-concurrency).")
        args.max_concurrency = args.max_concurrency or int(concurrency[0])
        concurrency = None
    options: dict[str, Any] = {
        "requests": args.requests, "duration": args.duration, "warmup": args.warmup, "burstiness": args.burstiness,
        "input_tokens": args.input_tokens, "output_tokens": args.output_tokens, "dataset": args.dataset,
        "workload": args.workload, "api": args.api, "slos": slos_of(args.slo), "timeout": args.timeout,
        "max_time": args.max_time, "seed": args.seed, "progress": not args.no_progress, "adapter": args.adapter,
    }
    options = {k: v for k, v in options.items() if v is not None}
    levels = {"rates": rates} if rates else {"concurrency": concurrency or [1]}
    if rates and args.max_concurrency:
        options["max_concurrency"] = args.max_concurrency
    return Plan(servers, levels, options)


def execute(work: Plan, on_progress: Any = None) -> Any:
    """A :class:`~servekit.bench.BenchResult` for one server and one level, else a sweep's DataFrame."""
    from . import run, sweep

    options = dict(work.options)
    if on_progress is not None:
        options["on_progress"] = on_progress
    if not work.is_sweep:
        cap = options.pop("max_concurrency", None)
        if "rates" in work.levels:
            return run(work.servers[0], concurrency=cap, rate=work.levels["rates"][0], **options)
        return run(work.servers[0], concurrency=int(work.levels["concurrency"][0]), **options)
    servers = {getattr(s, "name", str(i)): s for i, s in enumerate(work.servers)}
    if "rates" in work.levels:
        return sweep(servers, rates=work.levels["rates"], **options)
    return sweep(servers, concurrency=[int(c) for c in work.levels["concurrency"]], **options)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # argparse would print and exit the process (the kernel, in Jupyter)
        raise InvalidBenchmark(f"{self.prog}: {message} (see {self.prog} --help)")

    def exit(self, status: int = 0, message: str | None = None) -> Any:
        raise InvalidBenchmark(message or f"{self.prog}: stopped")


def parse_line(line: str, prog: str = "%bench") -> argparse.Namespace:
    """Parse a ``%bench`` line; bad options raise InvalidBenchmark with argparse's message."""
    import shlex

    parser = _Parser(prog=prog, add_help=False, description="Put load on a server and measure it.")
    add_arguments(parser)
    return parser.parse_args(shlex.split(line))


def usage(prog: str = "%bench") -> str:
    parser = argparse.ArgumentParser(prog=prog, add_help=False)
    add_arguments(parser)
    return parser.format_help()


SWEEP_COLUMNS = ("server", "concurrency", "rate", "completed", "failed", "request_throughput", "output_throughput",
                 "ttft_median_ms", "ttft_p99_ms", "tpot_median_ms", "itl_p99_ms", "e2el_median_ms", "saturated")


def sweep_table(frame: Any) -> Any:
    """The sweep's main columns, for printing."""
    return frame[[c for c in SWEEP_COLUMNS if c in frame.columns]]


def save(outcome: Any, path: str) -> Any:
    """Write a run (``.json``/``.csv``, see BenchResult.save) or a sweep's table (``.csv``/``.json``)."""
    from pathlib import Path

    from .results import BenchResult

    if isinstance(outcome, BenchResult):
        return outcome.save(path)
    target = Path(path).expanduser()
    if target.suffix == ".csv":
        outcome.to_csv(target, index=False)
    elif target.suffix == ".json":
        outcome.to_json(target, orient="records", indent=1)
    else:
        raise InvalidBenchmark(f"Save a sweep's table as .csv or .json, not {target.name!r}.")
    return target
