"""Where servekit keeps its state (running servers, logs) and its cache (built engines, models)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from .errors import StateDirError


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
    """Records and logs of servers (``$SERVEKIT_STATE_DIR``); shared by every process of this user.

    Made private (0700) whatever its mode was: it holds API keys and server logs.
    """
    try:
        return private_dir(_user_dir("SERVEKIT_STATE_DIR", "state"))
    except OSError as exc:
        raise state_dir_error(exc) from exc


def private_dir(path: Path) -> Path:
    """Create ``path`` (and parents) if needed and make it 0700; return it."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    if stat.S_IMODE(path.stat().st_mode) != 0o700:
        os.chmod(path, 0o700)
    return path


def state_dir_error(exc: OSError) -> StateDirError:
    """A servekit error for an OS error met in the state directory, saying what to do."""
    where = getattr(exc, "filename", None) or os.environ.get("SERVEKIT_STATE_DIR") or "the state directory"
    return StateDirError(
        f"servekit cannot use its state directory ({where}: {exc.strerror or exc}). Make it writable by you, "
        "or set SERVEKIT_STATE_DIR to a folder you own."
    )
