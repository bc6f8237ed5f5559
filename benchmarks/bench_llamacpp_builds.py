"""The compiled llama-server next to the prebuilt server (xllamacpp) on one CPU workload, side by side.

A random-weight Llama of ~86 M parameters (F16, written by servekit in seconds) is served by each build in
turn (never together: they would share the cores), with the same flags. Each build gets a warm-up request,
then for every round: one request of ``--prompt`` tokens in and ``--max-tokens`` out, timed by llama.cpp's
own ``timings`` (prompt tokens/s, generated tokens/s), and ``--streams`` such requests at once (total
generated tokens / wall time). Rounds alternate between the builds so drift hits both alike. Prints the
median of each figure per build and the ratio prebuilt / compiled.

    python benchmarks/bench_llamacpp_builds.py
    python benchmarks/bench_llamacpp_builds.py --rounds 5 --max-tokens 128 --streams 4
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

BUILDS = ("compiled", "prebuilt")


def model_path() -> Path:
    from servekit.demo.tiny import write_random_gguf
    from servekit.paths import cache_dir

    path = cache_dir() / "bench" / "random-86m-f16.gguf"
    return path if path.is_file() else write_random_gguf(path, hidden=768, ffn=2048, layers=12, heads=12)


def one_request(server, prompt_tokens: int, max_tokens: int) -> dict:
    import httpx

    body = {"prompt": " the" * prompt_tokens, "n_predict": max_tokens, "ignore_eos": True, "cache_prompt": False,
            "temperature": 0}
    response = httpx.post(server.url + "/completion", json=body, headers=server.headers(), timeout=600)
    response.raise_for_status()
    return response.json()


def measure(server, args: argparse.Namespace) -> dict[str, float]:
    timings = one_request(server, args.prompt, args.max_tokens)["timings"]
    started = time.perf_counter()
    with ThreadPoolExecutor(args.streams) as pool:
        replies = list(pool.map(lambda _: one_request(server, args.prompt, args.max_tokens), range(args.streams)))
    wall = time.perf_counter() - started
    generated = sum(r["timings"]["predicted_n"] for r in replies)
    return {"prompt tok/s (1 stream)": timings["prompt_per_second"],
            "generated tok/s (1 stream)": timings["predicted_per_second"],
            f"generated tok/s ({args.streams} streams)": generated / wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--prompt", type=int, default=128, help="prompt tokens")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--streams", type=int, default=4)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    args = parser.parse_args()

    import servekit
    from servekit.engines.llamacpp import BUILD_ENV

    model = model_path()
    print(f"model: {model} ({model.stat().st_size / 1e6:.0f} MB, F16, random weights); {args.threads} threads")
    results: dict[str, list[dict[str, float]]] = {b: [] for b in BUILDS}
    for round_no in range(args.rounds):
        for build in BUILDS if round_no % 2 == 0 else reversed(BUILDS):
            os.environ[BUILD_ENV] = build
            flags = ["--threads", str(args.threads)]
            with servekit.serve("llamacpp", str(model), parallel=args.streams, ctx=args.streams * 512,
                                extra_args=flags, name=f"bench-{build}") as server:
                one_request(server, 8, 8)  # warm-up
                results[build].append(measure(server, args))
            print(f"round {round_no + 1} {build}: "
                  + ", ".join(f"{k} {v:.1f}" for k, v in results[build][-1].items()), flush=True)
    print(f"\nmedian of {args.rounds} rounds ({args.prompt} tokens in, {args.max_tokens} out):")
    print(f"{'figure':32} {'compiled':>10} {'prebuilt':>10} {'prebuilt/compiled':>18}")
    for figure in results["compiled"][0]:
        medians = {b: statistics.median(r[figure] for r in results[b]) for b in BUILDS}
        print(f"{figure:32} {medians['compiled']:10.1f} {medians['prebuilt']:10.1f} "
              f"{medians['prebuilt'] / medians['compiled']:18.2f}")


if __name__ == "__main__":
    main()
