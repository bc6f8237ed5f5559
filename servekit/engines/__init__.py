"""Engine registry: built-in engines and third-party ones from the ``servekit.engines`` entry points."""

from __future__ import annotations

import importlib
from functools import cache

from ..errors import UnknownEngine
from .base import Availability, Engine, EngineBase, LaunchContext, LoraInfo, Request

__all__ = ["Availability", "Engine", "EngineBase", "LaunchContext", "LoraInfo", "Request", "engine_names", "get_engine"]

_BUILTIN = {
    "llamacpp": "servekit.engines.llamacpp:LlamaCppEngine",
    "vllm": "servekit.engines.vllm:VllmEngine",
    "sglang": "servekit.engines.sglang:SglangEngine",
}
_ALIASES = {"llama.cpp": "llamacpp", "llama-cpp": "llamacpp", "llama_cpp": "llamacpp", "llama-server": "llamacpp"}


def _load(target: str) -> Engine:
    module_name, _, attr = target.partition(":")
    return getattr(importlib.import_module(module_name), attr)()


@cache
def _entry_points() -> dict[str, str]:
    from importlib.metadata import entry_points

    return {ep.name: ep.value for ep in entry_points(group="servekit.engines") if ep.name not in _BUILTIN}


def engine_names() -> list[str]:
    """Names of every engine servekit knows, built-in first."""
    return list(_BUILTIN) + sorted(_entry_points())


def get_engine(name: str) -> Engine:
    """The engine registered as ``name`` (case-insensitive; ``llama.cpp`` is an alias of ``llamacpp``)."""
    key = _ALIASES.get(name.lower(), name.lower())
    if key not in _BUILTIN and key not in _entry_points():
        raise UnknownEngine(f"Unknown engine {name!r}. Choose one of: {', '.join(engine_names())}.")
    return _engine(key)


@cache
def _engine(key: str) -> Engine:
    return _load(_BUILTIN.get(key) or _entry_points()[key])
