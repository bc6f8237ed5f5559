"""vLLM next to llama.cpp on the demo model: output tokens/s for 1 and 8 concurrent streams, and the ratio.

The engines are served one after the other (never together: they would share the cores), each with
room for 8 sequences, warmed up with one request, then driven by a closed loop: ``c`` workers, each
sending ``--requests`` streamed chat requests back to back with ``max_tokens`` and ``ignore_eos``.
Output tokens are counted from each response's ``usage`` (not from chunks), over the wall time of
the whole level. Failed requests are counted and shown, never retried.

    python benchmarks/bench_engines.py                   # demo model (F16 GGUF / HF folder)
    python benchmarks/bench_engines.py --max-tokens 128 --requests 6
    python benchmarks/bench_engines.py --vllm-model PATH --llamacpp-model FILE.gguf
"""

from __future__ import annotations

import argparse
import asyncio
import time
from dataclasses import dataclass

PROMPT = "Count from one to one hundred in words, separated by commas."


@dataclass(frozen=True)
class Level:
    """One engine at one concurrency."""

    engine: str
    streams: int
    requests: int
    failed: int
    tokens: int
    seconds: float

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0


async def _one(client, model: str, max_tokens: int) -> int:
    """One streamed chat request; its completion tokens from ``usage``."""
    stream = await client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": PROMPT}], max_tokens=max_tokens, temperature=0.0,
        stream=True, stream_options={"include_usage": True}, extra_body={"ignore_eos": True},
    )
    usage = None
    async for chunk in stream:
        usage = chunk.usage or usage
    if usage is None:
        raise RuntimeError("the server sent no usage")
    return int(usage.completion_tokens)


async def _level(server, streams: int, requests: int, max_tokens: int) -> Level:
    """``streams`` workers, each sending ``requests`` requests back to back."""
    # Connection: close — llama-server closes after each stream; reusing the connection races (see anchors.md)
    client = server.async_client(max_retries=0, timeout=600, default_headers={"Connection": "close"})
    tokens = failed = 0

    async def worker() -> None:
        nonlocal tokens, failed
        for _ in range(requests):
            try:
                done = await _one(client, server.model, max_tokens)  # not `tokens += await …`: that reads
                tokens += done  # `tokens` before the await and loses the other workers' updates
            except Exception as exc:  # noqa: BLE001 - counted and shown, the run goes on
                failed += 1
                print(f"  request failed: {type(exc).__name__}: {exc}"[:200])

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(streams)))
    seconds = time.perf_counter() - started
    await client.close()
    return Level(server.engine.display_name, streams, streams * requests, failed, tokens, seconds)


def bench_engine(engine: str, model: str, levels: list[int], requests: int, max_tokens: int) -> list[Level]:
    """Serve ``model`` on ``engine``, warm it up, run every concurrency level, stop it."""
    import servekit

    parallel = max(levels)
    options = {"parallel": parallel}
    if engine == "llamacpp":  # llama-server splits its context over the slots
        options["ctx"] = parallel * 512
    print(f"starting {engine} with {model} …", flush=True)
    started = time.perf_counter()
    with servekit.serve(engine, model, timeout=900, **options) as server:
        print(f"  ready in {time.perf_counter() - started:.1f} s; warming up", flush=True)
        asyncio.run(_level(server, 1, 1, 8))
        results = []
        for streams in levels:
            result = asyncio.run(_level(server, streams, requests, max_tokens))
            print(f"  {streams} stream(s): {result.tokens} tokens in {result.seconds:.1f} s = "
                  f"{result.tokens_per_second:.1f} tok/s" + (f", {result.failed} failed" if result.failed else ""),
                  flush=True)
            results.append(result)
    return results


def table(vllm: list[Level], llamacpp: list[Level]) -> str:
    """Side by side, with the vLLM / llama.cpp ratio of output tokens/s."""
    lines = [f"{'streams':>7}  {'vLLM tok/s':>11}  {'llama.cpp tok/s':>15}  {'vLLM / llama.cpp':>16}  {'failed':>6}"]
    for a, b in zip(vllm, llamacpp):
        ratio = a.tokens_per_second / b.tokens_per_second if b.tokens_per_second else float("nan")
        lines.append(f"{a.streams:>7}  {a.tokens_per_second:>11.1f}  {b.tokens_per_second:>15.1f}  {ratio:>15.2f}x"
                     f"  {a.failed + b.failed:>6}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vllm-model", default="demo", help="model for vLLM (default: the demo HF export)")
    parser.add_argument("--llamacpp-model", default="demo", help="model for llama.cpp (default: the demo F16 GGUF)")
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 8], help="concurrency levels (default: 1 8)")
    parser.add_argument("--requests", type=int, default=4, help="requests per stream at each level (default: 4)")
    parser.add_argument("--max-tokens", type=int, default=64, help="output tokens per request (default: 64)")
    args = parser.parse_args()
    vllm = bench_engine("vllm", args.vllm_model, args.streams, args.requests, args.max_tokens)
    llamacpp = bench_engine("llamacpp", args.llamacpp_model, args.streams, args.requests, args.max_tokens)
    print(f"\noutput tokens/s, {args.requests} requests per stream, {args.max_tokens} tokens each "
          f"(vLLM: {args.vllm_model}; llama.cpp: {args.llamacpp_model})")
    print(table(vllm, llamacpp))


if __name__ == "__main__":
    main()
