"""llama.cpp's spec -> command line mapping and model resolution (no server)."""

import os
from pathlib import Path

import pytest

from servekit.engines import get_engine
from servekit.errors import InvalidSpec, ModelNotFound
from servekit.spec import ServeSpec


@pytest.fixture
def engine(monkeypatch, tmp_path):
    fake = tmp_path / "llama-server"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    monkeypatch.setenv("SERVEKIT_LLAMA_SERVER", str(fake))
    return get_engine("llama.cpp")


@pytest.fixture
def gguf(tmp_path) -> Path:
    path = tmp_path / "model-Q4_K_M.gguf"
    path.write_bytes(b"GGUF")
    return path


def command(engine, model, **options):
    options = {"port": 8123, "api_key": "k" * 8, **options}
    spec = engine.resolve(ServeSpec.build("llamacpp", model, **options))
    return spec, engine.command(spec)[1:]


def test_base_command(engine, gguf):
    _, cmd = command(engine, str(gguf))
    assert cmd == ["-m", str(gguf), "--host", "127.0.0.1", "--port", "8123", "--alias", "model-Q4_K_M", "--metrics", "--slots"]


def test_full_command(engine, gguf, tmp_path):
    lora = tmp_path / "style.gguf"
    lora.write_bytes(b"GGUF")
    _, cmd = command(engine, str(gguf), served_name="tiny", ctx=4096, parallel=4, lora={"style": str(lora)},
                     tool_parser="hermes", tensor_parallel=2, cpu=True, metrics=False, extra_args=["--seed", "1"])
    assert cmd == ["-m", str(gguf), "--host", "127.0.0.1", "--port", "8123", "--alias", "tiny", "-c", "4096", "-np", "4", "--lora-scaled", f"{lora}:0", "--cache-ram", "0",
                   "--slot-save-path", ".",
                   "--split-mode", "row", "--jinja", "--n-gpu-layers", "0", "--slots", "--seed", "1"]


def test_hugging_face_repo_uses_hf_flag(engine):
    spec, cmd = command(engine, "ggml-org/gemma-3-1b-it-GGUF", quantization="Q4_K_M", api_key="")
    assert cmd[:2] == ["-hf", "ggml-org/gemma-3-1b-it-GGUF:Q4_K_M"]
    assert "--api-key" not in cmd
    assert spec.served_name == "gemma-3-1b-it-GGUF"


def test_demo_name_resolves_to_a_gguf_file(engine):
    spec, cmd = command(engine, "demo-tiny")
    assert cmd[0] == "-m" and Path(cmd[1]).is_file() and cmd[1].endswith(".gguf")
    assert spec.served_name == "demo-tiny"


@pytest.mark.parametrize("options,match", [({"dtype": "float16"}, "dtype"), ({"memory_fraction": 0.5}, "memory")])
def test_options_that_do_not_apply_are_refused(engine, gguf, options, match):
    with pytest.raises(InvalidSpec, match=match):
        command(engine, str(gguf), **options)


def test_hf_folder_gets_a_convert_hint(engine, tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ModelNotFound, match="convert_hf_to_gguf"):
        command(engine, str(tmp_path))


def test_missing_model_and_lora(engine, gguf):
    with pytest.raises(ModelNotFound, match="neither a local GGUF"):
        command(engine, "./no/such/file.gguf")
    with pytest.raises(ModelNotFound, match="LoRA adapter 'x'"):
        command(engine, str(gguf), lora={"x": "/no/such.gguf"})


def test_log_diagnosis(engine):
    assert "port" in engine.diagnose("couldn't bind HTTP server socket, hostname: 127.0.0.1, port: 1")
    assert "valid GGUF" in engine.diagnose("llama_model_load: error loading model: bad magic")
    assert engine.diagnose("all fine") is None


def test_engine_registry_aliases():
    assert get_engine("llama.cpp") is get_engine("LLAMACPP")
    from servekit.errors import UnknownEngine

    with pytest.raises(UnknownEngine, match="vllm"):
        get_engine("tgi")


def test_requests_name_adapter_scales_explicitly(engine):
    from servekit.engines import LoraInfo

    loras = [LoraInfo("next", "/a/lora-next.gguf", 0.0, {"id": 0}), LoraInfo("opposite", "/a/lora-opposite.gguf", 1.0,
                                                                            {"id": 1})]
    applied = engine.lora_request_options("demo", "next", loras)
    assert applied == {"model": "demo", "extra_body": {"lora": [{"id": 0, "scale": 1.0}, {"id": 1, "scale": 0.0}]}}
    as_now = engine.lora_request_options("demo", None, loras)  # the server's scales, spelt out
    assert as_now["extra_body"]["lora"] == [{"id": 0, "scale": 0.0}, {"id": 1, "scale": 1.0}]
    assert engine.lora_request_options("demo", None, []) == {"model": "demo", "extra_body": {}}


