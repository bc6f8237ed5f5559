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


# The kernel's limit for a unix-socket path (``sun_path`` is 108 bytes with its terminating NUL).
SOCKET_PATH_MAX = 107


def run_root() -> Path:
    """Short private folder (0700) under which each server gets its run directory (sockets, temp files).

    ``$SERVEKIT_RUN_DIR``, else ``$XDG_RUNTIME_DIR/servekit``, else ``/tmp/servekit-<uid>`` — never derived from
    the state directory or ``$TMPDIR``, whose paths can be long: engines build unix sockets in there, and a
    socket path longer than 107 characters kills an engine at start.
    """
    override = os.environ.get("SERVEKIT_RUN_DIR")
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if override:
        path = Path(override)
    elif runtime and _owned_dir(Path(runtime)):
        path = Path(runtime) / "servekit"
    else:
        path = Path("/tmp") / f"servekit-{os.getuid()}"
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not _owned_dir(path):
            raise StateDirError(
                f"servekit's run folder {path} is a link or belongs to another user, so it cannot keep this "
                "server's sockets private. Set SERVEKIT_RUN_DIR to a short folder of yours (e.g. ~/.sk-run)."
            )
        return private_dir(path)
    except OSError as exc:
        raise StateDirError(
            f"servekit cannot use its run folder {path} ({exc.strerror or exc}). Set SERVEKIT_RUN_DIR to a short "
            "folder you can write (e.g. ~/.sk-run)."
        ) from exc


def run_dir_for(server_id: str) -> Path:
    """The private run directory of one server (not created): named by the random part of its id, kept short."""
    return run_root() / server_id.rsplit("-", 1)[-1]


def check_socket_room(run_dir: Path, longest_socket: str, engine: str) -> None:
    """Refuse before an engine starts when the longest socket it will build under ``run_dir`` is too long."""
    if not longest_socket:
        return
    socket_path = run_dir / longest_socket
    if len(str(socket_path)) > SOCKET_PATH_MAX:
        raise StateDirError(
            f"{engine} would build unix sockets such as {socket_path} ({len(str(socket_path))} characters), longer "
            f"than the {SOCKET_PATH_MAX} the kernel allows, and die at start. Set SERVEKIT_RUN_DIR to a shorter "
            f"folder (at most {SOCKET_PATH_MAX - len(str(socket_path)) + len(str(run_dir.parent))} characters, "
            "e.g. /tmp/sk)."
        )


def _owned_dir(path: Path) -> bool:
    """A real directory (not a link) owned by this user."""
    try:
        info = path.lstat()
    except OSError:
        return False
    return stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid()


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
