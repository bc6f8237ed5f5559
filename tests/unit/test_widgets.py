"""servekit.widgets without a server: model discovery, chart data, the static fallback, the chat's numbers,
the launcher's own checks. tests/integration/test_widgets_live.py drives the widgets against real llama-servers."""

from __future__ import annotations

import math
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest

pytest.importorskip("ipywidgets")
pytest.importorskip("ipywidgets")

from servekit import widgets  # noqa: E402


def test_import_servekit_does_not_import_widgets():
    code = "import servekit, sys; print(any(m in sys.modules for m in ('servekit.widgets', 'ipywidgets')))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() \
        == "False"


def test_find_models_lists_demo_names_gguf_files_and_hf_folders(tmp_path: Path):
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "tiny-q4_k_m.gguf").write_bytes(b"GGUF")
    (tmp_path / "models" / "mmproj-tiny.gguf").write_bytes(b"GGUF")  # a vision projector is not a model
    hf = tmp_path / "my-llama"
    hf.mkdir()
    (hf / "config.json").write_text("{}")
    (hf / "model.safetensors").write_bytes(b"")
    (hf / "nested.gguf").write_bytes(b"GGUF")  # inside an HF folder: the folder is the model
    (tmp_path / ".venv").mkdir()
    (tmp_path / ".venv" / "hidden.gguf").write_bytes(b"GGUF")
    (tmp_path / "notes.txt").write_text("")
    found = widgets.find_models([tmp_path])
    models = {choice.model: choice.kind for choice in found}
    assert models["demo"] == "demo" and models["demo-tiny"] == "demo"
    assert models[str(tmp_path / "models" / "tiny-q4_k_m.gguf")] == "gguf"
    assert models[str(hf)] == "hf"
    assert not any(name.endswith(("hidden.gguf", "mmproj-tiny.gguf", "nested.gguf", "notes.txt")) for name in models)


def test_find_models_is_bounded(tmp_path: Path):
    for k in range(30):
        (tmp_path / f"m{k:02d}.gguf").write_bytes(b"GGUF")
    found = widgets.find_models([tmp_path], limit=12)
    assert len([choice for choice in found if choice.kind == "gguf"]) == 12


def test_series_keeps_a_bounded_window_and_nan_for_missing_values():
    series = widgets._Series(window_s=10.0, max_points=100)
    start = datetime(2024, 1, 1, 12, 0, 0)
    for k in range(30):
        series.add({"time": start + timedelta(seconds=k), "generation_tokens_per_s": float(k),
                    "requests_running": None, "ttft_p50": math.nan})
    assert len(series.x) == 11  # 10 s of samples, both ends included
    assert list(series.values["generation_tokens_per_s"])[-1] == 29.0
    assert series.has("generation_tokens_per_s")
    assert not series.has("requests_running") and not series.has("ttft_p50")
    assert series.x[-1] - series.x[-2] == 1000.0


def test_series_respects_max_points():
    series = widgets._Series(window_s=3600.0, max_points=5)
    for k in range(9):
        series.add({"time": datetime(2024, 1, 1) + timedelta(seconds=k)})
    assert len(series.x) == 5


def test_static_chart_draws_each_server_and_says_when_there_is_no_data():
    servers = [SimpleNamespace(name="a"), SimpleNamespace(name="b")]
    series = [widgets._Series(600.0, 100), widgets._Series(600.0, 100)]
    for k in range(5):
        stamp = datetime(2024, 1, 1) + timedelta(seconds=k)
        series[0].add({"time": stamp, "generation_tokens_per_s": 10.0 * k})
        series[1].add({"time": stamp, "generation_tokens_per_s": 5.0})
    tokens = widgets._svg_chart(widgets.CHARTS[0], servers, series)
    assert tokens.startswith("<svg") and tokens.count("<polyline") == 2
    assert widgets.PALETTE[0] in tokens and widgets.PALETTE[1] in tokens
    latency = widgets._svg_chart(widgets.CHARTS[3], servers, series)
    assert "<polyline" not in latency and "no data" in latency


def test_reply_stats_come_from_usage_and_first_token():
    stats = widgets.ReplyStats(ttft_s=0.25, total_s=1.25, prompt_tokens=12, completion_tokens=11, decode_s=1.0)
    assert stats.tokens_per_s == 10.0
    text = stats.describe()
    assert "TTFT 250 ms" in text and "10.0 tokens/s" in text and "12 prompt + 11 completion tokens" in text
    silent = widgets.ReplyStats(ttft_s=0.1, total_s=0.2)
    assert silent.tokens_per_s is None and "no usage report" in silent.describe()


