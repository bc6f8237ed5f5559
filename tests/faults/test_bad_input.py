"""Every bad input fails within seconds with a servekit error that says what to do — and leaves nothing
running, no record and no engine process behind."""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

import pytest
from faultkit import servekit_processes

import servekit
from servekit import errors, registry

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("llama_server_ready")]


def truncated_gguf(tmp_path: Path) -> str:
    from servekit.demo import tiny_gguf

    data = tiny_gguf().read_bytes()
    path = tmp_path / "truncated.gguf"
    path.write_bytes(data[: len(data) // 3])
    return str(path)


def busy_port(stack) -> int:
    sock = stack.enter_context(socket.socket())
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock.getsockname()[1]


# (case, serve() keyword arguments or a callable making them, error class, words the message must hold)
CASES = [
    ("unknown engine", lambda t, s: {"engine": "nosuch"}, errors.UnknownEngine, "Choose one of"),
    ("engine not installed", lambda t, s: {"env": {"SERVEKIT_LLAMA_SERVER": str(t / "missing/llama-server")}},
     errors.EngineNotInstalled, "servekit install llamacpp"),
    ("model path missing", lambda t, s: {"model": "./nowhere/model.gguf"}, errors.ModelNotFound, "GGUF"),
    ("model file corrupt", lambda t, s: {"model": truncated_gguf(t)}, errors.ServerStartError,
     "could not load the model"),
    ("busy port", lambda t, s: {"port": busy_port(s)}, errors.PortInUse, "free one"),
    ("port out of range", lambda t, s: {"port": 70000}, errors.InvalidSpec, "at most 65535"),
    ("port not a number", lambda t, s: {"port": True}, errors.InvalidSpec, "positive integer"),
    ("unknown engine flag", lambda t, s: {"extra_args": ["--no-such-flag"]}, errors.ServerStartError,
     "rejected a flag"),
    ("LoRA path missing", lambda t, s: {"lora": {"x": str(t / "missing.gguf")}}, errors.ModelNotFound, "LoRA"),
    ("parallel=0", lambda t, s: {"parallel": 0}, errors.InvalidSpec, "positive integer"),
    ("name with a slash", lambda t, s: {"name": "a/b"}, errors.InvalidSpec, "letters, digits"),
    ("name climbing out", lambda t, s: {"name": "../../x"}, errors.InvalidSpec, "letters, digits"),
    ("key with a comma", lambda t, s: {"api_key": "a,b"}, errors.InvalidSpec, "api_key"),
]


@pytest.mark.parametrize("case,make,error,words", CASES, ids=[c[0] for c in CASES])
def test_bad_input_fails_fast_and_clearly(case, make, error, words, tmp_path, monkeypatch):
    from contextlib import ExitStack

    with ExitStack() as stack:
        options = make(tmp_path, stack)
        for key, value in options.pop("env", {}).items():
            monkeypatch.setenv(key, value)
        engine, model = options.pop("engine", "llamacpp"), options.pop("model", "demo-tiny")
        started = time.monotonic()
        with pytest.raises(error) as info:
            servekit.serve(engine, model, timeout=30, **options)
        seconds = time.monotonic() - started
    assert words in str(info.value), str(info.value)
    assert seconds < 5, f"{case}: {seconds:.1f} s"
    assert servekit.running() == [] and registry.load_all() == [] and not servekit_processes()


def test_a_state_directory_that_cannot_be_written(tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("SERVEKIT_STATE_DIR", str(blocker / "state"))
    with pytest.raises(errors.StateDirError, match="SERVEKIT_STATE_DIR"):
        servekit.serve("llamacpp", "demo-tiny")
    with pytest.raises(errors.StateDirError):
        servekit.running()
    assert not servekit_processes()


def test_a_read_only_records_folder_leaks_nothing(tmp_path, monkeypatch):
    """The record is written before the engine starts: if it cannot be, nothing starts."""
    if os.getuid() == 0:
        # root writes through permission bits; a record folder that is a file stands in for it
        state = tmp_path / "state"
        state.mkdir()
        (state / "servers").write_text("in the way")
    else:
        state = tmp_path / "state"
        (state / "servers").mkdir(parents=True)
        os.chmod(state / "servers", 0o500)
    monkeypatch.setenv("SERVEKIT_STATE_DIR", str(state))
    with pytest.raises(errors.StateDirError, match="state directory"):
        servekit.serve("llamacpp", "demo-tiny")
    assert not servekit_processes()


def test_a_corrupt_record_is_ignored_and_servekit_goes_on(tmp_path):
    broken = registry.records_dir() / "broken-1.json"
    broken.write_text("{ not json")
    wrong_type = registry.records_dir() / "typed-1.json"
    wrong_type.write_text(json.dumps({"id": "typed-1", "create_time": None}))
    try:
        with servekit.serve("llamacpp", "demo-tiny", name="fine") as server:
            assert [s.name for s in servekit.running()] == ["fine"] and server.ping()
        assert servekit.stop_all() == []
    finally:
        broken.unlink()
        wrong_type.unlink()


def test_a_record_of_another_user_is_not_trusted(tmp_path, monkeypatch):
    """Records are trusted only when this user wrote them: seen as another user, a live server's record
    (pointing at this very test process) is ignored — listed nowhere, never signalled."""
    with servekit.serve("llamacpp", "demo-tiny", name="mine") as server:
        assert [s.name for s in servekit.running()] == ["mine"]
        real_uid = os.getuid()
        monkeypatch.setattr(os, "getuid", lambda: real_uid + 4242)
        assert registry.load_all() == [] and servekit.running() == []
        monkeypatch.undo()
        assert server.ping()
