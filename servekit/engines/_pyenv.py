"""What vLLM and SGLang share: each runs from a Python environment of its own, serves Hugging Face
folders, and lists its LoRA adapters as ``/v1/models`` entries that have a parent.

The interpreter that runs such an engine is, in order: ``$SERVEKIT_<NAME>_PYTHON``; the current one
when the engine's package is importable there (``pip install 'servekit[vllm]'`` on a GPU machine,
Colab); the CPU environment ``servekit install <name>-cpu`` makes in the user cache.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

from .. import sources
from ..envs import create_env, env_python
from ..errors import EngineNotInstalled, InvalidSpec, ModelNotFound
from ..gpus import has_gpu
from ..sources import ModelFiles
from ..spec import ServeSpec
from .base import Availability, EngineBase, LoraInfo, Progress, Request

MIN_PYTHON = (3, 11)

_VERSION_CODE = (
    "import importlib.metadata as m, importlib.util as u, sys\n"
    "def v(d):\n"
    "    try: return m.version(d)\n"
    "    except m.PackageNotFoundError: return None\n"
    "name = sys.argv[1]\n"
    "cpu = v(name + '-cpu')\n"
    "print(v(name) or (cpu + '+cpu' if cpu else None) or ('unknown' if u.find_spec(name) else ''))"
)


def installed_here(package: str) -> bool:
    """True when ``package`` is installed in this Python's environment — as a distribution, not a folder of
    that name that happens to sit in the working directory (which ``find_spec`` would also find)."""
    import importlib.metadata

    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:  # absent, or a plain folder (namespace package)
        return False
    for name in (package, f"{package}-cpu"):
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        installed = Path(str(dist.locate_file(f"{package}/__init__.py")))
        return installed.resolve() == Path(spec.origin).resolve()
    return False


def has_gpu_device() -> bool:
    """True when this machine has a GPU (NVML, else the device nodes; no torch import)."""
    return has_gpu()


@cache
def package_version(python: Path, package: str) -> str | None:
    """``package``'s version in ``python``'s environment (``X+cpu`` for a ``PACKAGE-cpu`` wheel); None if absent."""
    try:
        out = subprocess.run([str(python), "-c", _VERSION_CODE, package], capture_output=True, text=True,
                             timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return (out.stdout.strip() or None) if out.returncode == 0 else None


class PythonEnvEngine(EngineBase):
    """An engine launched as ``python -m …`` from an interpreter of its own choosing."""

    package: str = ""  # the importable package, e.g. "vllm"
    cpu_env_name: str = ""  # servekit's CPU environment in the user cache, e.g. "vllm-cpu-0.32.0"
    cpu_version: str = ""  # the engine's version in that environment
    cpu_install_note: str = ""  # what `servekit install NAME-cpu` makes, for the install hint

    @property
    def python_env_var(self) -> str:
        return f"SERVEKIT_{self.name.upper()}_PYTHON"

    def install_hint(self) -> str:
        return (
            f"On a GPU machine: pip install 'servekit[{self.pip_extra}]'. On the CPU (laptops, CI, Binder): "
            f"`servekit install {self.name}-cpu` ({self.cpu_install_note}). "
            f"Or point {self.python_env_var} at a Python that has {self.package}."
        )

    # -- the interpreter ---------------------------------------------------------------------
    def cpu_env_python(self) -> Path | None:
        """The interpreter of servekit's CPU environment, if it was created."""
        return env_python(self.cpu_env_name)

    def find_python(self) -> tuple[Path, str] | None:
        """(interpreter, where it came from) that runs the engine, or None; never imports the engine here."""
        override = os.environ.get(self.python_env_var)
        if override:
            return Path(override), self.python_env_var
        if installed_here(self.package):
            return Path(sys.executable), "this Python"
        own = self.cpu_env_python()
        return (own, f"servekit's {self.cpu_env_name} environment") if own else None

    def python(self) -> Path:
        """The interpreter that runs the engine; raises EngineNotInstalled with the install step if none."""
        found = self.find_python()
        if found is None:
            raise EngineNotInstalled(f"{self.display_name} is not installed. {self.install_hint()}")
        return found[0]

    def version_of(self, python: Path) -> str | None:
        """The engine's version in ``python``'s environment, or None when it is not there."""
        if python == self.cpu_env_python():
            return f"{self.cpu_version}+cpu"
        return package_version(python, self.package)

    def available(self) -> Availability:
        found = self.find_python()
        if found is None:
            return Availability(False, detail=f"{self.package} is not importable here", install_hint=self.install_hint())
        python, source = found
        version = self.version_of(python)
        if version is None:
            return Availability(False, detail=f"{python} ({source}) has no {self.package}",
                                install_hint=self.install_hint())
        return Availability(True, version=version, detail=f"{python} ({source})", install_hint=self.install_hint())

    def check_cpu_install(self, variant: str | None) -> None:
        """servekit installs only the CPU variant, and only from a Python the CPU wheels support."""
        if variant not in (None, "", "cpu"):
            raise InvalidSpec(
                f"servekit installs only the CPU variant of {self.display_name} ({self.name}-cpu), not {variant!r}. "
                f"On a GPU machine: pip install 'servekit[{self.pip_extra}]'."
            )
        if sys.version_info < MIN_PYTHON:
            raise EngineNotInstalled(
                f"{self.display_name} {self.cpu_version} for the CPU needs Python >= 3.11; servekit runs on "
                f"{sys.version.split()[0]}. Run servekit from Python 3.11+, or point {self.python_env_var} at "
                f"one that has {self.package}."
            )

    def cpu_install_steps(self, progress: Progress | None = None) -> list[list[str]]:
        """pip argument lists that make servekit's CPU environment for this engine."""
        raise NotImplementedError

    def install(self, progress: Progress | None = None, force: bool = False, variant: str | None = None) -> str:
        """``servekit install NAME-cpu``: the engine for the CPU in its own environment in the user cache."""
        self.check_cpu_install(variant)
        python = create_env(self.cpu_env_name, self.cpu_install_steps(progress), progress=progress, force=force)
        package_version.cache_clear()
        self.after_install(python, progress)
        return str(python)

    def after_install(self, python: Path, progress: Progress | None) -> None:
        """Anything to record once the environment exists."""

    def auto_cpu(self) -> bool:
        """CPU mode when the engine comes from servekit's CPU environment or a ``+cpu`` build, or no GPU exists."""
        found = self.find_python()
        if found is not None and (found[0] == self.cpu_env_python() or (self.version_of(found[0]) or "").endswith("+cpu")):
            return True
        return not has_gpu_device()

    # -- served name, key, adapters ---------------------------------------------------------------
    def served_name(self, spec: ServeSpec) -> str:
        if spec.served_name:
            return spec.served_name
        path = Path(spec.model).expanduser()
        return path.name if path.is_dir() else spec.model

    def health_headers(self, api_key: str | None) -> dict[str, str]:
        return {"Authorization": f"Bearer {api_key}"} if api_key else {}

    def _list_request(self) -> Request:
        return Request("GET", "/v1/models")

    def _parse_loras(self, payload: Any) -> list[LoraInfo]:
        """Adapters are the ``/v1/models`` entries with a parent (the base model)."""
        items = payload.get("data", []) if isinstance(payload, dict) else []
        return [
            LoraInfo(name=str(item["id"]), path=item.get("root"), extra={"parent": item["parent"]})
            for item in items
            if isinstance(item, dict) and item.get("parent")
        ]


