"""servekit: launch, watch and stop LLM inference servers (vLLM, llama.cpp, SGLang) from Python and Jupyter.

>>> import servekit
>>> with servekit.serve("llamacpp", "demo") as server:
...     server.client().chat.completions.create(model=server.model, messages=[...])
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = [
    "ServeSpec", "Server", "attach", "bench", "demo", "doctor", "get_engine", "get_server", "load_ipython_extension", "running", "serve",
    "stop_all",
]

_LAZY = {
    "Server": "servekit.server",
    "serve": "servekit.server",
    "attach": "servekit.server",
    "running": "servekit.server",
    "stop_all": "servekit.server",
    "get_server": "servekit.server",
    "ServeSpec": "servekit.spec",
    "get_engine": "servekit.engines",
}

if TYPE_CHECKING:
    from . import bench, demo, doctor
    from .engines import get_engine
    from .server import Server, attach, get_server, running, serve, stop_all
    from .spec import ServeSpec


def __getattr__(name: str) -> Any:
    import importlib

    if name in ("demo", "bench", "doctor"):
        return importlib.import_module(f"servekit.{name}")
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'servekit' has no attribute {name!r}")


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext servekit``: registers %serve, %servers, %stop, %logs and %%chat."""
    from .magics import ServekitMagics

    ipython.register_magics(ServekitMagics)
