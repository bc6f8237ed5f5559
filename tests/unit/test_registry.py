"""Records: private files, strict types, another user's files ignored; identity by the environment marker."""

import json
import os
import stat
import subprocess
import sys
import time

import psutil
import pytest

from servekit import procs, registry
from servekit.registry import ServerRecord


def record_for(tmp_path, name: str = "r", owner_pid: int | None = None, pid: int = 0) -> ServerRecord:
    return ServerRecord(
        id=f"{name}-1", name=name, engine="llamacpp", model="m", served_name="m", host="127.0.0.1", port=1,
        url="http://127.0.0.1:1", pid=pid, pgid=pid, create_time=psutil.Process(pid).create_time() if pid else 0.0,
        log_path=str(tmp_path / "log"), run_dir=str(tmp_path / "run"), api_key="secret",
        owner_pid=owner_pid, owner_create_time=psutil.Process(owner_pid).create_time() if owner_pid else None,
        started_at=time.time(), state="ready",
    )


def marked_sleeper(server_id: str) -> subprocess.Popen:
    env = {**os.environ, procs.MARKER: server_id}
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], env=env, start_new_session=True)


def test_record_is_private_and_round_trips(tmp_path):
    record = record_for(tmp_path, owner_pid=os.getpid())
    registry.save(record)
    try:
        assert stat.S_IMODE(record.record_path.stat().st_mode) == 0o600
        assert stat.S_IMODE(record.record_path.parent.stat().st_mode) == 0o700
        assert [r for r in registry.load_all() if r.id == record.id] == [record]
        assert registry.owner_alive(record)
    finally:
        registry.discard(record)


@pytest.mark.parametrize("change", [{"create_time": None}, {"port": "80"}, {"port": True}, {"pid": 1.5},
                                    {"command": "ls"}, {"state": "weird"}, {"id": "../x"}])
def test_a_record_with_a_wrong_type_is_skipped_and_the_others_still_load(tmp_path, change):
    good = record_for(tmp_path, name="good")
    registry.save(good)
    bad_data = {**registry.asdict(record_for(tmp_path, name="bad")), **change}
    bad_path = registry.records_dir() / "bad-1.json"
    bad_path.write_text(json.dumps(bad_data))
    try:
        assert [r.name for r in registry.load_all() if r.name in ("good", "bad")] == ["good"]
    finally:
        registry.discard(good)
        bad_path.unlink()


def test_a_state_directory_left_open_is_made_private_again():
    folder = registry.records_dir()
    os.chmod(folder, 0o755)
    os.chmod(folder.parent, 0o755)
    assert stat.S_IMODE(registry.records_dir().stat().st_mode) == 0o700
    assert stat.S_IMODE(folder.parent.stat().st_mode) == 0o700


def test_processes_are_members_only_when_they_carry_the_marker(tmp_path):
    marked = marked_sleeper("srv-abc")
    unmarked = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    try:
        found = procs.members(["srv-abc", "srv-other"])
        assert [p.pid for p in found["srv-abc"]] == [marked.pid]
        assert found["srv-other"] == []
        procs.terminate(["srv-abc"], timeout=5)
        assert marked.wait(timeout=5) == -15  # SIGTERM
        assert unmarked.poll() is None  # never signalled
    finally:
        for proc in (marked, unmarked):
            if proc.poll() is None:
                proc.kill()
            proc.wait()


def test_a_retitled_process_is_known_by_its_run_dir_and_session(tmp_path):
    """vLLM's EngineCore rewrites its title, hiding the marker in /proc/PID/environ: its working directory
    (the run dir) and its session (the engine's) still tie it to the server. A shell opened in the run dir
    has another session and is not taken for the server."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    env = {k: v for k, v in os.environ.items() if k != procs.MARKER}
    sleep = [sys.executable, "-c", "import time; time.sleep(60)"]
    engine = subprocess.Popen(sleep, cwd=run_dir, env=env, start_new_session=True)
    visitor = subprocess.Popen(sleep, cwd=run_dir, env=env, start_new_session=True)
    record = record_for(tmp_path, name="retitled", pid=engine.pid)
    try:
        assert procs.members([record.id])[record.id] == [], "no marker visible, and only the id given"
        assert [p.pid for p in procs.members_of(record)] == [engine.pid]
        procs.terminate([record], timeout=5)
        assert engine.wait(timeout=5) == -15
        assert visitor.poll() is None, "a process of another session in the run dir is never signalled"
    finally:
        for proc in (engine, visitor):
            if proc.poll() is None:
                proc.kill()
            proc.wait()


def test_a_reused_pid_is_never_taken_for_the_server(tmp_path):
    """A stale record whose pid now belongs to an unrelated process: the process is not a member,
    the server shows as crashed, and stopping it signals nothing."""
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    record = record_for(tmp_path, name="stale", pid=stranger.pid)
    record.id = "stale-deadbeef"
    try:
        assert not registry.is_live(record)
        assert registry.observed_state(record, alive=False) == "crashed"
        procs.terminate([record.id], timeout=1)
        assert stranger.poll() is None
    finally:
        stranger.kill()
        stranger.wait()


def test_observed_state():
    record = ServerRecord(id="x-1", name="x", engine="llamacpp", model="m", served_name="m", host="h", port=1,
                          url="u", pid=5, pgid=5, create_time=0.0, log_path="", run_dir="", state="ready")
    assert registry.observed_state(record, alive=True) == "ready"
    assert registry.observed_state(record, alive=False) == "crashed"
    record.state = "stopping"
    assert registry.observed_state(record, alive=False) == "stopped"
    record.state, record.pid, record.owner_pid = "starting", 0, os.getpid()
    record.owner_create_time = psutil.Process().create_time()
    assert registry.observed_state(record, alive=False) == "starting"  # reserved, about to start


def test_old_logs_are_pruned_but_not_those_of_listed_servers(tmp_path, monkeypatch):
    monkeypatch.setenv("SERVEKIT_STATE_DIR", str(tmp_path / "state"))
    folder = registry.state_dir() / "logs"
    folder.mkdir()
    paths = [folder / f"prune-test-{i}.log" for i in range(5)]
    for i, path in enumerate(paths):
        path.write_text("x")
        os.utime(path, (time.time() - 100 + i, time.time() - 100 + i))
    registry.prune_logs(keep=2, protected={str(paths[0])})
    assert [p.exists() for p in paths] == [True, False, False, True, True]
    stale = folder / "stale.log"
    stale.write_text("x")
    os.utime(stale, (time.time() - 15 * 86400, time.time() - 15 * 86400))
    assert registry.prune_logs(keep=200, max_age_days=14) == 1 and not stale.exists()
