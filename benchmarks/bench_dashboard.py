"""Does the live dashboard keep up under load, and does its kernel stay responsive?

A real Jupyter kernel (this interpreter, through jupyter_client) starts a 4-slot llama-server with the
demo model and displays ``server.dashboard()`` (panel + live charts), as a notebook cell would. This
process then runs 8 concurrent streams against the server (servekit.bench, closed loop — the load is
outside the kernel, so what is measured is the dashboard's cost) and, every second, executes a ``1+1``
cell in the kernel and times it, send to reply. Each probe also reads how many points the chart holds
(``user_expressions``, evaluated in the same request), and this process counts the widget messages the
kernel sends on iopub — what a front end receives.

    .venv/bin/python benchmarks/bench_dashboard.py [--seconds 20] [--streams 8]

Goals (issue #20): the chart gains >= 1 point per second; a ``1+1`` cell takes < 0.5 s. The same
``1+1`` probe before the server starts is the kernel's own baseline.
"""

from __future__ import annotations

import argparse
import queue
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

NAME = "bench-dashboard"
SETUP = f"""
import servekit
from IPython.display import display
server = servekit.serve("llamacpp", "demo", parallel=4, name={NAME!r})
board = server.dashboard()
display(board)
"""


def probe(client, expressions: dict[str, str] | None = None) -> tuple[float, dict]:
    """Run ``1+1``; seconds from send to reply, and the user expressions' values."""
    started = time.monotonic()
    msg_id = client.execute("1+1", silent=False, user_expressions=expressions or {})
    while True:
        reply = client.get_shell_msg(timeout=30)
        if reply["parent_header"].get("msg_id") == msg_id:
            break
    took = time.monotonic() - started
    values = {}
    for key, value in reply["content"].get("user_expressions", {}).items():
        if value.get("status") != "ok":
            raise RuntimeError(f"{key}: {value.get('ename')}: {value.get('evalue')}")
        values[key] = value["data"]["text/plain"]
    return took, values


class IopubCounter(threading.Thread):
    """Counts the widget (comm) messages the kernel publishes, with their arrival times."""

    def __init__(self, client):
        super().__init__(daemon=True)
        self.client, self.comm_times, self.stop = client, [], threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                msg = self.client.get_iopub_msg(timeout=0.2)
            except queue.Empty:
                continue
            if msg["header"]["msg_type"] == "comm_msg":
                self.comm_times.append(time.monotonic())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="how long the streams run")
    parser.add_argument("--streams", type=int, default=8)
    args = parser.parse_args()

    from jupyter_client.manager import start_new_kernel

    import servekit
    from servekit import bench

    kernel, client = start_new_kernel(kernel_name="python3", extra_arguments=[])
    try:
        baseline = [probe(client)[0] for _ in range(10)]
        reply = client.execute_interactive(SETUP, timeout=120, output_hook=lambda msg: None)
        if reply["content"]["status"] != "ok":
            raise RuntimeError("the set-up cell failed: " + "\n".join(reply["content"].get("traceback", [])))
        server = next(s for s in servekit.running() if s.name == NAME)
        counter = IopubCounter(client)
        counter.start()
        expressions = {"points": "board.metrics.points(0)", "redraws": "board.metrics.redraws"}
        load = threading.Thread(target=bench.run, args=(server,), daemon=True, kwargs={
            "concurrency": args.streams, "duration": args.seconds, "input_tokens": 32, "output_tokens": 256,
            "progress": False})
        load.start()
        time.sleep(2.0)  # the streams reach the server; the recorder has its first samples
        samples = []
        while load.is_alive():
            took, values = probe(client, expressions)
            samples.append((time.monotonic(), took, int(values["points"]), int(values["redraws"])))
            time.sleep(1.0)
        counter.stop.set()
        counter.join()
        _, stamps = probe(client, {"x": "list(board.metrics._series[0].x)"})  # each point's time (ms)
        chart_ms = [float(v) for v in stamps["x"].strip("[]").split(",") if v.strip()]
        in_flight = server.metrics()  # still up: the server's own view after the run
        client.execute_interactive("server.stop(); board.close()", timeout=60, output_hook=lambda msg: None)
    finally:
        client.stop_channels()
        kernel.shutdown_kernel(now=False)
        for leftover in [s for s in servekit.running() if s.name == NAME]:
            leftover.stop()

    first, last = samples[0], samples[-1]
    span = last[0] - first[0]
    during = chart_ms[-(last[2] - first[2]) - 1:]  # the points drawn while the probes ran
    gaps = [(b - a) / 1000.0 for a, b in zip(during, during[1:])]
    points_per_s = len(gaps) / sum(gaps)
    redraws_per_s = (last[3] - first[3]) / span
    comms = [t for t in counter.comm_times if first[0] <= t <= last[0]]
    latencies = [s[1] for s in samples]
    print(f"{args.streams} streams for {args.seconds:.0f} s against a 4-slot llama-server (demo model); "
          f"{len(samples)} probes over {span:.1f} s")
    print(f"chart points gained per second: {points_per_s:.2f}  (goal >= 1; gaps between points: median "
          f"{statistics.median(gaps):.2f} s, max {max(gaps):.2f} s)")
    print(f"chart redraws per second:       {redraws_per_s:.2f}; widget messages on iopub: {len(comms) / span:.1f}/s")
    print(f"1+1 cell, send to reply:        median {statistics.median(latencies) * 1000:.0f} ms, "
          f"max {max(latencies) * 1000:.0f} ms  (goal < 500 ms)")
    print(f"1+1 cell with no server (baseline): median {statistics.median(baseline) * 1000:.0f} ms, "
          f"max {max(baseline) * 1000:.0f} ms")
    print(f"server after the run: {in_flight.get('generation_tokens_total', 0):.0f} tokens generated")
    return 0 if points_per_s >= 0.99 and max(latencies) < 0.5 else 1


if __name__ == "__main__":
    sys.exit(main())
