"""Pieces of the demo build that run without torch: environment recipe, progress display, report, paths."""

from __future__ import annotations

from pathlib import Path

import pytest

from servekit import demo
from servekit.demo import builder


def test_build_environment_pins_cpu_torch_first(monkeypatch):
    monkeypatch.setenv("SERVEKIT_TORCH_INDEX_URL", "https://download.pytorch.org/whl/cpu")
    steps = builder.build_env_steps()
    assert steps[0] == ["install", "--no-compile", f"torch=={builder.TORCH_VERSION}+cpu",
                        "--extra-index-url", "https://download.pytorch.org/whl/cpu"]
    assert "--extra-index-url" not in steps[1]  # only torch may come from PyTorch's index
    packages = " ".join(steps[1])
    for needed in ("transformers==", "sentencepiece", "protobuf", "peft", "safetensors", "numpy"):
        assert needed in packages


def test_artefact_paths_follow_the_names_llama_server_reports():
    art = builder.Artefacts(Path("/x/demo/v"))
    assert art.gguf() == Path("/x/demo/v/gguf/demo-F16.gguf")
    assert art.gguf("Q4_K_M").name == "demo-Q4_K_M.gguf"
    # llama-server names an adapter by its file; servekit strips "lora-" to get the adapter's name back
    assert art.lora_gguf("next").stem == "lora-next"
    assert art.lora_dir("opposite") == Path("/x/demo/v/lora/opposite")
    assert not art.has_hf() and not art.has_gguf()


def test_artefacts_live_in_the_user_cache_by_version(tmp_path, monkeypatch):
    monkeypatch.setenv("SERVEKIT_CACHE_DIR", str(tmp_path))
    assert demo.artefacts().root == tmp_path / "demo" / builder.BUILD_VERSION
    assert builder.read_report() is None  # nothing built in an empty cache


def test_progress_lines_every_tenth_and_messages():
    lines: list[str] = []
    display = builder.Display(lines.append)
    for step in range(101):
        display.step("train", step, 100, 1.0 / (step + 1))
    display.message("done")
    steps = [line for line in lines if line.startswith("train: step")]
    assert len(steps) == 11 and steps[-1] == "train: step 100/100, loss 0.010"
    assert lines[-1] == "done"


def test_report_text_lists_accuracies_and_sizes():
    report = builder.BuildReport(
        root=Path("/c/demo/v"), seconds={"train": 170.2}, sizes={"gguf/demo-F16.gguf": 3_162_112},
        accuracy={"reverse": 1.0, "add": 0.5}, adapter_share={"next": 0.99}, parameters=1_573_120,
    )
    text = str(report)
    assert "1.57 M parameters" in text and "train 170" in text
    assert "reverse 100%" in text and "add 50%" in text and "next 99%" in text
    assert "gguf/demo-F16.gguf" in text and "3.16 MB" in text


def test_worker_events_become_messages_then_steps():
    lines: list[str] = []
    display = builder.Display(lines.append)
    builder._show({"stage": "train", "step": 0, "total": 100, "message": "1.57 M parameters"}, display)
    builder._show({"stage": "train", "step": 50, "total": 100, "loss": 2.0}, display)
    builder._show({"stage": "eval", "message": "reverse 100%, add 62%"}, display)
    assert lines == ["train: 1.57 M parameters", "train: step 50/100, loss 2.000", "eval: reverse 100%, add 62%"]


def test_the_ladder_uses_llama_cpps_quantizer_from_the_prebuilt_package(monkeypatch, tmp_path):
    from servekit.engines import _llamacpp_quantize, llamacpp
    from servekit.errors import BuildError

    what, quantize = builder._quantizer(tmp_path / "log")
    assert quantize is _llamacpp_quantize.quantize and "prebuilt" in what
    monkeypatch.setattr(_llamacpp_quantize, "available", lambda: False)
    monkeypatch.setattr(llamacpp, "llama_quantize_binary", lambda: tmp_path / "bin" / "llama-quantize")
    what, _ = builder._quantizer(tmp_path / "log")
    assert what == "llama-quantize"

    def missing():
        raise BuildError("llama-quantize is not installed: run `servekit install llamacpp`.")

    monkeypatch.setattr(llamacpp, "llama_quantize_binary", missing)
    with pytest.raises(BuildError, match="quantizer"):
        builder._quantizer(tmp_path / "log")