def test_read_tail_reads_only_when_the_log_changed(tmp_path: Path):
    log = tmp_path / "server.log"
    log.write_text("".join(f"line {k}\n" for k in range(100)))
    tail, seen = widgets._read_tail(log, 3, None)
    assert tail == "line 97\nline 98\nline 99"
    assert widgets._read_tail(log, 3, seen) == (None, seen)
    with open(log, "a") as handle:
        handle.write("line 100\n")
    tail, _ = widgets._read_tail(log, 2, seen)
    assert tail == "line 99\nline 100"


def test_launcher_needs_an_engine_and_a_model(tmp_path: Path):
    launcher = widgets.Launcher(roots=[tmp_path])
    try:
        assert launcher.checked.wait(120)
        launcher.engine = None
        assert launcher.start() is None
        assert "Choose an installed engine" in launcher.message
        launcher.engine = next(iter(launcher._buttons))
        launcher.set(model="  ")
        assert launcher.start() is None
        assert "Choose or type a model" in launcher.message
    finally:
        launcher.close()


def test_launcher_options_leave_defaults_to_the_engine(tmp_path: Path):
    launcher = widgets.Launcher(roots=[tmp_path])
    try:
        assert launcher.options() == {}
        launcher.set(ctx=2048, parallel=4, lora="next=/a.gguf, opposite=/b.gguf", cpu=True)
        assert launcher.options() == {"ctx": 2048, "parallel": 4, "cpu": True,
                                      "lora": ["next=/a.gguf", "opposite=/b.gguf"]}
    finally:
        launcher.checked.wait(120)
        launcher.close()


def test_numbers_read_as_people_write_them():
    from servekit.widgets import _fmt, _human

    assert [_human(x) for x in (0.25, 18, 999, 4590.2, 17000, 2.5e6)] == ["0.25", "18", "999", "4.59k", "17k", "2.5M"]
    assert _fmt(4590.2, " tok/s", 1.0) == "4.59k tok/s" and _fmt(None, " ms", 1000) == "– ms"


def _snap(label: str, at: float, tokens: int, in_flight: int, done: bool = False, ttfts=()):
    from servekit.bench import BenchProgress
    from servekit.bench.records import RequestRecord

    records = tuple(RequestRecord(index=i, ttft_ms=t) for i, t in enumerate(ttfts))
    return BenchProgress(label=label, phase="done" if done else "running", wall_time=at, elapsed_s=0.0, total=None,
                         duration_s=4.0, sent=0, completed=len(ttfts), failed=0, in_flight=in_flight,
                         output_tokens=tokens, new_records=records)


def test_bench_chart_adds_a_point_a_second_per_server_from_the_clients_counts():
    chart = widgets.BenchChart({"q4": SimpleNamespace(), "q4 big": SimpleNamespace()})  # no recorders to follow
    t0 = 1_800_000_000.0
    for step in range(9):  # progress every 0.25 s, 100 tokens each: 400 tok/s
        chart(_snap("q4 big c=2", t0 + step * 0.25, 100 * step, 2, ttfts=[10.0, 30.0] if step == 3 else ()))
    chart(_snap("q4 c=1", t0 + 2.5, 0, 1))  # the longest name that fits: "q4 big c=2" is not "q4"'s
    chart(_snap("q4 c=1", t0 + 3.6, 50, 1))
    assert chart.points(1) == 2 and chart.points(0) == 1
    big = chart._series[1]
    assert list(big.values["client_tokens_per_s"]) == [400.0, 400.0] and list(big.values["in_flight"]) == [2, 2]
    assert big.values["ttft_p50"][0] == 30.0 and math.isnan(big.values["ttft_p50"][1])
    assert math.isnan(big.values["generation_tokens_per_s"][0])  # no server numbers: a gap, never a zero
    chart(_snap("q4 big c=2", t0 + 2.1, 850, 0, done=True))  # just after a point: counts only, no spike
    assert chart.points(1) == 2 and big.latest["in_flight"] == 0
    assert "<b>q4 big</b> c=2 · " in chart._summary.value and "<svg" in chart.static_html()
    assert chart.redraws == 3
    chart.close()
