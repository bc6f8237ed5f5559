"""servekit.bench against real engines on 127.0.0.1: llama-server with the demo model. The same run against vLLM on
the CPU and SGLang's CPU mode is in test_demo_tools (it shares their servers with the tool-calling tests)."""

from __future__ import annotations

import _thread
import os
import signal
import threading
import time

import numpy as np
import pytest

import servekit
from servekit import bench

pytestmark = pytest.mark.integration
_SHARED: set[str] = set()  # names of this module's long-lived servers


@pytest.fixture(autouse=True)
def _no_server_outlives_a_test():
    """As in conftest, except for this module's shared servers (one start for many tests)."""
    yield
    strays = [s for s in servekit.running() if s.name not in _SHARED]
    for stray in strays:
        stray.stop()
    assert not strays, f"test left servers running: {[s.name for s in strays]}"


@pytest.fixture(scope="module")
def llama(llama_server_ready):
    """The trained demo model on llama-server with 4 slots, shared by the llama.cpp tests."""
    server = servekit.serve("llamacpp", "demo", name="bench-llama", parallel=4)
    _SHARED.add(server.name)
    yield server
    _SHARED.discard(server.name)
    server.stop()


def generated(server) -> float:
    return server.metrics()["generation_tokens_total"]


class InFlightWatcher:
    """A progress callback that reads, during the run, the server's own requests-in-flight gauge (``seen``)
    next to the load generator's own count (``sent``)."""

    def __init__(self, server):
        self.server = server
        self.seen: list[float] = []
        self.sent: list[int] = []

    def __call__(self, snapshot: bench.BenchProgress) -> None:
        if snapshot.phase == "running" and snapshot.completed >= 1:  # past the first request's start-up
            self.seen.append(self.server.metrics()["requests_running"])
            self.sent.append(snapshot.in_flight)


# -- llama-server -----------------------------------------------------------------------------
@pytest.mark.parametrize("users", [1, 4])
def test_closed_loop_keeps_that_many_requests_in_flight_in_the_servers_own_metrics(llama, users):
    watcher = InFlightWatcher(llama)
    # timed, not counted: a fast CPU finishes several 512-token requests of the demo model in a second
    result = bench.run(llama, concurrency=users, duration=5.0, input_tokens=32, output_tokens=512,
                       on_progress=watcher, progress=False)
    assert result.summary["failed"] == 0 and result.summary["completed"] >= 2 * users
    assert len(watcher.seen) >= 5, "the run was too short to watch"
    assert np.median(watcher.sent) >= users - 1  # a user is idle only between its requests
    # The server agrees: all of them at some point, never more. Its gauge dips below the client's count
    # (seen on a busy 2-core CI machine: 1, 4, 1, 0, 4, 3 …): a slot counts only from its prompt's start to
    # the last token generated, while the client also counts connecting, queueing and reading the stream.
    assert max(watcher.seen) == users
    assert result.summary["max_in_flight"] == users
    records = result.records
    assert set(records["user"]) == set(range(users))


def test_exact_lengths_and_output_tokens_equal_the_servers_counter(llama):
    before = generated(llama)
    result = bench.run(llama, concurrency=3, requests=30, warmup=3, input_tokens=40, output_tokens=24, progress=False)
    after = generated(llama)
    records = result.records
    assert (records["status"] == "ok").all()
    assert int(records["output_tokens"].sum()) == after - before  # every request, warm-up included
    assert result.summary["total_output_tokens"] == 30 * 24  # the measured ones
    assert (records["output_tokens"] == 24).all()  # ignore_eos: exactly what was asked
    assert (records["prompt_tokens"] == 40).all()  # checked with the server's /tokenize, BOS included
    assert (records["expected_prompt_tokens"] == 40).all()
    assert (records["token_counts"] == "per-chunk").all()  # timings_per_token: predicted_n in every chunk
    itl_counts = records["itl_ms"].map(len) + records["first_chunk_tokens"]
    assert (itl_counts == 24).all()  # one gap per token after the first chunk's
    assert result.summary["warmup_requests"] == 3 and result.summary["requests"] == 30


