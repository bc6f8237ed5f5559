"""Shared fixtures. Servers started by tests are recorded in a private state directory."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

# Always a state directory of the test session's own — never the user's (an exported SERVEKIT_STATE_DIR
# would let the autouse stop_all() below stop the user's servers). Set before servekit is imported
# anywhere, so child processes (CLI, kernels, orphan tests) inherit it.
os.environ["SERVEKIT_STATE_DIR"] = tempfile.mkdtemp(prefix="servekit-test-state-")
# Run folders (sockets; the working directory of every engine process) of this session only: the fault suite
# finds a session's engine processes by it, and no test shares /tmp/servekit-UID with the user's servers.
os.environ["SERVEKIT_RUN_DIR"] = tempfile.mkdtemp(prefix="sk-run-", dir="/tmp")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def llama_server_ready() -> None:
    """llama.cpp's server found (or installed) once per session; `make test` installs it before pytest starts."""
    from servekit.engines import get_engine

    engine = get_engine("llamacpp")
    if not engine.available():
        engine.install(progress=print)
    assert engine.available(), "llama-server could not be installed"


# -- the compiled llama-server, built while the tests run ----------------------------------------------------------
class BackgroundBuild:
    """``servekit install llamacpp --build`` at the lowest CPU priority while the tests run, into a cache folder of
    its own: on a fresh machine `make test` starts testing without waiting ~5 minutes for the compile (the tests
    leave one of the two cores idle much of the time: an engine's start is mostly single-threaded imports).

    The binaries join the user cache only when the first test of the compiled build asks for them, so the tests
    before it run on the prebuilt server, as on a machine without a compiler, and none sees the switch midway.
    """

    WAIT_S = 1800  # the compile at nice 19 on 2 busy cores; ~5 min on idle ones

    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="servekit-llama-build-"))
        self.log = self.folder / "install.log"
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                ["nice", "-n", "19", sys.executable, "-m", "servekit.cli", "install", "llamacpp", "--build"],
                env={**os.environ, "SERVEKIT_CACHE_DIR": str(self.folder / "cache")},
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        # Linux schedules each session as one group (autogroup) and shares the CPU fairly between groups whatever
        # their processes' nice values: a nice-19 build in a session of its own took half a core from the tests
        # (a 12 s test set-up took 40 s). The group's own nice value ranks it below the tests' groups.
        with contextlib.suppress(OSError):  # no autogroups here (or not Linux): nice 19 alone
            Path(f"/proc/{self.process.pid}/autogroup").write_text("19")
        self.started = time.monotonic()
        self.ended: float | None = None  # when the build process exited (a thread waits for it)
        self.finished: float | None = None  # when its binaries were installed, or its failure seen
        self.failure = ""
        threading.Thread(target=self._note_the_end, daemon=True).start()

    def _note_the_end(self) -> None:
        self.process.wait()
        self.ended = time.monotonic()

    def built_bin_dir(self) -> Path:
        from servekit.engines.llamacpp import build_root

        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("SERVEKIT_CACHE_DIR", str(self.folder / "cache"))
            return build_root() / "bin"

    def install(self) -> None:
        """Waits for the build (bounded), then puts its binaries into the user cache; fails with its log if it failed."""
        from servekit.engines.llamacpp import build_root, install_binaries

        if self.finished is None:
            try:
                code = self.process.wait(timeout=max(1.0, self.WAIT_S - (time.monotonic() - self.started)))
            except subprocess.TimeoutExpired:
                code = None
            self.finished = time.monotonic()
            if code == 0:
                install_binaries(self.built_bin_dir(), build_root() / "bin")
            else:
                why = f"failed (exit {code})" if code is not None else f"took over {self.WAIT_S} s"
                self.failure = f"the background llama.cpp build {why}: {self.tail()}"
                self.stop()
        if self.failure:
            pytest.fail(self.failure)

    def summary(self) -> str:
        if self.finished is None:
            return "the compiled llama-server's background build was stopped unfinished (no test asked for it)"
        outcome = "failed" if self.failure else "finished"
        ended = f"{self.ended - self.started:.0f} s" if self.ended is not None else "?"
        return (f"the compiled llama-server's background build (nice 19) {outcome} {ended} after the tests started; "
                f"its tests ran last, from {self.finished - self.started:.0f} s")

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        """Stops a build still running (its whole process group) and removes its folder."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):  # it may have ended a moment ago
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=20)
        shutil.rmtree(self.folder, ignore_errors=True)


_BACKGROUND_BUILD: list[BackgroundBuild] = []


def _needs_compiled_build(item: pytest.Item) -> bool:
    callspec = getattr(item, "callspec", None)
    return "compiled_build" in getattr(item, "fixturenames", ()) or (
        callspec is not None and callspec.params.get("llama_build") == "compiled")


@pytest.hookimpl(trylast=True)  # after pytest's own reordering (it groups the tests of a parametrized fixture)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Where the compiled llama-server is missing but can be built, its build starts now in the background and its
    tests move to the end of the session, before only the ``after_notebooks`` tests (stable sort: everything else
    keeps its order)."""
    from servekit.engines.llamacpp import compiled_build_installed, missing_build_tools

    if config.option.collectonly or not any(_needs_compiled_build(item) for item in items):
        return
    if compiled_build_installed() or missing_build_tools():
        return
    _BACKGROUND_BUILD.append(BackgroundBuild())
    items.sort(key=lambda item: (item.get_closest_marker("after_notebooks") is not None, _needs_compiled_build(item)))


