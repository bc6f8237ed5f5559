"""The ports servekit picks for its servers."""

from __future__ import annotations

import socket

from servekit import server


def test_a_picked_port_is_free_and_outside_the_ephemeral_range():
    """An outgoing connection (the readiness probe's included) can never take the port while the engine loads."""
    ephemeral = server.ephemeral_ports()
    for _ in range(50):
        port = server.free_port("127.0.0.1")
        assert port not in ephemeral and port >= server.SERVER_PORTS_FROM
        assert server.port_is_free("127.0.0.1", port)


def test_ports_to_avoid_and_ports_in_use_are_never_picked():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", server.free_port("127.0.0.1")))
        busy.listen()
        taken = busy.getsockname()[1]
        ephemeral = server.ephemeral_ports()
        usable = [p for p in range(server.SERVER_PORTS_FROM, 65536) if p not in ephemeral]
        avoid = [p for p in usable if p != taken][:-3]  # left: the busy port and three others
        picked = {server.free_port("127.0.0.1", avoid=avoid) for _ in range(20)}
    assert taken not in picked and not picked & set(avoid)


def test_an_engine_that_says_its_port_is_taken_is_recognised():
    assert server._says_port_taken("ERROR: [Errno 98] error while attempting to bind on address: address already in use")
    assert server._says_port_taken("srv init: couldn't bind HTTP server socket")
    assert not server._says_port_taken("INFO: Uvicorn running on http://127.0.0.1:8000")
    uvicorn = "ERROR:    [Errno 98] error while attempting to bind on address ('127.0.0.1', 43837): address already in use"
    assert server._says_port_taken(uvicorn, 43837)
    torch_store = "[W socket.cpp:755] The server socket has failed to bind to [::]:29500 (errno: 98 - Address already in use)."
    assert not server._says_port_taken(torch_store, 43837), "a helper's own port is not the server's"


def test_the_tail_of_a_log_is_read_from_its_end(tmp_path):
    log = tmp_path / "engine.log"
    log.write_text("x" * 100_000 + "\nthe last line\n")
    tail = server._file_tail(log, size=64)
    assert tail.endswith("the last line\n") and len(tail) == 64
    assert server._file_tail(tmp_path / "missing.log") == ""
