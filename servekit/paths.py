"""Where servekit keeps its state (running servers, logs) and its cache (built engines, models)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """User cache for built engines, engine environments and demo models (``$SERVEKIT_CACHE_DIR``)."""
    override = os.environ.get("SERVEKIT_CACHE_DIR")
    if override:
        path = Path(override)
    else:
        import platformdirs

        path = Path(platformdirs.user_cache_dir("servekit"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def state_dir() -> Path:
    """Records and logs of servers (``$SERVEKIT_STATE_DIR``); shared by every process of this user."""
    override = os.environ.get("SERVEKIT_STATE_DIR")
    if override:
        path = Path(override)
    else:
        import platformdirs

        path = Path(platformdirs.user_state_dir("servekit"))
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path