def pytest_sessionfinish() -> None:
    for build in _BACKGROUND_BUILD:
        build.stop()


def pytest_terminal_summary(terminalreporter) -> None:
    for build in _BACKGROUND_BUILD:
        terminalreporter.write_line(build.summary())


def skip_without_compiled_build() -> None:
    """The compiled llama.cpp build's tests need that build: `make test` compiles it in the background where CMake and a
    C++ compiler are found (CI has both; see :class:`BackgroundBuild`) and skips these tests elsewhere. Where the
    tools are here, a missing build fails the test instead: something that should have been built was not."""
    from servekit.engines.llamacpp import compiled_build_installed, missing_build_tools

    for build in _BACKGROUND_BUILD:
        build.install()
    missing = missing_build_tools()
    if missing and not compiled_build_installed():
        pytest.skip(f"the compiled llama-server cannot be built on this machine ({missing})")


@pytest.fixture
def compiled_build() -> None:
    """Skips a test of the compiled build where it cannot be built (see :func:`skip_without_compiled_build`)."""
    skip_without_compiled_build()


@pytest.fixture(scope="module", params=["compiled", "prebuilt"])
def llama_build(request, llama_server_ready) -> str:
    """Runs a module's llama.cpp tests on each build of llama.cpp's server: the compiled ``llama-server`` and
    the prebuilt one (xllamacpp). Both must be installed (`make test` installs both)."""
    from servekit.engines.llamacpp import BUILD_ENV, server_build

    if request.param == "compiled":
        skip_without_compiled_build()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(BUILD_ENV, request.param)
        assert server_build() == request.param, f"the {request.param} llama.cpp server is not installed"
        yield request.param


@pytest.fixture(scope="session")
def ipython():
    """IPython's test shell, with ``%load_ext servekit`` done (IPython starts it once per process)."""
    from IPython.testing.globalipapp import start_ipython

    shell = start_ipython()
    shell.run_line_magic("load_ext", "servekit")
    return shell


@pytest.fixture
def check_attach():
    """``check_attach(server, engine)``: a handle from ``servekit.attach(url, api_key)`` on a running server is
    recognised as ``engine``, reads its metrics, chats and takes a short load-generator run; stopping the handle
    only forgets it."""
    import servekit
    from servekit import bench

    def check(server, engine: str) -> None:
        attached = servekit.attach(server.url, api_key=server.api_key)
        try:
            assert attached.engine.name == engine and attached.model == server.model
            assert attached.metrics().get("generation_tokens_total") is not None
            reply = attached.client().chat.completions.create(
                model=attached.model, messages=[{"role": "user", "content": "reverse: cold dark night"}], max_tokens=8)
            assert reply.usage.completion_tokens >= 1
            run = bench.run(attached, concurrency=2, requests=4, input_tokens=16, output_tokens=8, progress=False)
            assert run.summary["completed"] == 4 and run.summary["failed"] == 0, run.summary
            assert run.summary["total_output_tokens"] == 32, run.summary
        finally:
            attached.stop()  # forgets the handle only
        assert server.ping()

    return check


@pytest.fixture(autouse=True)
def _no_server_outlives_a_test():
    """Every test must stop what it started; fail loudly (and clean up) if one does not."""
    yield
    import servekit

    leftover = [s.name for s in servekit.running()]
    servekit.stop_all()
    assert not leftover, f"test left servers running: {leftover}"
