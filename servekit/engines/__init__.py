"""Engine registry: built-in engines and third-party ones from the ``servekit.engines`` entry points."""

from __future__ import annotations

import importlib
from functools import cache

from ..errors import UnknownEngine
from .base import Availability, Engine, EngineBase, Launch, LaunchContext, LoraInfo, Request, WebPage

__all__ = ["Availability", "Engine", "EngineBase", "Launch", "LaunchContext", "LoraInfo", "Request", "WebPage",
           "engine_names", "get_engine"]

_BUILTIN = {
    "llamacpp": "servekit.engines.llamacpp:LlamaCppEngine",
    "vllm": "servekit.engines.vllm:VllmEngine",
    "sglang": "servekit.engines.sglang:SglangEngine",
}


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
    """The engine registered as ``name``, or declaring it among its ``aliases`` (case-insensitive;
    ``_`` and ``-`` alike: ``llama.cpp``, ``llama-cpp`` and ``llama-server`` all name ``llamacpp``)."""
    key = name.lower().replace("_", "-")
    if key in _BUILTIN or key in _entry_points():
        return _engine(key)
    for candidate in engine_names():
        engine = _engine(candidate)
        if key in {alias.lower().replace("_", "-") for alias in engine.aliases}:
            return engine
    raise UnknownEngine(f"Unknown engine {name!r}. Choose one of: {', '.join(engine_names())}.")


@cache
def _engine(key: str) -> Engine:
    return _load(_BUILTIN.get(key) or _entry_points()[key])
