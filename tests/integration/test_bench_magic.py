"""`%bench` (in a real IPython shell) and `servekit bench` (the command line) against a real llama-server
with the demo model: a sweep with its live chart, a single run, the errors, a saved table."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
from IPython.core.error import UsageError
from IPython.utils.capture import capture_output

import servekit
from servekit import magics
from servekit.bench import BenchResult

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("llama_server_ready")]
SHORT = "--input-tokens 16 --output-tokens 64 --no-progress"


@pytest.fixture()
def server():
    started = servekit.serve("llamacpp", "demo", name="bm", parallel=4)
    yield started
    started.stop()


@pytest.fixture()
def charts(monkeypatch):
    """The live charts %bench makes, kept for the test to look at."""
    made: list = []
    real = magics._bench_chart

    def keep(servers):
        made.append(real(servers))
        return made[-1]

    monkeypatch.setattr(magics, "_bench_chart", keep)
    return made


def _seen(values) -> list[float]:
    return [v for v in values if not math.isnan(v)]


def test_a_sweep_shows_client_and_server_side_by_side_and_returns_its_table(ipython, server, charts):
    with capture_output():
        frame = ipython.run_line_magic("bench", f"bm --concurrency 1,4 --duration 2 {SHORT}")
    assert list(frame["concurrency"]) == [1, 4] and list(frame["server"]) == ["bm", "bm"]
    assert (frame["failed"] == 0).all() and (frame["completed"] > 0).all()
    assert {"ttft_median_ms", "tpot_median_ms", "output_throughput", "saturated"} <= set(frame.columns)

    chart = charts[0]
    assert chart.finished and chart.points() >= 3, "about one point a second over 4 s of load"
    series = chart._series[0]
    assert max(series.values["in_flight"]) == 4  # the client's count reaches the second level's users
    running = _seen(series.values["requests_running"])  # the server's own gauge, on the same axis
    assert running and max(running) <= 4
    assert max(_seen(series.values["generation_tokens_per_s"])) > 0
    assert max(_seen(series.values["client_tokens_per_s"])) > 0 and _seen(series.values["ttft_p50"])
    assert "<svg" in chart.static_html() and "c=4" in chart.static_html()  # what nbconvert and GitHub show


def test_a_single_run_returns_its_result(ipython, server, charts):
    with capture_output():
        result = ipython.run_line_magic("bench", f"bm -c 2 -n 10 {SHORT}")
    assert isinstance(result, BenchResult)
    assert result.summary["completed"] == 10 and result.summary["failed"] == 0
    assert charts[0].finished


def test_bad_bench_lines_say_what_to_do(ipython, server):
    with pytest.raises(UsageError, match="No server named 'ghost'"):
        ipython.run_line_magic("bench", "ghost -c 2")
    with pytest.raises(UsageError, match="--concurrency takes numbers separated by commas"):
        ipython.run_line_magic("bench", "bm --concurrency two")
    with pytest.raises(UsageError, match="unrecognized arguments: --nosuch"):
        ipython.run_line_magic("bench", "bm --nosuch")
    with capture_output() as out:
        ipython.run_line_magic("bench", "--help")
    assert "--concurrency" in out.stdout and "--slo" in out.stdout


def test_the_command_line_sweeps_and_saves_the_table(server, tmp_path):
    saved = tmp_path / "sweep.csv"
    done = subprocess.run([sys.executable, "-m", "servekit.cli", "bench", "bm", "-c", "1,2", "-n", "6",
                           *SHORT.split(), "--save", str(saved)], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    header = done.stdout.splitlines()[0].split()
    assert header[:2] == ["server", "concurrency"] and "output_throughput" in header
    assert saved.read_text().count("\n") == 3  # a header and one row per level
    failed = subprocess.run([sys.executable, "-m", "servekit.cli", "bench", "bm", "--rate", "x"],
                            capture_output=True, text=True, timeout=60, check=False)
    assert failed.returncode == 2 and "--rate takes numbers" in failed.stderr
