"""The quantization ladder without llama-quantize: llama.cpp's quantizer from the prebuilt package writes, for
every type servekit teaches, the tensors llama-quantize writes — same types, same bytes — and the result serves.

Needs the demo model's F16 GGUF and the compiled build's ``llama-quantize`` (``make test`` installs both).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

import servekit
from servekit import demo
from servekit.demo import tasks
from servekit.engines import _llamacpp_quantize as quantizer
from servekit.engines import llamacpp
from servekit.errors import BuildError

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("llama_server_ready")]


@pytest.fixture(scope="module")
def f16() -> Path:
    demo.build(gguf=True)
    return demo.artefacts().gguf("F16")


def _tensors(path: Path) -> dict[str, tuple[str, bytes]]:
    from gguf import GGUFReader

    return {t.name: (t.tensor_type.name, np.asarray(t.data).tobytes()) for t in GGUFReader(path).tensors}


def _metadata(path: Path) -> dict[str, object]:
    from gguf import GGUFReader

    return {f.name: f.contents() for f in GGUFReader(path).fields.values() if not f.name.startswith("GGUF.")}


@pytest.mark.parametrize("kind", list(quantizer.LADDER))
def test_the_same_tensors_as_llama_quantize(f16, kind, tmp_path, compiled_build):
    """The reference is llama-quantize, from the compiled build."""
    ours = quantizer.quantize(f16, tmp_path / f"ours-{kind}.gguf", kind)
    theirs = tmp_path / f"llama-quantize-{kind}.gguf"
    subprocess.run([str(llamacpp.llama_quantize_binary()), str(f16), str(theirs), kind], check=True,
                   capture_output=True, timeout=300)
    mine, reference = _tensors(ours), _tensors(theirs)
    assert mine.keys() == reference.keys()
    differ = [name for name in reference if mine[name] != reference[name]]
    assert not differ, [(name, mine[name][0], reference[name][0]) for name in differ]
    assert _metadata(ours) == _metadata(theirs)
    assert ours.stat().st_size == theirs.stat().st_size
    types = {t for t, _ in mine.values()}
    assert types - {"F32"}, "weights are quantized"


def test_bad_kind_is_refused(f16, tmp_path):
    with pytest.raises(BuildError, match="Q4_K_M"):
        quantizer.quantize(f16, tmp_path / "x.gguf", "Q4_K_X")


def test_a_file_it_wrote_serves_and_answers(f16, tmp_path, monkeypatch):
    """The prebuilt server on our Q4_K_M: the reverse task stays right (it holds at every level but Q2_K)."""
    monkeypatch.setenv(llamacpp.BUILD_ENV, "prebuilt")
    path = quantizer.quantize(f16, tmp_path / "demo-Q4_K_M.gguf", "Q4_K_M")
    examples = tasks.held_out("reverse", 20, seed=11)
    with servekit.serve("llamacpp", str(path), name="ours-q4") as server:
        client = server.client()
        right = sum(tasks.is_correct("reverse", e.prompt, client.chat.completions.create(
            model=server.model, messages=e.messages(), temperature=0, max_tokens=16).choices[0].message.content)
            for e in examples)
    assert right >= 0.9 * len(examples)


def test_converters_come_without_a_compiler(tmp_path, monkeypatch):
    """The demo's GGUF conversion needs llama.cpp's converter scripts, not a build: with cc, c++ and cmake
    shadowed by scripts that fail, a fresh cache gets the sources (pip download + unpack) and no binary."""
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    for tool in ("cc", "c++", "gcc", "g++", "clang", "clang++", "cmake", "make"):
        script = shadow / tool
        script.write_text("#!/bin/sh\necho \"$0 must not run\" >&2\nexit 97\n")
        script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{shadow}:{os.environ['PATH']}")
    monkeypatch.setenv("SERVEKIT_CACHE_DIR", str(tmp_path / "cache"))
    source = llamacpp.fetch_llama_cpp_sources()
    assert (source / "convert_hf_to_gguf.py").is_file() and (source / "convert_lora_to_gguf.py").is_file()
    assert source.is_relative_to(tmp_path / "cache")
    assert not (llamacpp.build_root() / "bin").exists(), "nothing was compiled"
    assert llamacpp.fetch_llama_cpp_sources() == source  # the second call finds them
