"""Helpers of the fault suite (imported by its tests as ``faultkit``): find every servekit engine process on the machine, drive real Jupyter kernels."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from servekit.procs import MARKER


def servekit_processes() -> list[psutil.Process]:
    """Every live engine process of this test session: it carries a servekit server marker and this
    session's state directory, or works in this session's run folder (vLLM's EngineCore rewrites its
    environment area when it retitles itself, so its marker cannot be read)."""
    state_dir, run_root = os.environ["SERVEKIT_STATE_DIR"], os.environ["SERVEKIT_RUN_DIR"]
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.pid == os.getpid() or proc.status() == psutil.STATUS_ZOMBIE:
                continue
            env = proc.environ()
            marked = MARKER in env and env.get("SERVEKIT_STATE_DIR") == state_dir
            if marked or Path(proc.cwd()).is_relative_to(run_root):
                found.append(proc)
        except psutil.Error:
            continue
    return found


def wait_until(condition: Callable[[], bool], timeout: float, interval: float = 0.05) -> float:
    """Seconds it took for ``condition`` to hold; fails the test after ``timeout``."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            pytest.fail(f"condition not met within {timeout} s")
        time.sleep(interval)
    return time.monotonic() - started


class Kernel:
    """A real IPython kernel (jupyter_client), started with this test session's state directory."""

    def __init__(self) -> None:
        from jupyter_client import KernelManager

        self.manager = KernelManager(kernel_name="python3")
        self.manager.kernel_spec.argv[0] = sys.executable  # the project's interpreter, whatever the spec says
        self.manager.start_kernel(env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.client = self.manager.client()
        self.client.start_channels()
        self.client.wait_for_ready(timeout=60)
        self.run("%load_ext servekit")

    @property
    def pid(self) -> int:
        return self.manager.provisioner.process.pid

    def run(self, code: str, timeout: float = 120) -> tuple[str, list[dict]]:
        """Execute ``code``; return its stdout and the error messages (tracebacks) it produced."""
        out: list[str] = []
        errors: list[dict] = []

        def collect(msg: dict) -> None:
            kind, content = msg["msg_type"], msg["content"]
            if kind == "stream":
                out.append(content["text"])
            elif kind == "error":
                errors.append(content)

        self.client.execute_interactive(code, timeout=timeout, output_hook=collect)
        return "".join(out), errors

    def start(self, code: str) -> str:
        """Send ``code`` without waiting; returns the message id for :meth:`collect`."""
        return self.client.execute(code)

    def collect(self, msg_id: str, timeout: float = 60) -> tuple[str, list[dict]]:
        """Output and errors of a cell started with :meth:`start`, once the kernel is idle again."""
        out: list[str] = []
        errors: list[dict] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = self.client.get_iopub_msg(timeout=max(0.1, deadline - time.monotonic()))
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            kind, content = msg["msg_type"], msg["content"]
            if kind == "stream":
                out.append(content["text"])
            elif kind == "error":
                errors.append(content)
            elif kind == "status" and content["execution_state"] == "idle":
                return "".join(out), errors
        raise TimeoutError(f"the cell did not finish within {timeout} s")

    def shutdown(self) -> None:
        self.client.stop_channels()
        if self.manager.is_alive():
            self.manager.shutdown_kernel(now=False)


