"""A run's result: its records (a pandas DataFrame), its summary (a dict), and saving/loading as JSON or CSV."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import InvalidBenchmark
from .records import RequestRecord, check_slos, summarize

if TYPE_CHECKING:
    import pandas as pd

FORMAT_VERSION = 1
_SHOWN = (
    ("completed", "{:.0f}"), ("failed", "{:.0f}"), ("request_throughput", "{:.2f} req/s"),
    ("output_throughput", "{:.1f} tok/s"), ("ttft_median_ms", "{:.1f} ms"), ("ttft_p99_ms", "{:.1f} ms"),
    ("tpot_median_ms", "{:.2f} ms"), ("itl_median_ms", "{:.2f} ms"), ("e2el_median_ms", "{:.1f} ms"),
    ("e2el_p99_ms", "{:.1f} ms"), ("goodput", "{:.2f} req/s"),
)


class BenchResult:
    """What :func:`servekit.bench.run` measured.

    ``summary`` (dict): counts, throughputs, goodput and mean/median/p90/p99 of TTFT, TPOT, ITL and E2EL
    in ms; ``records`` (DataFrame): one row per request; ``config``: what was run against what.
    ``interrupted`` is True after a Ctrl-C / kernel interrupt, ``aborted`` says why a run stopped early.
    """

    def __init__(self, records: Sequence[RequestRecord], config: Mapping[str, Any] | None = None, *,
                 slos: Mapping[str, float] | None = None, started_at: float | None = None,
                 interrupted: bool = False, aborted: str | None = None):
        self.record_list: list[RequestRecord] = sorted(records, key=lambda r: r.index)
        self.config: dict[str, Any] = dict(config or {})
        self.slos = check_slos(slos)
        self.started_at = started_at
        self.interrupted = interrupted
        self.aborted = aborted
        self.summary: dict[str, Any] = summarize(self.record_list, self.slos)

    @property
    def records(self) -> pd.DataFrame:
        """One row per request (warm-up ones flagged), in send order; times in s, latencies in ms."""
        import pandas as pd

        return pd.DataFrame([r.to_dict() for r in self.record_list],
                            columns=list(RequestRecord.__dataclass_fields__))

    @property
    def partial(self) -> bool:
        return self.interrupted or self.aborted is not None

    def with_slos(self, **slos: float) -> BenchResult:
        """The same records judged against other SLOs (``ttft=``, ``tpot=``, ``e2el=`` in ms)."""
        return BenchResult(self.record_list, self.config, slos=slos, started_at=self.started_at,
                           interrupted=self.interrupted, aborted=self.aborted)

    # -- saving and loading -------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        return {
            "servekit_bench": FORMAT_VERSION, "config": self.config, "slos": self.slos, "started_at": self.started_at,
            "interrupted": self.interrupted, "aborted": self.aborted, "summary": _plain(self.summary),
            "records": [_plain(r.to_dict()) for r in self.record_list],
        }

    def save(self, path: str | Path) -> Path:
        """Write ``.json`` (everything) or ``.csv`` (the records; ``itl_ms`` as space-separated numbers)."""
        path = Path(path).expanduser()
        if path.suffix == ".json":
            path.write_text(json.dumps(self.to_json(), indent=1))
        elif path.suffix == ".csv":
            frame = self.records
            frame["itl_ms"] = [" ".join(f"{x:.6g}" for x in gaps) for gaps in frame["itl_ms"]]
            frame.to_csv(path, index=False)
        else:
            raise InvalidBenchmark(f"Save a result as .json or .csv, not {path.name!r}.")
        return path

    @classmethod
    def load(cls, path: str | Path, slos: Mapping[str, float] | None = None) -> BenchResult:
        """Read a result written by :meth:`save`; the summary is recomputed from the records."""
        path = Path(path).expanduser()
        if not path.is_file():
            raise InvalidBenchmark(f"No saved result at {path}.")
        if path.suffix == ".json":
            data = json.loads(path.read_text())
            if "records" not in data:
                raise InvalidBenchmark(f"{path} is not a servekit.bench result (no 'records').")
            return cls([RequestRecord.from_dict(r) for r in data["records"]], data.get("config"),
                       slos=slos if slos is not None else data.get("slos"), started_at=data.get("started_at"),
                       interrupted=bool(data.get("interrupted")), aborted=data.get("aborted"))
        if path.suffix == ".csv":
            return cls(_records_from_csv(path), {"loaded_from": str(path)}, slos=slos)
        raise InvalidBenchmark(f"Load a result from .json or .csv, not {path.name!r}.")

    # -- display ------------------------------------------------------------------------------
    def _rows(self) -> list[tuple[str, str]]:
        rows = []
        for key, pattern in _SHOWN:
            value = self.summary.get(key)
            if value is not None and not (isinstance(value, float) and math.isnan(value)):
                rows.append((key, pattern.format(value)))
        if self.aborted:
            rows.append(("aborted", self.aborted))
        if self.interrupted:
            rows.append(("interrupted", "yes: partial results"))
        return rows

    def __repr__(self) -> str:
        head = f"<BenchResult {self.config.get('server', '')} {self.config.get('load', '')}".rstrip()
        return head + "\n" + "\n".join(f"  {k:20s} {v}" for k, v in self._rows()) + ">"

    def _repr_html_(self) -> str:
        from html import escape

        body = "".join(f"<tr><th style='text-align:left'>{escape(k)}</th><td>{escape(v)}</td></tr>"
                       for k, v in self._rows())
        title = escape(f"{self.config.get('server', '')} {self.config.get('load', '')}".strip())
        return f"<b>servekit.bench {title}</b><table>{body}</table>"


def _plain(data: Mapping[str, Any]) -> dict[str, Any]:
    """JSON-safe: NaN becomes null."""
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in data.items()}


def _records_from_csv(path: Path) -> list[RequestRecord]:
    import pandas as pd

    frame = pd.read_csv(path, keep_default_na=True)
    frame["itl_ms"] = [[float(x) for x in str(v).split()] if isinstance(v, str) else [] for v in frame["itl_ms"]]
    out = []
    for row in frame.to_dict("records"):
        for key in ("index", "user", "http_status", "prompt_tokens", "output_tokens", "expected_prompt_tokens",
                    "first_chunk_tokens", "chunks"):
            value = row.get(key)
            row[key] = None if value is None or (isinstance(value, float) and math.isnan(value)) else int(value)
        for key in ("error", "finish_reason"):
            if isinstance(row.get(key), float):
                row[key] = None
        row["warmup"] = bool(row.get("warmup"))
        out.append(RequestRecord.from_dict(row))
    return out


def load(path: str | Path, slos: Mapping[str, float] | None = None) -> BenchResult:
    """Read a result saved with ``result.save(path)`` (``.json`` or ``.csv``)."""
    return BenchResult.load(path, slos)
