"""servekit.bench's pure logic: per-token ITL, summary math, goodput, saturation, arrivals, save/load, SSE parsing."""

from __future__ import annotations

import asyncio
import itertools
import json
import math

import pytest

from servekit import bench
from servekit.bench import _http
from servekit.bench.load import arrival_offsets, make_shape
from servekit.bench.records import (
    RequestRecord,
    Timeline,
    finish_record,
    max_in_flight,
    meets_slos,
    per_token_gaps,
    stats,
    summarize,
)
from servekit.bench.sweeps import mark_saturation
from servekit.bench.workloads import Conversations, Prompts, Synthetic, demo_tasks, read_conversations
from servekit.engines import get_engine
from servekit.errors import InvalidBenchmark


def record(index: int, sent: float, ttft: float, e2el: float, tokens: int, itl: list[float] | None = None,
           status: str = "ok", prompt: int = 10, warmup: bool = False) -> RequestRecord:
    """A completed request sent at ``sent`` s; latencies in ms."""
    tpot = (e2el - ttft) / (tokens - 1) if tokens > 1 else None
    return RequestRecord(index=index, warmup=warmup, sent_s=sent, end_s=sent + e2el / 1000, status=status,
                         ttft_ms=ttft, tpot_ms=tpot, e2el_ms=e2el, itl_ms=itl or [], prompt_tokens=prompt,
                         output_tokens=tokens)


# -- inter-token latency, one gap per token ------------------------------------------------------
def test_a_multi_token_chunk_is_divided_into_one_gap_per_token():
    # chunk 1 at 0.1 s brings token 1; chunk 2 at 0.2 s brings tokens 2-4; chunk 3 at 0.3 s brings token 5
    gaps = per_token_gaps([0.1, 0.2, 0.3], [1, 4, 5])
    assert gaps == pytest.approx([0.1 / 3] * 3 + [0.1])
    assert len(gaps) == 5 - 1
    assert sum(gaps) == pytest.approx(0.3 - 0.1)


def test_chunks_without_new_tokens_add_no_gap_and_fold_into_the_next():
    gaps = per_token_gaps([0.1, 0.15, 0.3], [1, 1, 2])
    assert gaps == pytest.approx([0.2])


def test_tokens_bundled_into_the_first_chunk_have_no_observable_gap():
    assert per_token_gaps([0.5, 0.6], [3, 4]) == pytest.approx([0.1])


