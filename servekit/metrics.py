"""Scrape an engine's Prometheus ``/metrics`` and give the numbers servekit's normalised names.

Normalised names shared by every engine (each engine maps them in its ``metric_names``):
``requests_running``, ``requests_waiting``, ``kv_cache_usage`` (0..1), ``prompt_tokens_total``,
``generation_tokens_total`` and the histograms ``ttft_seconds``, ``itl_seconds``, ``e2e_seconds``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


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


def parse(text: str, metric_names: Mapping[str, str]) -> MetricsSnapshot:
    """Parse Prometheus exposition text and map it through ``metric_names`` (normalised -> engine family)."""
    from prometheus_client.parser import text_string_to_metric_families

    families = {_family_key(f.name): f for f in text_string_to_metric_families(text)}
    values: dict[str, float] = {}
    histograms: dict[str, Histogram] = {}
    for normal, engine_name in metric_names.items():
        family = families.get(_family_key(engine_name))
        if family is None:
            continue
        if family.type == "histogram":
            histograms[normal] = _histogram(family)
        else:
            samples = [s for s in family.samples if not s.name.endswith("_created")]
            values[normal] = float(sum(s.value for s in samples))
    return MetricsSnapshot(values=values, histograms=histograms, families=families, text=text)


def _histogram(family: Any) -> Histogram:
    buckets: dict[float, float] = {}
    count = total = 0.0
    for sample in family.samples:
        if sample.name.endswith("_bucket"):
            bound = float(sample.labels["le"])
            buckets[bound] = buckets.get(bound, 0.0) + sample.value
        elif sample.name.endswith("_count"):
            count += sample.value
        elif sample.name.endswith("_sum"):
            total += sample.value
    return Histogram(buckets=tuple(sorted(buckets.items())), count=count, sum=total)


def scrape(url: str, metric_names: Mapping[str, str], headers: Mapping[str, str] | None = None,
           timeout: float = 10.0) -> MetricsSnapshot:
    """GET ``url + /metrics`` and parse it."""
    import httpx

    from .errors import ServekitError

    response = httpx.get(url.rstrip("/") + "/metrics", headers=dict(headers or {}), timeout=timeout)
    if response.status_code != 200:
        raise ServekitError(
            f"{url}/metrics answered {response.status_code}: the engine may need metrics switched on (metrics=True)."
        )
    return parse(response.text, metric_names)
