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


# -- the shipped build ---------------------------------------------------------------------------
def _shipped_copy(tmp_path: Path, monkeypatch) -> builder.Artefacts:
    """A private copy of the shipped artefacts (so a test may damage it), installed as the shipped folder."""
    import shutil

    source = builder.shipped()
    assert source is not None
    root = tmp_path / "shipped"
    shutil.copytree(source.root.parent, root)
    monkeypatch.setattr(builder, "SHIPPED_DIR", root)
    return builder.Artefacts(root / builder.BUILD_VERSION)


def _no_training(*_args, **_kwargs):
    raise AssertionError("the first use must not train, convert or create the torch environment")


def test_the_current_build_version_is_shipped_whole_and_intact():
    import json

    source = builder.shipped()
    assert source is not None, "bumped BUILD_VERSION without shipping it: python -m servekit.demo.builder ship"
    manifest = json.loads((source.root / builder.SHIPPED_MANIFEST).read_text())
    assert manifest["build_version"] == builder.BUILD_VERSION
    files = manifest["files"]
    for rel, entry in files.items():
        path = source.root / rel
        assert path.stat().st_size == entry["bytes"] and builder._sha256(path) == entry["sha256"], rel
    needed = {"hf/model.safetensors", "hf/config.json", "hf/tokenizer.json", "hf/tokenizer.model",
              "tokenizer-checks.json", *builder.SHIPPED_GGUF}
    needed |= {f"lora/{n}/{f}" for n in demo.ADAPTERS for f in ("adapter_config.json", "adapter_model.safetensors")}
    assert needed <= set(files)
    assert sum(e["bytes"] for e in files.values()) < 12e6  # the repository carries it
    summary = json.loads(source.hf_marker.read_text())
    assert summary["steps"] == builder.TRAIN_STEPS and summary["seed"] == builder.SEED
    assert summary["accuracy"]["reverse"] >= 0.9


def test_first_use_copies_the_shipped_build_and_quantizes_without_torch(tmp_path, monkeypatch):
    import json

    monkeypatch.setenv("SERVEKIT_CACHE_DIR", str(tmp_path / "cache"))
    for stage in ("_build_hf", "build_python", "_convert_to_gguf"):
        monkeypatch.setattr(builder, stage, _no_training)
    lines: list[str] = []
    report = demo.build(progress=lines.append, gguf=True)
    source, art = builder.shipped(), demo.artefacts()
    assert report.shipped and "shipped with servekit" in str(report) and "--force" in str(report)
    assert "seconds here: copy" in str(report) and "seconds of the build that made it: environment" in str(report)
    assert report.accuracy == json.loads(source.hf_marker.read_text())["accuracy"]
    for rel in ("hf/model.safetensors", "gguf/demo-F16.gguf", "gguf/lora-next.gguf", "lora/opposite/adapter_model.safetensors"):
        assert builder._sha256(art.root / rel) == builder._sha256(source.root / rel), rel
    sizes = {q: art.gguf(q).stat().st_size for q in ("F16", *demo.QUANT_TYPES)}
    assert sizes["Q2_K"] < sizes["Q4_K_M"] < sizes["Q8_0"] < sizes["F16"]  # the ladder, made here
    for name in demo.ADAPTERS:  # PEFT adapters name their base where it now lives
        config = json.loads((art.lora_dir(name) / "adapter_config.json").read_text())
        assert config["base_model_name_or_path"] == str(art.hf_dir)
    assert not list(art.root.glob(".*-partial")) and not (art.root / ".gguf-copy").exists()
    assert any("copying the demo model servekit ships" in line for line in lines)
    assert demo.build(progress=lines.append).shipped  # the second use finds it ready


def test_a_damaged_shipped_file_is_refused_and_nothing_is_left_half_copied(tmp_path, monkeypatch):
    from servekit.errors import BuildError

    monkeypatch.setenv("SERVEKIT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(builder, "_build_hf", _no_training)
    copy = _shipped_copy(tmp_path, monkeypatch)
    weights = copy.hf_dir / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-10] + b"0" * 10)  # a truncated download, a bad disk
    with pytest.raises(BuildError, match=r"damaged or missing .*model\.safetensors.*--force"):
        demo.build(progress=lambda line: None, gguf=False)
    art = demo.artefacts()
    assert not art.has_hf() and not art.hf_dir.exists() and not (art.root / ".hf-partial").exists()


def test_a_rebuild_is_compared_with_the_shipped_build(tmp_path, monkeypatch):
    import json
    import shutil

    monkeypatch.setenv("SERVEKIT_CACHE_DIR", str(tmp_path / "cache"))
    source, art = builder.shipped(), demo.artefacts()
    for name in builder.SHIPPED_HF:  # what a rebuild with the same bits leaves in the cache
        (shutil.copytree if (source.root / name).is_dir() else shutil.copyfile)(source.root / name, art.root / name)
    art.hf_marker.write_text(source.hf_marker.read_text())
    builder._compare_with_shipped(art, builder.Display(lambda line: None))
    assert "byte for byte" in str(builder.read_report())

    weights = art.hf_dir / "model.safetensors"  # another machine's floating point: other bits, same skills
    weights.write_bytes(weights.read_bytes()[:-4] + b"\x00\x00\x80\x3f")
    summary = json.loads(art.hf_marker.read_text())
    summary["accuracy"]["add"] = summary["accuracy"]["add"] + 0.05
    art.hf_marker.write_text(json.dumps(summary))
    builder._compare_with_shipped(art, builder.Display(lambda line: None))
    text = str(builder.read_report())
    assert "differs from the shipped build in 1 of" in text and "hf/model.safetensors" in text
    assert "add +5%" in text and "within tolerance" in text


def test_compare_builds_warns_beyond_the_tolerance():
    shipped = {"accuracy": {"reverse": 1.0, "add": 0.6}}
    lines = builder.compare_builds({"accuracy": {"reverse": 0.97, "add": 0.3}}, shipped, ["a"], ["b"])
    assert "add -30%" in lines[0] and "reverse -3%" in lines[0]
    assert lines[1].startswith("warning: does NOT reproduce") and "30%" in lines[1]
    assert builder.compare_builds({}, shipped, ["a", "b"], []) == ["reproduces the shipped build byte for byte (2 files compared)"]