def test_timeline_uses_the_engines_running_count_and_the_final_usage():
    timeline = Timeline(sent=0.0)
    timeline.add(0.05, {"choices": [{"delta": {"role": "assistant"}}]}, 0)  # role chunk: no token
    timeline.add(0.10, {"choices": [{"delta": {"content": "a"}}]}, 1)
    timeline.add(0.30, {"choices": [{"delta": {"content": "bcd"}}]}, 4)
    timeline.add(0.31, {"choices": [{"delta": {}, "finish_reason": "length"}]}, 4)
    timeline.add(0.32, {"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 4}}, 4)
    rec = RequestRecord(index=0)
    finish_record(rec, timeline, end=0.40)
    assert rec.ttft_ms == pytest.approx(100)
    assert rec.itl_ms == pytest.approx([200 / 3] * 3)
    assert rec.output_tokens == 4 and rec.prompt_tokens == 7
    assert rec.e2el_ms == pytest.approx(400)
    assert rec.tpot_ms == pytest.approx((400 - 100) / 3)
    assert rec.token_counts == "per-chunk" and rec.finish_reason == "length" and rec.first_chunk_tokens == 1


def test_timeline_without_per_chunk_counts_counts_text_chunks_and_trusts_final_usage():
    timeline = Timeline(sent=0.0)
    for t, text in ((0.1, "a"), (0.2, ""), (0.3, "b")):
        timeline.add(t, {"choices": [{"text": text}]}, None)
    timeline.add(0.3, {"choices": [{"text": "", "finish_reason": "stop"}], "usage": {"completion_tokens": 3}}, None)
    rec = RequestRecord(index=0)
    finish_record(rec, timeline, end=0.3)
    assert rec.output_tokens == 3  # the server's word, not the 2 text chunks
    assert rec.token_counts == "final-usage"
    assert rec.itl_ms == pytest.approx([200])


def test_chunks_read_together_are_one_arrival_whose_gap_is_divided():
    timeline = Timeline(sent=0.0)
    for t, count in ((0.1, 1), (0.4, 2), (0.4, 3), (0.4, 4)):  # three chunks in one read at 0.4 s
        timeline.add(t, {"choices": [{"text": "x"}]}, count)
    assert timeline.times == [0.1, 0.4] and timeline.counts == [1, 4]
    assert per_token_gaps(timeline.times, timeline.counts) == pytest.approx([0.1] * 3)


def test_reasoning_and_tool_call_deltas_count_as_output():
    timeline = Timeline(sent=0.0)
    timeline.add(0.2, {"choices": [{"delta": {"reasoning_content": "hmm"}}]}, None)
    timeline.add(0.3, {"choices": [{"delta": {"tool_calls": [{"index": 0}]}}]}, None)
    assert timeline.times == [0.2, 0.3]


def test_an_error_chunk_marks_the_stream_failed():
    timeline = Timeline(sent=0.0)
    timeline.add(0.1, {"error": {"message": "context too long", "code": 400}}, None)
    assert timeline.error == "context too long"


# -- summary ---------------------------------------------------------------------------------
def test_summary_counts_failures_apart_and_keeps_them_out_of_latency_and_throughput():
    records = [
        record(0, 0.0, ttft=100, e2el=1000, tokens=10, itl=[100.0] * 9),
        record(1, 0.5, ttft=300, e2el=1500, tokens=5, itl=[300.0] * 4),
        RequestRecord(index=2, sent_s=0.2, end_s=9.0, status="error", error="HTTP 500: boom"),
        RequestRecord(index=3, sent_s=0.3, end_s=0.4, status="timeout", error="slow"),
        record(4, 0.0, ttft=1, e2el=5000, tokens=99, warmup=True),
    ]
    summary = summarize(records)
    assert (summary["requests"], summary["completed"], summary["failed"], summary["warmup_requests"]) == (4, 2, 2, 1)
    window = 9.0 - 0.0  # first measured send to last measured end (the failed request's end included)
    assert summary["duration_s"] == pytest.approx(window)
    assert summary["total_output_tokens"] == 15
    assert summary["output_throughput"] == pytest.approx(15 / window)
    assert summary["request_throughput"] == pytest.approx(2 / window)
    assert summary["total_token_throughput"] == pytest.approx((15 + 20) / window)
    assert summary["ttft_mean_ms"] == pytest.approx(200)
    assert summary["ttft_median_ms"] == pytest.approx(200)
    assert summary["e2el_p99_ms"] == pytest.approx(1000 + 0.99 * 500)
    assert summary["tpot_mean_ms"] == pytest.approx((100 + 300) / 2)
    assert summary["itl_mean_ms"] == pytest.approx((9 * 100 + 4 * 300) / 13)  # pooled over tokens
    assert summary["errors"] == {"HTTP 500: boom": 1, "slow": 1}


def test_percentiles_interpolate_linearly_as_numpy_does():
    import numpy as np

    values = list(range(1, 101))
    out = stats(values)
    assert out["mean"] == pytest.approx(50.5)
    assert out["median"] == pytest.approx(50.5)
    assert out["p90"] == pytest.approx(90.1)
    assert out["p99"] == pytest.approx(99.01)
    assert all(math.isnan(v) for v in stats([]).values())
    rng = np.random.default_rng(0)
    for size in (1, 2, 7, 1000):
        sample = rng.exponential(size=size).tolist()
        got = stats(sample)
        assert got["p90"] == pytest.approx(np.percentile(sample, 90))
        assert got["p99"] == pytest.approx(np.percentile(sample, 99))
        assert got["median"] == pytest.approx(np.median(sample))


def test_goodput_counts_requests_within_every_slo():
    records = [
        record(0, 0.0, ttft=100, e2el=1000, tokens=10),  # tpot 100
        record(1, 0.0, ttft=600, e2el=1500, tokens=10),  # ttft too slow
        record(2, 0.0, ttft=100, e2el=2000, tokens=10),  # tpot 211
        record(3, 0.0, ttft=100, e2el=100, tokens=1),  # one token: no TPOT, meets a TPOT SLO
        RequestRecord(index=4, sent_s=0.0, end_s=2.0, status="error"),
    ]
    summary = summarize(records, {"ttft": 500, "tpot": 150})
    assert summary["goodput"] == pytest.approx(2 / 2.0)
    assert summary["goodput_fraction"] == pytest.approx(2 / 4)
    assert not meets_slos(records[4], {"ttft": 1e9})
    assert "goodput" not in summarize(records)


def test_bad_slos_are_refused_with_the_allowed_names():
    with pytest.raises(InvalidBenchmark, match="ttft, tpot and/or e2el"):
        summarize([], {"itl": 5})
    with pytest.raises(InvalidBenchmark, match="positive"):
        summarize([], {"ttft": -1})


def test_max_in_flight_from_send_and_end_times():
    records = [RequestRecord(index=i, sent_s=s, end_s=e) for i, (s, e) in enumerate([(0, 3), (1, 2), (1.5, 4), (3, 5)])]
    assert max_in_flight(records) == 3


# -- saturation ------------------------------------------------------------------------------
def _sweep_frame(throughputs: list[float], latencies: list[float], levels: list[int] | None = None):
    import pandas as pd

    levels = levels or [1, 2, 4, 8, 16][: len(throughputs)]
    return pd.DataFrame({"server": "s", "load": "concurrency", "concurrency": levels,
                         "output_throughput": throughputs, "e2el_median_ms": latencies,
                         "interrupted": False, "aborted": None})


def test_saturation_is_where_throughput_stops_rising_and_latency_keeps_climbing():
    frame = mark_saturation(_sweep_frame([100, 190, 360, 380, 385], [10, 10.5, 11, 21, 41]))
    assert frame["saturated"].tolist() == [False, False, False, True, True]
    assert frame.attrs["saturation"] == {"s": 8}
    assert frame.attrs["knee"] == {"s": 4}
    assert frame["scaling"].iloc[1] == pytest.approx(0.9)


def test_flat_throughput_with_flat_latency_is_not_saturation():
    frame = mark_saturation(_sweep_frame([100, 101, 102], [10, 10, 10]))
    assert not frame["saturated"].any()
    assert frame.attrs["saturation"] == {"s": None}


def test_interrupted_points_are_not_judged():
    frame = _sweep_frame([100, 190, 10], [10, 10.5, 90])
    frame.loc[2, "interrupted"] = True
    assert not mark_saturation(frame)["saturated"].any()


# -- arrivals --------------------------------------------------------------------------------
@pytest.mark.parametrize("burstiness", [1.0, 0.5, 4.0])
def test_arrivals_have_the_asked_mean_rate(burstiness):
    times = list(itertools.islice(arrival_offsets(20.0, burstiness, seed=7), 20001))
    assert times[0] == 0.0
    assert all(b >= a for a, b in itertools.pairwise(times))
    assert 20000 / times[-1] == pytest.approx(20.0, rel=0.03)


def test_arrivals_are_poisson_by_default_and_burstier_below_one():
    def gap_cv(burstiness: float) -> float:
        import numpy as np

        gaps = np.diff(list(itertools.islice(arrival_offsets(10.0, burstiness, seed=1), 20001)))
        return float(gaps.std() / gaps.mean())

    assert gap_cv(1.0) == pytest.approx(1.0, rel=0.05)  # exponential gaps
    assert gap_cv(0.25) == pytest.approx(2.0, rel=0.1)  # gamma: cv = 1/sqrt(shape)
    assert gap_cv(4.0) == pytest.approx(0.5, rel=0.1)


def test_arrivals_repeat_for_a_seed_and_infinite_rate_sends_all_at_once():
    first = list(itertools.islice(arrival_offsets(5.0, seed=3), 50))
    assert first == list(itertools.islice(arrival_offsets(5.0, seed=3), 50))
    assert first != list(itertools.islice(arrival_offsets(5.0, seed=4), 50))
    assert list(itertools.islice(arrival_offsets(math.inf), 5)) == [0.0] * 5


# -- checked input -----------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, message", [
    ({"concurrency": 0}, "concurrency"),
    ({"rate": -1}, "rate"),
    ({"requests": 5, "duration": 3}, "not both"),
    ({"burstiness": 0}, "burstiness"),
    ({"warmup": -1}, "warmup"),
    ({"requests": 0}, "requests"),
])
def test_bad_load_shapes_say_what_to_change(kwargs, message):
    with pytest.raises(InvalidBenchmark, match=message):
        make_shape(**kwargs)


