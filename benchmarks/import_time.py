"""How long `import servekit` takes next to a bare interpreter start (goal: < 0.2 s). Prints medians and the ratio."""

from __future__ import annotations

import statistics
import subprocess
import sys
import time


def median_seconds(code: str, runs: int = 15) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


if __name__ == "__main__":
    bare = median_seconds("pass")
    with_servekit = median_seconds("import servekit")
    print(f"python -c pass:            {bare * 1000:7.1f} ms")
    print(f"python -c 'import servekit': {with_servekit * 1000:7.1f} ms  (import itself ≈ {(with_servekit - bare) * 1000:.1f} ms)")
    print(f"ratio: {with_servekit / bare:.2f}x")