def test_open_loop_poisson_arrivals_have_the_asked_mean_rate(llama):
    rate, requests = 40.0, 240
    result = bench.run(llama, rate=rate, requests=requests, input_tokens=16, output_tokens=4, seed=11,
                       progress=False)
    records = result.records.sort_values("sent_s")
    assert result.summary["failed"] == 0
    sent = records["sent_s"].to_numpy()
    measured_rate = (len(sent) - 1) / (sent[-1] - sent[0])
    assert measured_rate == pytest.approx(rate, rel=0.2)  # 240 exponential gaps: 3 sigma is ~20 %
    scheduled = records["scheduled_s"].to_numpy()
    assert np.median(sent - scheduled) < 0.05  # the client sends when the schedule says (no cap: no queue)
    # nearly every request leaves on time (a stall of this shared machine may hold back a few; one late last send
    # once made the rate between the first and last send 9 % low while 239 of 240 gaps were on schedule)
    assert np.percentile(sent - scheduled, 90) < 0.1
    gaps = np.diff(sent)
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, rel=0.25)  # exponential gaps: Poisson arrivals
    assert result.records["user"].isna().all()


def test_demo_task_workload_and_goodput(llama):
    result = bench.run(llama, concurrency=2, requests=10, workload="demo", slos={"ttft": 60_000, "e2el": 60_000},
                       progress=False)
    assert result.summary["completed"] == 10
    assert result.summary["goodput"] == pytest.approx(result.summary["request_throughput"])
    assert result.config["workload"] == "demo-tasks"


def test_a_server_killed_mid_run_gives_failed_requests_and_partial_results(llama_server_ready):
    server = servekit.serve("llamacpp", "demo", name="bench-victim", parallel=2)
    try:
        kill_after = 3.0
        threading.Timer(kill_after, os.kill, (server.pid, signal.SIGKILL)).start()
        started = time.monotonic()
        result = bench.run(server, concurrency=2, requests=100_000, input_tokens=16, output_tokens=64, timeout=20,
                           progress=False)
        elapsed = time.monotonic() - started
    finally:
        server.stop()
    assert elapsed < kill_after + 10, f"took {elapsed:.1f} s after the server died"
    summary = result.summary
    assert summary["completed"] > 0 and summary["failed"] > 0
    assert result.aborted and "could not reach" in result.aborted
    failed = result.records[result.records["status"] == "error"]
    assert failed["error"].str.len().gt(0).all()
    assert summary["total_output_tokens"] == summary["completed"] * 64  # failed ones never count


@pytest.fixture
def python_sigint():
    """Python's own Ctrl-C handler, as in a kernel: interrupt_main() does nothing while SIGINT is ignored
    (pytest run as a background job of a script inherits an ignored SIGINT)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.mark.usefixtures("python_sigint")
def test_an_interrupted_sweep_returns_what_it_measured(llama):
    fired = []

    def interrupt_during_second_point(snapshot: bench.BenchProgress) -> None:
        # while it runs: the last snapshot of a point (phase "done") comes after the point is over
        if snapshot.label.endswith("c=2") and snapshot.phase == "running" and snapshot.completed >= 1 and not fired:
            fired.append(snapshot.completed)
            _thread.interrupt_main()  # what a Jupyter kernel interrupt (SIGINT) does

    table = bench.sweep(llama, concurrency=[1, 2, 4], requests=12, input_tokens=16, output_tokens=512,
                        on_progress=interrupt_during_second_point, progress=False)
    assert fired, "the second point ended before it could be interrupted"
    assert table["concurrency"].tolist() == [1, 2]
    assert table["interrupted"].tolist() == [False, True]
    assert table["completed"].iloc[0] == 12 and 1 <= table["completed"].iloc[1] < 12
    assert {"ttft_p99_ms", "tpot_median_ms", "itl_p90_ms", "e2el_mean_ms", "output_throughput", "saturated"} <= set(table)
    assert llama.ping()  # the server is fine; the cancelled streams were closed


def test_sweep_over_two_servers_makes_one_table(llama):
    table = bench.sweep({"slots-4": llama, "again": llama}, concurrency=[1, 4], requests=16, input_tokens=16,
                        output_tokens=32, progress=False)
    assert table[["server", "concurrency"]].values.tolist() == [["slots-4", 1], ["slots-4", 4], ["again", 1],
                                                                 ["again", 4]]
    assert (table["failed"] == 0).all() and table["engine"].eq("llamacpp").all()
    figure = bench.plot(table)
    assert [trace.name for trace in figure.data] == ["slots-4", "again"]
