"""Run files live under a short private folder, whatever the state directory's path; stop() never waits on a zombie.

vLLM and SGLang build unix sockets inside the server's run directory; the kernel refuses a socket path of
more than 107 characters. These tests start both engines with a 100-character state directory and list the
sockets they really made, and start a llama-server from a parent that never reaps it.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

import servekit
from servekit import errors, registry
from servekit.paths import SOCKET_PATH_MAX, run_root
from servekit.server import port_is_free

pytestmark = pytest.mark.integration


@pytest.fixture
def long_state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A state directory whose path is exactly 100 characters long (a long home directory is as long)."""
    stem = str(tmp_path / "state-")
    path = Path(stem + "x" * (100 - len(stem)))
    assert len(str(path)) == 100
    path.mkdir()
    monkeypatch.setenv("SERVEKIT_STATE_DIR", str(path))
    yield path
    servekit.stop_all()


def _sockets(folder: Path) -> list[str]:
    found = []
    for path in folder.rglob("*"):
        try:
            if stat.S_ISSOCK(path.lstat().st_mode):
                found.append(str(path))
        except OSError:
            continue
    return found


def _engine_model(engine: str) -> tuple[dict, str]:
    from servekit.engines import get_engine

    eng = get_engine(engine)
    if not eng.available():
        eng.install(progress=print)
    assert eng.available(), eng.available().install_hint
    if engine == "sglang":
        return {"cpu": True, "timeout": 600}, "demo"
    return {"ctx": 512, "timeout": 900, "extra_args": ["--enforce-eager"]}, "demo"  # vLLM: no compile at start


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["vllm", "sglang"])
def test_engines_start_with_a_long_state_directory(engine: str, long_state_dir: Path) -> None:
    options, model = _engine_model(engine)
    server = servekit.serve(engine, model, name=f"long-{engine}", **options)
    try:
        run_dir = Path(server.record.run_dir)
        assert run_dir.parent == run_root(), "run files are not under the state directory"
        assert stat.S_IMODE(run_dir.stat().st_mode) == 0o700
        assert stat.S_IMODE(run_root().stat().st_mode) == 0o700
        sockets = _sockets(run_dir)
        assert sockets, f"{engine} made no unix socket in its run dir {run_dir}"
        too_long = [s for s in sockets if len(s) > SOCKET_PATH_MAX]
        assert not too_long, too_long
        print(f"{engine}: {len(sockets)} sockets, longest {max(map(len, sockets))} characters: {max(sockets, key=len)}")
        assert server.client().models.list().data[0].id == server.model
        assert Path(server.log_path).is_relative_to(long_state_dir)
    finally:
        server.stop()
    assert not run_dir.exists(), "the run dir is removed on stop"


def test_a_run_folder_too_long_for_sockets_is_refused_before_anything_starts(
        long_state_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _, model = _engine_model("vllm")
    long_run = tmp_path / ("r" * 90)
    monkeypatch.setenv("SERVEKIT_RUN_DIR", str(long_run))
    started = time.monotonic()
    with pytest.raises(errors.StateDirError, match="SERVEKIT_RUN_DIR") as caught:
        servekit.serve("vllm", model, name="too-long")
    assert time.monotonic() - started < 30
    assert "107" in str(caught.value) and str(long_run) in str(caught.value)
    assert registry.load_all() == []
    assert not list(long_run.iterdir()), "no run directory is left behind"


def test_a_run_folder_of_another_kind_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "elsewhere"
    target.mkdir()
    link = tmp_path / "link"
    link.symlink_to(target)
    monkeypatch.setenv("SERVEKIT_RUN_DIR", str(link))
    with pytest.raises(errors.StateDirError, match="SERVEKIT_RUN_DIR"):
        run_root()


UNREAPING_PARENT = textwrap.dedent("""
    import os
    import servekit
    from servekit.demo import tiny_gguf
    server = servekit.serve("llamacpp", str(tiny_gguf()), name="unreaped", detach=True)
    print(server.pid, server.port, flush=True)
    # become a program that never waits for its children (servekit's monitor thread goes with the exec):
    # once stopped, the engine stays a zombie
    os.execv("/bin/sleep", ["sleep", "600"])
""")


@pytest.mark.usefixtures("llama_server_ready")
def test_stop_returns_at_once_for_an_engine_its_parent_never_reaps() -> None:
    parent = subprocess.Popen([sys.executable, "-c", UNREAPING_PARENT], stdout=subprocess.PIPE, text=True,
                              env=os.environ.copy())
    try:
        pid, port = (int(x) for x in parent.stdout.readline().split())
        [server] = [s for s in servekit.running() if s.name == "unreaped"]
        started = time.monotonic()
        server.stop()
        took = time.monotonic() - started
        assert psutil.Process(pid).status() == psutil.STATUS_ZOMBIE, "the parent does not reap it"
        assert took < 2.0, f"stop() took {took:.1f} s on a zombie"
        assert port_is_free("127.0.0.1", port)
        assert servekit.running() == []
    finally:
        parent.kill()
        parent.wait(timeout=10)
