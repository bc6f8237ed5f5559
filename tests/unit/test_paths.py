"""Where run files go: a short private folder, never derived from the state directory or $TMPDIR."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from servekit.errors import StateDirError
from servekit.paths import SOCKET_PATH_MAX, check_socket_room, run_dir_for, run_root


def test_run_root_follows_servekit_run_dir_and_is_private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    wanted = tmp_path / "run"
    wanted.mkdir(mode=0o755)
    monkeypatch.setenv("SERVEKIT_RUN_DIR", str(wanted))
    assert run_root() == wanted
    assert stat.S_IMODE(wanted.stat().st_mode) == 0o700


def test_run_root_prefers_the_users_runtime_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SERVEKIT_RUN_DIR", raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    assert run_root() == tmp_path / "servekit"


def test_run_root_ignores_a_long_tmpdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SERVEKIT_RUN_DIR", raising=False)
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    monkeypatch.setenv("TMPDIR", str(tmp_path / ("t" * 80)))
    monkeypatch.setenv("SERVEKIT_STATE_DIR", str(tmp_path / ("s" * 80)))
    assert run_root() == Path("/tmp") / f"servekit-{os.getuid()}"


def test_run_dir_is_named_by_the_random_part_of_the_id(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SERVEKIT_RUN_DIR", str(tmp_path))
    name = "n" * 64
    assert run_dir_for(f"{name}-0123abcd") == tmp_path / "0123abcd"


def test_socket_room_is_checked_against_the_kernel_limit(tmp_path: Path) -> None:
    tail = "rpc/" + "0" * 36
    room = SOCKET_PATH_MAX - len(tail) - 1
    check_socket_room(Path("/" + "a" * (room - 1)), tail, "vLLM")  # exactly at the limit
    with pytest.raises(StateDirError, match="SERVEKIT_RUN_DIR") as caught:
        check_socket_room(Path("/" + "a" * room), tail, "vLLM")
    assert "108 characters" in str(caught.value)
    check_socket_room(Path("/" + "a" * 300), "", "llama.cpp")  # builds no socket: nothing to check
