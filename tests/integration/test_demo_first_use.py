"""The first use on a fresh machine: an empty user cache, no compiled llama.cpp, no torch environment.
`serve("llamacpp", "demo")` copies the demo model servekit ships, quantizes nothing it was not asked for
beyond the ladder (a second), and the prebuilt server answers as well as the model trained here."""

from __future__ import annotations

import time

import pytest

import servekit
from servekit import demo
from servekit.demo import builder
from servekit.engines.llamacpp import BUILD_ENV

pytestmark = pytest.mark.integration


def _no_training(*_args, **_kwargs):
    raise AssertionError("the first use must not train, convert or create the torch environment")


def test_an_empty_cache_serves_the_shipped_demo_model_within_seconds(tmp_path, monkeypatch):
    monkeypatch.setenv("SERVEKIT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv(BUILD_ENV, "prebuilt")  # what a fresh machine has: the wheel, nothing compiled
    for stage in ("_build_hf", "build_python", "_convert_to_gguf"):
        monkeypatch.setattr(builder, stage, _no_training)
    started = time.monotonic()
    with servekit.serve("llamacpp", "demo+lora-opposite", parallel=4) as server:
        ready_s = time.monotonic() - started
        plain = demo.evaluate(server, n=50, task="reverse")
        opposite = demo.evaluate(server, n=30, adapter="opposite")
    print(f"\nempty cache to a ready server: {ready_s:.1f} s; reverse {plain.accuracy:.0%}, "
          f"opposite shown in {opposite.adapter_share:.0%}")
    assert builder.read_report().shipped
    assert plain.accuracy >= 0.9  # reverse only
    assert opposite.adapter_share >= 0.9  # the shipped LoRA GGUF works on the shipped base
    assert ready_s < 60, "copying and quantizing the shipped model takes seconds, not a training run"
