"""The prebuilt llama.cpp server's launcher: llama-server flags onto xllamacpp's CommonParams, or refused by name."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from servekit.engines import _llamacpp_prebuilt as launcher
from servekit.engines import get_engine
from servekit.engines.llamacpp import BUILD_ENV, server_build
from servekit.errors import InvalidSpec
from servekit.spec import ServeSpec


def test_every_flag_servekit_builds_is_honoured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(BUILD_ENV, "prebuilt")
    model = tmp_path / "m.gguf"
    adapters = [tmp_path / "a.gguf", tmp_path / "b.gguf"]
    for path in (model, *adapters):
        path.write_bytes(b"")
    spec = ServeSpec.build("llamacpp", str(model), port=8123, ctx=512, parallel=3, metrics=True, tool_parser="auto",
                           cpu=True, loras=(("a", str(adapters[0])), ("b", str(adapters[1]))), api_key="sk-x")
    engine = get_engine("llamacpp")
    command = engine.command(spec)
    assert command[:3] == [sys.executable, "-m", launcher.__name__]
    key_file = tmp_path / "key"
    key_file.write_text("sk-x\n")
    params = launcher.parse([*command[3:], "--api-key-file", str(key_file)])
    assert params.model.path == str(model) and params.port == 8123 and params.hostnames == ["127.0.0.1"]
    assert params.n_ctx == 512 and params.n_parallel == 3 and params.n_gpu_layers == 0
    assert params.endpoint_metrics and params.endpoint_slots and params.use_jinja
    assert [(a.path, a.scale) for a in params.lora_adapters] == [(str(adapters[0]), 0.0), (str(adapters[1]), 0.0)]
    assert params.cache_ram_mib == 0 and params.slot_save_path == "."
    assert params.api_keys == ["sk-x"]
    assert params.model_alias == {"m"}


def test_sampling_flags_reach_the_servers_defaults() -> None:
    """``--ignore-eos`` and the sampling flags set the server's default sampling (as llama-server's do); the
    integration tests pass ``-- --ignore-eos`` to stream until max_tokens on either build."""
    params = launcher.parse(["-m", "x.gguf", "--ignore-eos", "--temp", "0.5", "--top-k", "7", "--seed", "3"])
    sampling = params.sampling
    assert sampling.ignore_eos and sampling.temp == 0.5 and sampling.top_k == 7 and sampling.seed == 3
    assert not launcher.parse(["-m", "x.gguf"]).sampling.ignore_eos


def test_llama_server_defaults_keep_metrics_and_slots_off() -> None:
    params = launcher.parse(["-m", "x.gguf"])
    assert not params.endpoint_metrics and not params.endpoint_slots


def test_slots_are_automatic_unless_asked_as_in_llama_server() -> None:
    """llama-server's ``-np`` defaults to auto: 4 slots sharing one KV pool (CommonParams' own default is 1)."""
    auto = launcher.parse(["-m", "x.gguf"])
    assert auto.n_parallel == 4 and auto.kv_unified
    assert launcher.parse(["-m", "x.gguf", "-np", "-1"]).n_parallel == 4
    asked = launcher.parse(["-m", "x.gguf", "-np", "2"])
    assert asked.n_parallel == 2 and not asked.kv_unified


@pytest.mark.parametrize("argv,words", [
    (["-m", "x.gguf", "--no-mmap"], "invalid argument: --no-mmap"),
    (["-m", "x.gguf", "--mlock"], "servekit install llamacpp --build"),
    (["-m", "x.gguf", "-c"], "-c needs a value"),
    (["-m", "x.gguf", "-c", "many"], "error while handling argument -c"),
    (["-m", "x.gguf", "--flash-attn", "maybe"], "one of on, off, auto"),
    (["--port", "1"], "no model given"),
    (["-m", "x.gguf", "--lora", "/nowhere/a.gguf"], "does not exist"),
])
def test_a_flag_it_cannot_honour_is_refused_by_name(argv: list[str], words: str) -> None:
    with pytest.raises(launcher.BadFlag, match=words.replace("-", r"\-").replace(".", r"\.")):
        launcher.parse(argv)


def test_the_launcher_exits_2_with_the_flag_named() -> None:
    out = subprocess.run([sys.executable, "-m", launcher.__name__, "-m", "x.gguf", "--no-such-flag"],
                         capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == launcher.EXIT_BAD_FLAG
    assert "invalid argument: --no-such-flag" in out.stderr


def test_the_build_is_chosen_by_what_is_here_or_forced(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(BUILD_ENV, "prebuilt")
    assert server_build() == "prebuilt"
    monkeypatch.setenv(BUILD_ENV, "compiled")
    monkeypatch.setenv("SERVEKIT_LLAMA_SERVER", str(tmp_path / "llama-server"))
    assert server_build() == "compiled"  # the override names a binary: compiled, whether it runs is checked later
    monkeypatch.setenv(BUILD_ENV, "fastest")
    with pytest.raises(InvalidSpec, match="compiled, prebuilt"):
        server_build()
