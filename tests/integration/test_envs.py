"""Engine environments with uv and with pip, for real (a small package; the big ones: benchmarks/bench_env_install.py)."""

from __future__ import annotations

import json
import subprocess

import pytest

from servekit import envs

pytestmark = pytest.mark.integration
STEPS = [["install", "--no-compile", "packaging"], ["uninstall", "-y", "packaging"], ["install", "packaging"]]


def _made_with(name: str) -> str:
    return json.loads((envs.env_dir(name) / "servekit-env.json").read_text())["installer"]


def _has_packaging(python) -> bool:
    return subprocess.run([str(python), "-c", "import packaging"], check=False, timeout=60).returncode == 0


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SERVEKIT_CACHE_DIR", str(tmp_path / "cache"))


def test_uv_makes_the_environment_when_it_is_here(monkeypatch):
    assert envs.uv_binary() is not None, "uv comes with servekit (pyproject)"
    python = envs.create_env("with-uv", STEPS)
    assert _made_with("with-uv") == "uv" and _has_packaging(python)
    assert subprocess.run([str(python), "-m", "pip", "--version"], check=False, timeout=60).returncode == 0  # --seed

def test_uv_compiles_what_each_step_installs():
    """Bytecode at install, as pip does: no engine start pays the compile again (PYTHONDONTWRITEBYTECODE). uv
    compiles only what the step installs, so a package of the first of two steps needs that step's compile."""
    envs.create_env("uv-bytecode", [["install", "idna"], ["install", "six"]])
    site = next(envs.env_dir("uv-bytecode").glob("lib/python*/site-packages"))
    assert list((site / "idna").glob("__pycache__/core.*.pyc")), "the first step left no bytecode"
    assert list(site.glob("__pycache__/six.*.pyc")), "the second step left no bytecode"


def test_pip_when_asked_and_when_uv_fails(monkeypatch, tmp_path):
    monkeypatch.setenv(envs.INSTALLER_ENV_VAR, "pip")
    assert _has_packaging(envs.create_env("with-pip", STEPS)) and _made_with("with-pip") == "pip"
    monkeypatch.delenv(envs.INSTALLER_ENV_VAR)
    broken = tmp_path / "uv"
    broken.write_text("#!/bin/sh\necho 'uv: cannot reach the index' >&2\nexit 2\n")
    broken.chmod(0o755)
    monkeypatch.setattr(envs, "uv_binary", lambda: str(broken))
    said: list[str] = []
    python = envs.create_env("uv-broken", STEPS, progress=said.append)
    assert _made_with("uv-broken") == "pip" and _has_packaging(python)
    assert any("uv failed" in line and "installing with pip instead" in line for line in said)
