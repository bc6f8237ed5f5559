import os
import stat
import subprocess
import sys
import time

import psutil

from servekit import registry
from servekit.registry import ServerRecord


def record_for(pid: int, owner_pid: int | None, tmp_path, name: str = "r") -> ServerRecord:
    proc = psutil.Process(pid)
    return ServerRecord(
        id=f"{name}-1", name=name, engine="llamacpp", model="m", served_name="m", host="127.0.0.1", port=1,
        url="http://127.0.0.1:1", pid=pid, pgid=os.getpgid(pid), create_time=proc.create_time(),
        log_path=str(tmp_path / "log"), run_dir=str(tmp_path / "run"), api_key="secret",
        owner_pid=owner_pid, owner_create_time=psutil.Process(owner_pid).create_time() if owner_pid else None,
        started_at=time.time(),
    )


def test_record_is_private_and_round_trips(tmp_path):
    record = record_for(os.getpid(), os.getpid(), tmp_path)
    registry.save(record)
    try:
        assert stat.S_IMODE(record.record_path.stat().st_mode) == 0o600
        assert [r.id for r in registry.load_all() if r.id == record.id] == [record.id]
        assert registry.is_live(record) and registry.owner_alive(record)
    finally:
        registry.discard(record)


def test_dead_server_record_is_pruned_and_dead_owner_means_orphan(tmp_path):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    owner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    record = record_for(sleeper.pid, owner.pid, tmp_path, name="sleeper")
    registry.save(record)
    try:
        owner.kill()
        owner.wait()
        assert not registry.owner_alive(record)
        assert record.id in [r.id for r in registry.live_records()]
        sleeper.kill()
        sleeper.wait()
        assert record.id not in [r.id for r in registry.live_records()]
        assert not record.record_path.exists()
    finally:
        for proc in (sleeper, owner):
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        registry.discard(record)


def test_reused_pid_is_not_taken_for_the_server(tmp_path):
    record = record_for(os.getpid(), None, tmp_path)
    record.create_time -= 100  # same pid, different start time: another process
    assert registry.same_process(record.pid, record.create_time) is None