def test_shape_defaults_to_a_closed_loop_of_one_user():
    shape = make_shape()
    assert not shape.open_loop and shape.users == 1 and shape.requests == 64


def test_run_refuses_what_is_not_a_server_and_mixed_workloads():
    with pytest.raises(InvalidBenchmark, match="not a server"):
        bench.run(object())
    server = type("S", (), {"url": "http://127.0.0.1:9", "model": "m", "headers": lambda self: {}})()
    with pytest.raises(InvalidBenchmark, match="one of workload=, prompts= and dataset="):
        bench.run(server, prompts=["a"], workload="demo")
    with pytest.raises(InvalidBenchmark, match="synthetic"):
        bench.run(server, prompts=["a"], input_tokens=5)
    with pytest.raises(InvalidBenchmark, match="timeout"):
        bench.run(server, timeout=0)
    with pytest.raises(InvalidBenchmark, match="concurrency=.*rates="):
        bench.sweep(server)


# -- workloads -------------------------------------------------------------------------------
def _fake_tokenizer(bos: bool = True):
    async def count(text: str, add_special: bool) -> int:
        return len(text.split()) + (1 if (bos and add_special) else 0)

    return count


def test_synthetic_prompts_hit_the_asked_length_as_the_server_counts_it():
    workload = Synthetic(input_tokens=50, output_tokens=8, distinct=5)
    asyncio.run(workload.prepare(_fake_tokenizer(), requests=100))
    prompts = [workload.prompt(i) for i in range(5)]
    assert all(p.expected_prompt_tokens == 50 and len(p.text.split()) == 49 for p in prompts)  # + BOS
    assert len({p.text for p in prompts}) == 5  # distinct: no shared prefix for a cache to exploit
    assert workload.prompt(5) == prompts[0]