def _fake_build_tools(tmp_path, monkeypatch) -> list[list[str]]:
    """pip and CMake stand-ins for ``build_llama_cpp``: pip "downloads" an sdist with a vendored llama.cpp, CMake
    "builds" the targets. Returns the commands run."""
    import io
    import tarfile

    from servekit.engines import llamacpp

    ran: list[list[str]] = []

    def run_logged(cmd, log_path, progress=None, env=None):
        cmd = [str(c) for c in cmd]
        ran.append(cmd)
        if "download" in cmd:
            sdist = Path(cmd[cmd.index("-d") + 1]) / "llama_cpp_python-0.3.36.tar.gz"
            with tarfile.open(sdist, "w:gz") as archive:
                for name in ("CMakeLists.txt", "convert_hf_to_gguf.py"):
                    member = tarfile.TarInfo(f"llama_cpp_python-0.3.36/vendor/llama.cpp/{name}")
                    member.size = 1
                    archive.addfile(member, io.BytesIO(b"#"))
        if "--build" in cmd:
            bin_dir = Path(cmd[cmd.index("--build") + 1]) / "bin"
            bin_dir.mkdir(parents=True)
            for target in llamacpp.TARGETS:
                (bin_dir / target).write_text("#!/bin/sh\n")

    monkeypatch.setattr("servekit.envs.run_logged", run_logged)
    monkeypatch.setattr("shutil.which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setenv("SERVEKIT_CACHE_DIR", str(tmp_path / "cache"))
    return ran


def test_build_takes_only_llama_cpp_python_from_source_and_reuses_unpacked_sources(tmp_path, monkeypatch):
    """`--no-binary :all:` built the sdist's build tools from their sdists too (~1 min on a fresh machine, before
    the compile could start); the converters' download already unpacked the same sources."""
    from servekit.engines import llamacpp

    ran = _fake_build_tools(tmp_path, monkeypatch)
    llamacpp.fetch_llama_cpp_sources()
    downloads = [cmd for cmd in ran if "download" in cmd]
    assert len(downloads) == 1 and downloads[0][downloads[0].index("--no-binary") + 1] == "llama-cpp-python"
    bin_dir = llamacpp.build_llama_cpp()
    assert sorted(p.name for p in bin_dir.iterdir()) == sorted(llamacpp.TARGETS)
    assert sum("download" in cmd for cmd in ran) == 1, "the build reused the unpacked sources"
    llamacpp.build_llama_cpp(force=True)
    downloads = [cmd for cmd in ran if "download" in cmd]
    assert len(downloads) == 2 and ":all:" not in downloads[1], "--force fetches the sources again, wheels for tools"


def test_what_a_build_lacks_is_named(monkeypatch):
    """`make test` compiles llama-server only where nothing is missing; the build's error names what is."""
    from servekit.engines import llamacpp
    from servekit.errors import BuildError

    found = {"cmake": "/usr/bin/cmake", "g++": "/usr/bin/g++"}
    monkeypatch.setattr("shutil.which", lambda name: found.get(name))
    assert llamacpp.missing_build_tools() is None
    del found["g++"]
    assert llamacpp.missing_build_tools() == "no C++ compiler on PATH"
    del found["cmake"]
    assert llamacpp.missing_build_tools() == "no cmake on PATH"
    monkeypatch.setenv("SERVEKIT_CACHE_DIR", "/nonexistent/servekit-cache")
    with pytest.raises(BuildError, match=r"CMake and a C\+\+ compiler \(no cmake on PATH\)"):
        llamacpp.build_llama_cpp()


def test_a_new_build_replaces_each_binary_whole(tmp_path):
    """A server that started on the old binary keeps reading it, and one starting now finds a complete file:
    the test session installs its background build while servers run (tests/conftest.py), as a user may."""
    from servekit.engines import llamacpp

    built, bin_dir = tmp_path / "build", tmp_path / "bin"
    built.mkdir()
    bin_dir.mkdir()
    for target in llamacpp.TARGETS:
        (built / target).write_bytes(b"new " * 1000)
        (built / target).chmod(0o755)
        (bin_dir / target).write_bytes(b"old " * 1000)
    with open(bin_dir / "llama-server", "rb") as running:
        llamacpp.install_binaries(built, bin_dir)
        assert running.read() == b"old " * 1000, "the open binary was overwritten in place"
    assert sorted(p.name for p in bin_dir.iterdir()) == sorted(llamacpp.TARGETS), "no partial copy is left"
    for target in llamacpp.TARGETS:
        assert (bin_dir / target).read_bytes() == b"new " * 1000 and os.access(bin_dir / target, os.X_OK)
