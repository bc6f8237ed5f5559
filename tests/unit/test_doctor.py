"""GPU detection (NVML, device nodes), the float16 choice for GPUs without bfloat16, and `servekit doctor`."""

from __future__ import annotations

import json
import subprocess
import sys
import types
from pathlib import Path

import pytest

from servekit import gpus as gpu_module
from servekit import links
from servekit.engines import get_engine
from servekit.engines import sglang as sg
from servekit.gpus import Gpu
from servekit.spec import ServeSpec

T4 = Gpu(index=0, name="Tesla T4", memory_mb=15360, capability=(7, 5), driver="550.54")
H100 = Gpu(index=0, name="NVIDIA H100 80GB HBM3", memory_mb=81559, capability=(9, 0), driver="560.35")


def fake_nvml(devices: list[tuple[str, int, tuple[int, int]]], *, fail_init: bool = False) -> types.ModuleType:
    """A stand-in for ``pynvml`` (this machine has no NVIDIA driver): answers what NVML would for ``devices``."""

    class NVMLError(Exception):
        pass

    module = types.ModuleType("pynvml")
    calls: list[str] = []

    def init() -> None:
        calls.append("init")
        if fail_init:
            raise NVMLError("NVML Shared Library Not Found")

    module.nvmlInit = init
    module.nvmlShutdown = lambda: calls.append("shutdown")
    module.nvmlSystemGetDriverVersion = lambda: b"550.54"
    module.nvmlDeviceGetCount = lambda: len(devices)
    module.nvmlDeviceGetHandleByIndex = lambda i: i
    module.nvmlDeviceGetName = lambda i: devices[i][0]
    module.nvmlDeviceGetMemoryInfo = lambda i: types.SimpleNamespace(total=devices[i][1] * 2**20)
    module.nvmlDeviceGetCudaComputeCapability = lambda i: devices[i][2]
    module.calls = calls
    return module


@pytest.fixture(autouse=True)
def fresh_gpu_lookup():
    gpu_module.gpus.cache_clear()
    yield
    gpu_module.gpus.cache_clear()


def test_nvml_lists_gpus_with_capability_and_bfloat16(monkeypatch):
    nvml = fake_nvml([("Tesla T4", 15360, (7, 5)), ("NVIDIA A100-SXM4-40GB", 40960, (8, 0))])
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    found = gpu_module.gpus()
    assert [g.name for g in found] == ["Tesla T4", "NVIDIA A100-SXM4-40GB"]
    assert [g.bfloat16 for g in found] == [False, True]
    assert found[0].memory_mb == 15360 and found[0].driver == "550.54" and found[1].index == 1
    assert "float16" in found[0].describe() and "float16" not in found[1].describe()
    assert nvml.calls == ["init", "shutdown"]
    assert gpu_module.has_gpu()


def test_without_nvml_the_device_nodes_still_tell(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "pynvml", fake_nvml([], fail_init=True))
    node = tmp_path / "nvidia0"
    monkeypatch.setattr(gpu_module, "DEVICE_NODES", {str(node): "NVIDIA GPU (NVML unavailable)"})
    assert gpu_module.gpus() == () and not gpu_module.has_gpu()
    gpu_module.gpus.cache_clear()
    node.touch()
    assert [g.name for g in gpu_module.gpus()] == ["NVIDIA GPU (NVML unavailable)"]
    assert gpu_module.gpus()[0].bfloat16 is None


def test_sglang_serves_float16_on_a_gpu_without_bfloat16(monkeypatch, tmp_path):
    model = tmp_path / "tiny"
    model.mkdir()
    (model / "config.json").write_text("{}")
    monkeypatch.setenv("SERVEKIT_SGLANG_PYTHON", "/opt/sglang-env/bin/python")
    engine = get_engine("sglang")
    monkeypatch.setattr(sg, "gpus", lambda: (T4,))
    assert engine.resolve(ServeSpec.build("sglang", str(model), cpu=False)).dtype == "float16"
    assert engine.resolve(ServeSpec.build("sglang", str(model), cpu=False, dtype="float32")).dtype == "float32"
    assert engine.resolve(ServeSpec.build("sglang", str(model), cpu=True)).dtype is None
    monkeypatch.setattr(sg, "gpus", lambda: (H100,))
    assert engine.resolve(ServeSpec.build("sglang", str(model), cpu=False)).dtype is None


def test_link_template_names_the_port_where_links_go(monkeypatch):
    for name in (links.ENV_TEMPLATE, links.HUB_PREFIX, *links.HUB_ORIGINS, "JPY_PARENT_PID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(links, "_colab", lambda: False)
    monkeypatch.setattr(links, "jupyter_base_url", lambda: None)
    assert links.link_template() == "http://127.0.0.1:{port}/"
    monkeypatch.setenv(links.HUB_PREFIX, "/user/ada/")
    assert links.link_template() == "/user/ada/proxy/{port}/"
    assert links.public_url(8080) == "/user/ada/proxy/8080/"
    monkeypatch.setenv(links.ENV_TEMPLATE, "https://lab.example.org/p/{port}/")
    assert links.link_template() == "https://lab.example.org/p/{port}/"


def run_doctor(*args: str, env_cache: Path) -> subprocess.CompletedProcess:
    import os

    env = {**os.environ, "SERVEKIT_CACHE_DIR": str(env_cache)}
    return subprocess.run([sys.executable, "-m", "servekit.cli", "doctor", *args], capture_output=True, text=True,
                          timeout=120, env=env, check=False)


def test_doctor_reports_engines_gpus_cache_and_paths(tmp_path):
    cache = tmp_path / "cache"
    (cache / "envs" / "x").mkdir(parents=True)
    (cache / "envs" / "x" / "blob").write_bytes(b"\0" * 3 * 2**20)
    out = run_doctor("--json", env_cache=cache)
    assert out.returncode == 0, out.stderr
    found = json.loads(out.stdout)
    assert [e["name"] for e in found["engines"]] == ["llamacpp", "vllm", "sglang"]
    for engine in found["engines"]:
        assert engine["installed"] or engine["install_hint"], engine
    assert found["cache_dir"] == str(cache) and 2.9 < found["cache_sizes_mb"]["envs"] < 3.2
    assert isinstance(found["gpus"], list) and found["python"] == sys.executable
    assert "{port}" in found["link_template"]
    text = run_doctor(env_cache=cache)
    assert text.returncode == 0, text.stderr
    for words in ("engines:", "llama-server", "vLLM", "SGLang", "GPUs:", "cache:", "state:", "run:", "links:"):
        assert words in text.stdout, (words, text.stdout)