def test_synthetic_without_a_tokenizer_uses_one_word_per_token():
    async def none(text: str, add_special: bool) -> None:
        return None

    workload = Synthetic(input_tokens=20, output_tokens=4, api="chat", distinct=2)
    asyncio.run(workload.prepare(none, requests=2))
    prompt = workload.prompt(0)
    assert prompt.messages and len(prompt.messages[0]["content"].split()) == 20 and prompt.expected_prompt_tokens is None


def test_conversation_files_openai_and_sharegpt(tmp_path):
    jsonl = tmp_path / "chats.jsonl"
    jsonl.write_text("\n".join(json.dumps(row) for row in [
        {"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"},
                      {"role": "assistant", "content": "hello there friend"}]},
        {"messages": [{"role": "assistant", "content": "no user turn"}]},
    ]))
    sharegpt = tmp_path / "sharegpt.json"
    sharegpt.write_text(json.dumps([{"conversations": [{"from": "human", "value": "q1"}, {"from": "gpt", "value": "a1"},
                                                       {"from": "human", "value": "q2"}]}]))
    [(messages, reply)] = read_conversations(jsonl)
    assert [m["role"] for m in messages] == ["system", "user"] and reply == "hello there friend"
    [(messages, reply)] = read_conversations(sharegpt)
    assert [m["content"] for m in messages] == ["q1", "a1", "q2"] and reply is None
    workload = Conversations(jsonl)
    asyncio.run(workload.prepare(_fake_tokenizer(), requests=10))
    assert workload.prompt(0).max_tokens == 3  # the reply's length, as the server's tokenizer counts it
    with pytest.raises(InvalidBenchmark, match="no usable conversation"):
        Conversations(_write(tmp_path / "empty.jsonl", '{"x": 1}\n'))
    with pytest.raises(InvalidBenchmark, match="not a file"):
        Conversations(tmp_path / "missing.jsonl")


def _write(path, text):
    path.write_text(text)
    return path


def test_prompt_lists_and_demo_tasks():
    workload = Prompts(["a", [{"role": "user", "content": "b"}]], output_tokens=5)
    assert workload.prompt(1).messages == ({"role": "user", "content": "b"},) and workload.exact_output
    demo = demo_tasks(n=10)
    contents = [demo.prompt(i).messages[0]["content"] for i in range(len(demo))]
    assert contents[0].startswith("reverse: ") and contents[1].startswith("add: ")
    assert not demo.exact_output
    with pytest.raises(InvalidBenchmark, match="choose from"):
        demo_tasks("juggle")


# -- engine knowledge --------------------------------------------------------------------------
def test_each_engine_asks_for_per_chunk_token_counts_and_exact_lengths():
    llama, vllm, sglang = (get_engine(n) for n in ("llamacpp", "vllm", "sglang"))
    assert llama.bench_body(8, True) == {"stream_options": {"include_usage": True}, "timings_per_token": True,
                                         "ignore_eos": True}
    assert llama.bench_chunk_tokens({"timings": {"predicted_n": 3}}) == 3
    for engine in (vllm, sglang):
        body = engine.bench_body(8, True)
        assert body["stream_options"] == {"include_usage": True, "continuous_usage_stats": True}
        assert body["ignore_eos"] is True and body["min_tokens"] == 8
        assert engine.bench_chunk_tokens({"usage": {"completion_tokens": 5}}) == 5
        assert engine.tokenize_count({"count": 7, "tokens": [1] * 7}) == 7
    assert llama.tokenize_request("m", "hi", True).json == {"content": "hi", "add_special": True}
    assert vllm.tokenize_request("m", "hi", False).path == "/tokenize"
    assert sglang.tokenize_request("m", "hi", False).path == "/v1/tokenize"


