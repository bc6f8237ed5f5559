"""``%serve … --name a`` run twice reuses the running server; another model under that name is refused."""

from __future__ import annotations

import pytest
from IPython.core.error import UsageError
from IPython.utils.capture import capture_output

import servekit
from servekit.errors import NameTaken

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("llama_server_ready")]


def test_same_cell_twice_reuses_the_server(ipython):
    with capture_output():
        first = ipython.run_line_magic("serve", "llamacpp demo-tiny --name a --quiet")
    try:
        with capture_output() as again:
            second = ipython.run_line_magic("serve", "llamacpp demo-tiny --name a --quiet")
        assert second.record.id == first.record.id and "reusing it" in again.stdout
        assert [s.name for s in servekit.running()] == ["a"]
        with pytest.raises(UsageError, match="already running llama-server with demo-tiny.*%stop a"):
            ipython.run_line_magic("serve", "llamacpp demo:Q4_K_M --name a --quiet")
        with pytest.raises(NameTaken):
            servekit.serve("llamacpp", "demo-tiny", name="a")  # the Python API never reuses silently
    finally:
        first.stop()
    assert servekit.running() == []
