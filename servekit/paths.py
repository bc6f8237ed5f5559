"""Where servekit keeps its state (running servers, logs) and its cache (built engines, models)."""

from __future__ import annotations

import os
from pathlib import Path


def _user_dir(env_var: str, kind: str) -> Path:
    override = os.environ.get(env_var)
    if override:
        path = Path(override)
    else:
        import platformdirs

        path = Path(getattr(platformdirs, f"user_{kind}_dir")("servekit"))
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def cache_dir() -> Path:
    """User cache for built engines, engine environments and demo models (``$SERVEKIT_CACHE_DIR``)."""
    return _user_dir("SERVEKIT_CACHE_DIR", "cache")


def state_dir() -> Path:
    """Records and logs of servers (``$SERVEKIT_STATE_DIR``); shared by every process of this user."""
    return _user_dir("SERVEKIT_STATE_DIR", "state")
