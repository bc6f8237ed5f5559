"""Model sources: names that stand for model files servekit can make or find (``demo``, ``demo:Q4_K_M`` …).

Engines ask :func:`resolve` what a model name means in the format they load. Sources are looked up by
name like engines are: the built-in demo models and third-party ones from the ``servekit.models``
entry-point group. A source is a function ``(model, fmt, *, prepare) -> ModelFiles | None``: None for
names it does not know; with ``prepare=False`` it must not build or download anything, and returns
the paths the files will have (``ready=False`` when they do not exist yet).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

FORMATS = ("gguf", "hf")
_BUILTIN = {"demo": "servekit.demo:resolve_model"}


@dataclass(frozen=True)
class ModelFiles:
    """A named model in one format: the path an engine loads, its served name, its LoRA adapters.

    ``loras``: (name, path) pairs — GGUF LoRA files for fmt "gguf", PEFT folders for fmt "hf".
    ``ready``: False when the files are not made yet (only with ``prepare=False``).
    """

    path: Path
    served_name: str
    loras: tuple[tuple[str, str], ...] = ()
    ready: bool = True


Source = Callable[..., "ModelFiles | None"]


@cache
def _sources() -> tuple[Source, ...]:
    from importlib.metadata import entry_points

    targets = list(_BUILTIN.values()) + [ep.value for ep in entry_points(group="servekit.models")
                                          if ep.name not in _BUILTIN]
    loaded = []
    for target in targets:
        module_name, _, attr = target.partition(":")
        loaded.append(getattr(importlib.import_module(module_name), attr))
    return tuple(loaded)


def resolve(model: str, fmt: str, *, prepare: bool = True) -> ModelFiles | None:
    """The files behind a source's model name in ``fmt`` ("gguf" or "hf"), or None for other names
    (local paths, hub ids). ``prepare``: build what is missing first (the demo model's first use)."""
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {FORMATS}, not {fmt!r}")
    for source in _sources():
        found = source(model, fmt, prepare=prepare)
        if found is not None:
            return found
    return None
