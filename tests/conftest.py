"""Shared fixtures. Servers started by tests are recorded in a private state directory."""

from __future__ import annotations

import os
import tempfile

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
    """llama-server built (or found) once per session; `make test` builds it before pytest starts."""
    from servekit.engines import get_engine

    engine = get_engine("llamacpp")
    if not engine.available():
        engine.install(progress=print)
    assert engine.available(), "llama-server could not be installed"


def skip_without_compiled_build() -> None:
    """The compiled llama.cpp build's tests need that build: `make test` compiles it where CMake and a C++ compiler
    are found (CI has both), and installs the prebuilt server only elsewhere. Where the tools are here, a missing
    build fails the test instead: something that should have been built was not."""
    from servekit.engines.llamacpp import compiled_build_installed, missing_build_tools

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
