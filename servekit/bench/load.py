"""Load shapes: closed loop (N users, each sending its next request when its last one ends) or open loop
(arrivals at a target rate, Poisson or gamma-distributed, optionally capped by a concurrency limit)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

from ..errors import InvalidBenchmark

DEFAULT_REQUESTS = 64


@dataclass(frozen=True)
class LoadShape:
    """How requests are sent.

    * ``concurrency`` alone: closed loop with that many users.
    * ``rate`` (requests/s; ``math.inf``: all at once): open loop; arrival gaps are gamma-distributed with
      shape ``burstiness`` (1: Poisson; < 1 burstier, > 1 more even) and mean ``1/rate``. With
      ``concurrency`` too, at most that many are in flight; the rest wait in the client (their
      ``scheduled_s`` then precedes their ``sent_s``).
    * ``requests`` or ``duration`` (s) ends the run; the first ``warmup`` requests are left out of the results.
    """

    concurrency: int | None = None
    rate: float | None = None
    burstiness: float = 1.0
    requests: int | None = None
    duration: float | None = None
    warmup: int = 0
    seed: int = 0

    @property
    def open_loop(self) -> bool:
        return self.rate is not None

    @property
    def users(self) -> int:
        return self.concurrency or 1

    def describe(self) -> dict[str, Any]:
        out = asdict(self)
        out["mode"] = "open" if self.open_loop else "closed"
        return out


def make_shape(concurrency: int | None = None, rate: float | None = None, requests: int | None = None,
               duration: float | None = None, burstiness: float = 1.0, warmup: int = 0, seed: int = 0) -> LoadShape:
    """A checked :class:`LoadShape`; raises InvalidBenchmark saying what to change."""
    if concurrency is not None and (isinstance(concurrency, bool) or not isinstance(concurrency, int)
                                    or concurrency < 1):
        raise InvalidBenchmark(f"concurrency must be a whole number >= 1, got {concurrency!r}.")
    if rate is not None and (not isinstance(rate, (int, float)) or not rate > 0):
        raise InvalidBenchmark(f"rate must be a positive number of requests per second (or math.inf), got {rate!r}.")
    if not isinstance(burstiness, (int, float)) or not 0 < burstiness < math.inf:
        raise InvalidBenchmark(f"burstiness must be a positive number (1 = Poisson), got {burstiness!r}.")
    if requests is not None and duration is not None:
        raise InvalidBenchmark("Give requests= or duration=, not both.")
    if requests is not None and (isinstance(requests, bool) or not isinstance(requests, int) or requests < 1):
        raise InvalidBenchmark(f"requests must be a whole number >= 1, got {requests!r}.")
    if duration is not None and (not isinstance(duration, (int, float)) or not 0 < duration < math.inf):
        raise InvalidBenchmark(f"duration must be a positive number of seconds, got {duration!r}.")
    if not isinstance(warmup, int) or warmup < 0:
        raise InvalidBenchmark(f"warmup must be a whole number of requests >= 0, got {warmup!r}.")
    if requests is None and duration is None:
        requests = DEFAULT_REQUESTS
    return LoadShape(concurrency=concurrency, rate=float(rate) if rate is not None else None,
                     burstiness=float(burstiness), requests=requests, duration=float(duration) if duration else None,
                     warmup=warmup, seed=seed)


def arrival_offsets(rate: float, burstiness: float = 1.0, seed: int = 0) -> Iterator[float]:
    """Endless arrival times (seconds from the start) at mean ``rate``/s with gamma(``burstiness``) gaps.

    The first arrival is at 0. ``rate = inf`` sends everything at 0. Seeded: the same seed, the same times.
    """
    if math.isinf(rate):
        while True:
            yield 0.0
    import numpy as np

    rng = np.random.default_rng(seed)
    scale = 1.0 / (rate * burstiness)
    at = 0.0
    yield at
    while True:
        for gap in rng.gamma(burstiness, scale, size=256):
            at += float(gap)
            yield at