def named_hf_model(model: str, prepare: bool = True) -> ModelFiles | None:
    """The Hugging Face folder (and PEFT adapters) behind a source's name (``demo``), or None for other names."""
    return sources.resolve(model, "hf", prepare=prepare)


def check_hf_model(model: str, engine: str) -> str:
    """An absolute folder path for a local model (checked to be an HF folder); a hub id unchanged."""
    path = Path(model).expanduser()
    looks_local = model.startswith((".", "/", "~")) or path.exists()
    if not looks_local:
        return model
    if not path.exists():
        raise ModelNotFound(f"{model} does not exist: give {engine} a Hugging Face id or a model folder.")
    if path.is_file():
        raise ModelNotFound(
            f"{model} is a file: {engine} loads a Hugging Face folder (config.json, safetensors, tokenizer). "
            "For a GGUF file use the llamacpp engine."
        )
    if not (path / "config.json").is_file():
        raise ModelNotFound(f"{model} has no config.json: {engine} loads a Hugging Face model folder.")
    return str(path.resolve())


def last_lines(text: str, n: int = 5) -> str:
    return "\n".join(text.strip().splitlines()[-n:])


def settings_report(engine: str, verb: str, args: Mapping[str, Any]) -> str:
    """``"<engine> <verb>: a=1, b=x"`` for the settings that are set."""
    shown = ", ".join(f"{k}={v}" for k, v in args.items() if v not in (None, False, [], ""))
    return f"{engine} {verb}: {shown}"