# -- results: save and load --------------------------------------------------------------------
@pytest.mark.parametrize("suffix", [".json", ".csv"])
def test_a_result_saves_and_loads_with_the_same_summary(tmp_path, suffix):
    records = [record(i, i * 0.1, ttft=10 + i, e2el=100 + i, tokens=8, itl=[1.5 + i, 2.25]) for i in range(5)]
    records.append(RequestRecord(index=5, sent_s=0.6, end_s=0.7, status="error", error="HTTP 503: busy",
                                 http_status=503))
    result = bench.BenchResult(records, {"server": "x", "load": "c=2"}, slos={"ttft": 12})
    path = result.save(tmp_path / f"run{suffix}")
    loaded = bench.load(path, slos={"ttft": 12})
    for key, value in result.summary.items():
        if isinstance(value, float):
            assert loaded.summary[key] == pytest.approx(value, nan_ok=True, rel=1e-5), key
        else:
            assert loaded.summary[key] == value, key
    assert loaded.records["itl_ms"].iloc[2] == pytest.approx([3.5, 2.25])
    assert loaded.records["error"].iloc[5] == "HTTP 503: busy"
    with pytest.raises(InvalidBenchmark, match=".json or .csv"):
        result.save(tmp_path / "run.txt")


def test_records_frame_has_one_row_per_request_in_send_order():
    result = bench.BenchResult([record(1, 0.1, 1, 2, 2), record(0, 0.0, 1, 2, 2)])
    frame = result.records
    assert frame["index"].tolist() == [0, 1]
    assert {"ttft_ms", "tpot_ms", "e2el_ms", "itl_ms", "prompt_tokens", "output_tokens", "status"} <= set(frame)


def test_plot_draws_one_line_per_server_with_saturated_points_marked():
    frame = mark_saturation(_sweep_frame([100, 190, 360, 380], [10, 10.5, 11, 21]))
    frame["tpot_median_ms"] = [1, 2, 3, 4]
    figure = bench.plot(frame)
    assert len(figure.data) == 1
    assert list(figure.data[0].marker.symbol) == ["circle", "circle", "circle", "x"]
    with pytest.raises(InvalidBenchmark, match="No column"):
        bench.plot(frame, latency="nope")


# -- the HTTP client's parsing ---------------------------------------------------------------
class _FakeTransport:
    def __init__(self) -> None:
        self.closed = False

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed


def _feed(pieces: list[bytes]) -> tuple[list[bytes], object]:
    events: list[bytes] = []

    async def go():
        protocol = _http._Response(lambda now, payload: events.append(payload))
        protocol.connection_made(_FakeTransport())
        for piece in pieces:  # as asyncio feeds a BufferedProtocol: into its buffer, then buffer_updated()
            buffer = protocol.get_buffer(-1)
            buffer[:len(piece)] = piece
            protocol.buffer_updated(len(piece))
        if not protocol.done.done():
            protocol.connection_lost(None)
        try:
            return await protocol.done
        except Exception as exc:  # noqa: BLE001
            return exc

    return events, asyncio.run(go())


def _chunked(*parts: bytes) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"


def test_sse_over_chunked_encoding_split_anywhere():
    body = _chunked(b'data: {"a":1}\n\ndata: {"a"', b':2}\n\n: ping\n\ndata: [DONE]\n\n')
    wire = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + body
    for size in (1, 2, 3, 7, len(wire)):
        events, outcome = _feed([wire[i:i + size] for i in range(0, len(wire), size)])
        assert events == [b'{"a":1}', b'{"a":2}'], size
        assert isinstance(outcome, tuple) and outcome[0] == 200


def test_crlf_events_and_close_delimited_bodies():
    wire = b"HTTP/1.1 200 OK\r\n\r\ndata: {\"x\":1}\r\n\r\ndata: [DONE]\r\n\r\n"
    events, outcome = _feed([wire])
    assert events == [b'{"x":1}'] and isinstance(outcome, tuple)


