"""SGLang's spec -> command line mapping, CPU-mode refusals, the kernel shim, missing installs (no server)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from servekit.engines import LaunchContext, Request, get_engine
from servekit.engines import sglang as sg
from servekit.engines._pyenv import has_gpu_device
from servekit.errors import EngineNotInstalled, InvalidSpec, ModelNotFound
from servekit.spec import ServeSpec

FAKE_PYTHON = "/opt/sglang-env/bin/python"


@pytest.fixture
def engine(monkeypatch):
    monkeypatch.setenv("SERVEKIT_SGLANG_PYTHON", FAKE_PYTHON)
    return get_engine("sglang")


@pytest.fixture
def hf_dir(tmp_path) -> Path:
    folder = tmp_path / "tiny-llama"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    return folder


def command(engine, model, **options):
    options = {"port": 30123, "api_key": "k" * 8, "cpu": False, **options}
    spec = engine.resolve(ServeSpec.build("sglang", model, **options))
    cmd = engine.command(spec)
    assert cmd[:4] == [FAKE_PYTHON, "-P", "-m", "sglang.launch_server"]
    return spec, cmd[4:]


def test_base_command(engine, hf_dir):
    _, cmd = command(engine, str(hf_dir))
    assert cmd == ["--model-path", str(hf_dir), "--host", "127.0.0.1", "--port", "30123", "--served-model-name", "tiny-llama", "--enable-metrics"]


def test_full_command(engine, hf_dir):
    _, cmd = command(engine, str(hf_dir), served_name="tiny", dtype="bfloat16", quantization="fp8", ctx=4096,
                     parallel=8, lora={"style": "/loras/style", "math": "/loras/math"}, max_lora_rank=16,
                     tensor_parallel=2, tool_parser="llama3", memory_fraction=0.8, extra_args=["--seed", "1"])
    assert cmd == ["--model-path", str(hf_dir), "--host", "127.0.0.1", "--port", "30123", "--served-model-name", "tiny", "--dtype", "bfloat16", "--quantization", "fp8",
                   "--context-length", "4096", "--max-running-requests", "8",
                   "--enable-lora", "--lora-paths", "style=/loras/style", "math=/loras/math", "--max-lora-rank", "16",
                   "--tp-size", "2", "--tool-call-parser", "llama3", "--mem-fraction-static", "0.8",
                   "--enable-metrics", "--seed", "1"]


def test_api_key_that_looks_like_a_flag_is_added_as_one_argument_inside_the_process(engine, hf_dir, tmp_path):
    """The launcher appends ``--api-key=KEY`` in-process: a key starting with "-" stays one value."""
    import subprocess
    import sys

    from servekit.engines import LaunchContext
    from servekit.engines.sglang import KEY_ENV

    spec = engine.resolve(ServeSpec.build("sglang", str(hf_dir), port=30123, api_key="-starts-with-a-dash", cpu=False))
    launch = engine.launch(spec, LaunchContext(run_dir=tmp_path, log_path=tmp_path / "log"))
    code = launch.command[launch.command.index("-c") + 1].replace(
        "runpy.run_module('sglang.launch_server', run_name='__main__', alter_sys=True)", "print(sys.argv[-1])")
    out = subprocess.run([sys.executable, "-c", code, "--port", "1"], env={KEY_ENV: launch.env[KEY_ENV]},
                         capture_output=True, text=True, check=True).stdout
    assert out.strip() == "--api-key=-starts-with-a-dash"


def test_runtime_only_lora_names_target_modules(engine):
    _, cmd = command(engine, "Qwen/Qwen2.5-0.5B-Instruct", max_lora_rank=8, metrics=False, api_key="")
    assert cmd == ["--model-path", "Qwen/Qwen2.5-0.5B-Instruct", "--host", "127.0.0.1", "--port", "30123",
                   "--served-model-name", "Qwen/Qwen2.5-0.5B-Instruct",
                   "--enable-lora", "--lora-target-modules", "all", "--max-lora-rank", "8"]


def test_cpu_mode_adds_device_and_kv_budget(engine, hf_dir):
    spec, cmd = command(engine, str(hf_dir), cpu=True)
    assert spec.cpu is True
    assert cmd[-4:] == ["--device", "cpu", "--max-total-tokens", "8192"]
    _, cmd = command(engine, str(hf_dir), cpu=True, ctx=16384)
    assert cmd[-2:] == ["--max-total-tokens", "16384"]
    _, cmd = command(engine, str(hf_dir), cpu=True, extra_args=["--max-total-tokens=2048"])
    assert cmd.count("--max-total-tokens") == 0 and cmd[-1] == "--max-total-tokens=2048"


def test_auto_cpu_mode_follows_the_gpu_device(engine, hf_dir):
    spec = engine.resolve(ServeSpec.build("sglang", str(hf_dir)))
    assert spec.cpu is (not has_gpu_device())


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"lora": {"style": "/loras/style"}}, "LoRA"),
        ({"max_lora_rank": 8}, "LoRA"),
        ({"extra_args": ["--speculative-algorithm", "EAGLE"]}, "--speculative-algorithm: speculative decoding"),
        ({"extra_args": ["--speculative-num-steps=3"]}, "--speculative-num-steps"),
        ({"extra_args": ["--enable-lora"]}, "--enable-lora"),
        ({"extra_args": ["--lora-paths", "a=/x"]}, "--lora-paths"),
    ],
)
def test_cpu_mode_refuses_speculative_decoding_and_lora(engine, hf_dir, options, words):
    spec = ServeSpec.build("sglang", str(hf_dir), cpu=True, **options)
    with pytest.raises(InvalidSpec, match="CPU mode") as raised:
        engine.resolve(spec)
    assert words in str(raised.value)
    with pytest.raises(InvalidSpec, match="CPU mode"):
        engine.command(spec)  # also when resolve() is skipped


def test_gpu_mode_allows_speculative_flags(engine, hf_dir):
    _, cmd = command(engine, str(hf_dir), extra_args=["--speculative-algorithm", "EAGLE"])
    assert cmd[-2:] == ["--speculative-algorithm", "EAGLE"]


def test_environment_cpu_and_gpu(engine, hf_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", "/somewhere")
    ctx = LaunchContext(run_dir=tmp_path / "run", log_path=tmp_path / "server.log")
    cpu_spec = engine.resolve(ServeSpec.build("sglang", str(hf_dir), cpu=True))
    env = engine.environment(cpu_spec, ctx)
    assert env["SGLANG_USE_CPU_ENGINE"] == "1"
    shim, rest = env["PYTHONPATH"].split(os.pathsep, 1)
    assert rest == "/somewhere"
    assert (Path(shim) / "sgl_kernel" / "__init__.py").is_file()
    assert (Path(shim) / "torchvision" / "__init__.py").is_file()
    assert Path(env["TMPDIR"]).is_dir() and Path(env["TMPDIR"]).is_relative_to(ctx.run_dir)
    assert env["HF_HUB_OFFLINE"] == "1"  # a local folder needs no hub
    gpu_env = engine.environment(cpu_spec.replace(cpu=False, model="Qwen/Qwen2.5-0.5B-Instruct"), ctx)
    assert "SGLANG_USE_CPU_ENGINE" not in gpu_env and "PYTHONPATH" not in gpu_env and "HF_HUB_OFFLINE" not in gpu_env


def test_shim_imports_anything_and_refuses_every_call(tmp_path):
    code = (
        "import sgl_kernel, torchvision\n"
        "from sgl_kernel.flash_attn import flash_attn_varlen_func\n"
        "from torchvision.transforms import InterpolationMode\n"
        "import torchvision.transforms.v2.functional as F\n"
        "assert InterpolationMode.BICUBIC is not None and F is not None\n"
        "assert not hasattr(sgl_kernel, '__all__')\n"
        "try:\n"
        "    flash_attn_varlen_func(1, k=2)\n"
        "except NotImplementedError as exc:\n"
        "    print('refused:', exc)\n"
        "else:\n"
        "    raise SystemExit('the shim did not refuse the call')\n"
    )
    env = {**os.environ, "PYTHONPATH": str(sg.SHIM_DIR)}
    out = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, env=env,
                         cwd=tmp_path, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "refused:" in out.stdout
    assert "sgl_kernel is servekit's import shim" in out.stderr  # labelled in the server log
    assert "sgl_kernel.flash_attn.flash_attn_varlen_func() was called" in out.stderr


def test_model_checks(engine, hf_dir, tmp_path):
    with pytest.raises(ModelNotFound, match="does not exist"):
        engine.resolve(ServeSpec.build("sglang", str(tmp_path / "missing"), cpu=False))
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF")
    with pytest.raises(ModelNotFound, match="llamacpp"):
        engine.resolve(ServeSpec.build("sglang", str(gguf), cpu=False))
    with pytest.raises(ModelNotFound, match="config.json"):
        engine.resolve(ServeSpec.build("sglang", str(tmp_path), cpu=False))
    spec = engine.resolve(ServeSpec.build("sglang", "Qwen/Qwen2.5-0.5B-Instruct", cpu=False))
    assert spec.model == "Qwen/Qwen2.5-0.5B-Instruct"


def test_lora_requests_and_listing(engine):
    assert engine._load_request("style", "/loras/style") == Request(
        "POST", "/load_lora_adapter", json={"lora_name": "style", "lora_path": "/loras/style"}
    )
    assert engine._unload_request("style") == Request("POST", "/unload_lora_adapter", json={"lora_name": "style"})
    assert engine._list_request() == Request("GET", "/v1/models")
    payload = {"object": "list", "data": [
        {"id": "tiny", "root": "tiny", "parent": None},
        {"id": "style", "root": "/loras/style", "parent": "tiny"},
    ]}
    [info] = engine._parse_loras(payload)
    assert (info.name, info.path) == ("style", "/loras/style")


def test_metric_names_cover_the_normalised_set(engine):
    for name in ("requests_running", "requests_waiting", "kv_cache_usage", "prompt_tokens_total",
                 "generation_tokens_total", "ttft_seconds", "itl_seconds", "e2e_seconds"):
        assert engine.metric_names[name].startswith("sglang:")


def test_diagnose(engine):
    shim_line = "[servekit sglang-cpu shim] sgl_kernel.tree_speculative_sampling_target_only() was called: ..."
    assert "GPU kernel" in engine.diagnose(shim_line)
    assert "cpu=True" in engine.diagnose("RuntimeError: Found no NVIDIA driver on your system.")
    assert "sglang-cpu --force" in engine.diagnose("ModuleNotFoundError: No module named 'dill'")
    assert "port" in engine.diagnose("OSError: [Errno 98] Address already in use")
    argparse_tail = ("ModuleNotFoundError: no module x (harmless)\n                    [--enable-dp-attention]\n"
                     "sglang serve: error: argument --api-key: expected one argument")
    assert "command line" in engine.diagnose(argparse_tail)
    assert engine.diagnose("all good") is None


def test_health_probe_needs_no_key_but_gets_it(engine):
    assert engine.health_path == "/health_generate"
    assert engine.health_headers("abc") == {"Authorization": "Bearer abc"}
    assert engine.health_headers(None) == {}


def test_cpu_install_recipe_has_no_cuda_packages(monkeypatch):
    monkeypatch.setenv("SERVEKIT_TORCH_INDEX_URL", "")
    steps = sg.cpu_install_steps()
    flat = [arg.split("==")[0].lower() for step in steps for arg in step]
    assert ["install", "--no-deps", f"sglang=={sg.SGLANG_VERSION}"] in steps
    for forbidden in ("torchvision", "torchaudio", "torchcodec", "sglang-kernel", "sgl-kernel", "flashinfer-python"):
        assert forbidden not in flat
    assert all(f"torch=={sg.TORCH_VERSION}+cpu" in step for step in steps if "--no-deps" not in step)


def test_install_refuses_gpu_variant(engine):
    with pytest.raises(InvalidSpec, match="servekit\\[sglang\\]"):
        engine.install(variant="gpu")


@pytest.mark.skipif(importlib.util.find_spec("sglang") is not None, reason="sglang is importable here")
def test_missing_install_names_both_install_paths(monkeypatch, tmp_path):
    engine = get_engine("sglang")
    monkeypatch.setenv("SERVEKIT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("SERVEKIT_SGLANG_PYTHON", raising=False)
    availability = engine.available()
    assert not availability
    assert "pip install 'servekit[sglang]'" in availability.install_hint
    assert "servekit install sglang-cpu" in availability.install_hint
    with pytest.raises(EngineNotInstalled, match="servekit install sglang-cpu"):
        engine.command(ServeSpec.build("sglang", "Qwen/Qwen2.5-0.5B-Instruct", cpu=False))
    import servekit

    with pytest.raises(EngineNotInstalled, match="servekit install sglang-cpu"):
        servekit.serve("sglang", "Qwen/Qwen2.5-0.5B-Instruct", cpu=True)
    # an interpreter without sglang is reported, not trusted
    monkeypatch.setenv("SERVEKIT_SGLANG_PYTHON", sys.executable)
    availability = engine.available()
    assert not availability and sys.executable in availability.detail
