"""Offline teaching models: model names ``demo`` (and later ``demo:QUANT``, ``demo+lora-NAME``).

Engines call :func:`resolve_model` to turn a demo name into files in the format they load.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import ModelNotFound
from ..paths import cache_dir

__all__ = ["DemoModel", "is_demo_name", "resolve_model", "tiny_gguf"]


@dataclass(frozen=True)
class DemoModel:
    """A demo model in one format: the path an engine loads, its served name, its LoRA adapters."""

    path: Path
    served_name: str
    loras: tuple[tuple[str, str], ...] = ()


def is_demo_name(model: str) -> bool:
    """True for ``demo``, ``demo:Q4_K_M``, ``demo+lora-NAME`` and the like."""
    return model == "demo" or model.startswith(("demo:", "demo+", "demo-tiny"))


def tiny_gguf() -> Path:
    """The random-weight tiny GGUF, written into the cache on first use."""
    from .tiny import VERSION, write_tiny_gguf

    path = cache_dir() / "demo" / VERSION / "demo-tiny.gguf"
    return path if path.is_file() else write_tiny_gguf(path)


def resolve_model(model: str, fmt: str) -> DemoModel | None:
    """The files behind a demo model name in format ``fmt`` ("gguf" or "hf"), or None for other names."""
    if not is_demo_name(model):
        return None
    if fmt == "gguf" and model in ("demo", "demo-tiny"):
        return DemoModel(path=tiny_gguf(), served_name=model)
    raise ModelNotFound(
        f"The demo model {model!r} is not available in {fmt} format yet: run `servekit demo build` first."
    )
