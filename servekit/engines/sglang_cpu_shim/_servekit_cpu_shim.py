"""Stub modules whose every function logs the call to stderr and raises NotImplementedError."""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import sys
import types
from typing import Any

TAG = "[servekit sglang-cpu shim]"


class ShimCall(NotImplementedError):
    """Raised when SGLang calls a kernel that servekit's CPU mode only pretends to have."""


class Stub:
    """Stands in for any function, class or constant of a shimmed package."""

    def __init__(self, qualname: str) -> None:
        self._qualname = qualname

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        message = (
            f"{TAG} {self._qualname}() was called: servekit's SGLang CPU mode has no kernels "
            "(speculative decoding, LoRA, quantized or multimodal paths need a GPU build of SGLang)."
        )
        print(message, file=sys.stderr, flush=True)
        raise ShimCall(message)

    def __getattr__(self, name: str) -> Stub:
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        return Stub(f"{self._qualname}.{name}")

    def __repr__(self) -> str:
        return f"<servekit shim {self._qualname}>"


def _module_getattr(module_name: str):
    def __getattr__(name: str) -> Stub:
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(f"module {module_name!r} has no attribute {name!r}")
        return Stub(f"{module_name}.{name}")

    return __getattr__


class _Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Makes every submodule of a shimmed package importable (``from sgl_kernel.x.y import z``)."""

    def __init__(self, package: str) -> None:
        self.package = package

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        if fullname.startswith(self.package + "."):
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        module = types.ModuleType(spec.name, f"servekit import shim for {spec.name}")
        module.__path__ = []  # a package, so deeper submodules import too
        module.__getattr__ = _module_getattr(spec.name)  # type: ignore[method-assign]
        return module

    def exec_module(self, module: types.ModuleType) -> None:
        return None


def install(package: types.ModuleType) -> None:
    """Turn an already-imported shim package into a catch-all stub package."""
    package.__getattr__ = _module_getattr(package.__name__)  # type: ignore[method-assign]
    if not any(isinstance(f, _Finder) and f.package == package.__name__ for f in sys.meta_path):
        sys.meta_path.insert(0, _Finder(package.__name__))
    if os.environ.get("SERVEKIT_SHIM_QUIET") != "1":
        print(
            f"{TAG} pid {os.getpid()}: {package.__name__} is servekit's import shim (CPU mode); "
            "any call to it is logged here and fails.",
            file=sys.stderr,
            flush=True,
        )