def test_error_status_and_early_close_are_errors():
    events, outcome = _feed([b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\nbusy"])
    assert isinstance(outcome, _http.HTTPStatusError) and outcome.status == 503 and "busy" in str(outcome)
    unfinished = _chunked(b'data: {"a":1}\n\n')[:-5]  # no last chunk: the server went away mid-stream
    events, outcome = _feed([b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + unfinished])
    assert events == [b'{"a":1}'] and isinstance(outcome, _http.StreamBroken)


def test_requests_say_connection_close():
    endpoint = _http.Endpoint.parse("http://127.0.0.1:8080/proxy")
    wire = _http.request_bytes(endpoint, "/v1/completions", b"{}", {"Authorization": "Bearer k"}, stream=True)
    assert wire.startswith(b"POST /proxy/v1/completions HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n")
    assert b"\r\nConnection: close\r\n" in wire and b"Authorization: Bearer k" in wire


def test_a_sweep_keeps_its_rows_when_interrupted_or_when_a_server_fails():
    from servekit.bench.sweeps import run_sweep
    from servekit.errors import ServekitError

    def fake_result(level: float, interrupted: bool = False) -> bench.BenchResult:
        records = [record(i, 0.0, ttft=10, e2el=100 * level, tokens=10) for i in range(int(level))]
        return bench.BenchResult(records, interrupted=interrupted)

    def point(label: str, server: object, level: float) -> bench.BenchResult:
        if label == "broken" and level == 2:
            raise ServekitError("the server went away")
        if label == "ok" and level == 4:
            raise KeyboardInterrupt
        return fake_result(level)

    frame = run_sweep([("broken", None), ("ok", None), ("never", None)], "concurrency", [1, 2, 4], point,
                      lambda server: "fake")
    assert frame["server"].tolist() == ["broken", "broken", "ok", "ok"]
    assert frame["aborted"].iloc[1] == "the server went away"
    assert frame["concurrency"].tolist() == [1, 2, 1, 2]


# -- the client's own speed: uvloop and orjson where installed ------------------------------------
def test_the_load_generator_runs_on_uvloop_unless_asyncio_is_asked_for(monkeypatch):
    from servekit.bench import runner

    uvloop = pytest.importorskip("uvloop", reason="uvloop is a dependency except on Windows")
    loop = runner.new_loop()
    try:
        assert isinstance(loop, uvloop.Loop)
    finally:
        loop.close()
    monkeypatch.setenv("SERVEKIT_BENCH_LOOP", "asyncio")
    loop = runner.new_loop()
    try:
        assert not isinstance(loop, uvloop.Loop) and isinstance(loop, asyncio.AbstractEventLoop)
    finally:
        loop.close()


def test_chunks_parse_the_same_with_orjson_and_with_json_including_what_orjson_refuses(monkeypatch):
    from servekit.bench import runner

    chunk = b'{"choices":[{"delta":{"content":"h\\u00e9"}}],"usage":{"completion_tokens":3}}'
    assert runner._parse(chunk) == json.loads(chunk)
    assert math.isnan(runner._parse(b'{"x": NaN}')["x"])  # orjson refuses NaN; the json module reads it
    monkeypatch.setattr(runner, "_fast_loads", None)
    assert runner._parse(chunk) == json.loads(chunk)


def test_an_adapter_applies_to_every_request_as_the_server_says():
    from servekit.bench.target import target_of

    class WithAdapters:
        url, base_url, model, name, engine = "http://127.0.0.1:9", "http://127.0.0.1:9/v1", "base", "s", "llamacpp"

        def headers(self):
            return {}

        def lora_request_options(self, adapter):
            if adapter != "next":
                raise ValueError(f"the server has no adapter {adapter!r} (it has: next)")
            return {"model": "base", "extra_body": {"lora": [{"id": 0, "scale": 1.0}]}}

    target = target_of(WithAdapters(), adapter="next")
    assert target.extra_body == {"lora": [{"id": 0, "scale": 1.0}]} and target.label == "s+next"
    assert target_of(WithAdapters()).extra_body == {}
    with pytest.raises(InvalidBenchmark, match="no adapter 'opposite'"):
        target_of(WithAdapters(), adapter="opposite")


def test_bench_line_takes_an_adapter():
    from servekit.bench import commandline

    args = commandline.parse_line("quick --concurrency 2 --adapter next")
    assert commandline.plan(args, [object()]).options["adapter"] == "next"
