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


@pytest.fixture(scope="module", params=["compiled", "prebuilt"])
def llama_build(request, llama_server_ready) -> str:
    """Runs a module's llama.cpp tests on each build of llama.cpp's server: the compiled ``llama-server`` and
    the prebuilt one (xllamacpp). Both must be installed (`make test` installs both)."""
    from servekit.engines.llamacpp import BUILD_ENV, server_build

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


@pytest.fixture(autouse=True)
def _no_server_outlives_a_test():
    """Every test must stop what it started; fail loudly (and clean up) if one does not."""
    yield
    import servekit

    leftover = [s.name for s in servekit.running()]
    servekit.stop_all()
    assert not leftover, f"test left servers running: {leftover}"
