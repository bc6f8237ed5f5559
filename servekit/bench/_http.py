"""A lean HTTP/1.1 client for the load generator: one POST per connection, the answer read as SSE.

Why not httpx, aiohttp or openai's client: the client must never be the bottleneck it measures. Each
streamed token costs a Python HTTP stack tens of microseconds (h11 or aiohttp's parser, stream
wrappers, decoders, an SSE iterator); here one ``asyncio.Protocol`` callback takes the bytes, undoes
chunked encoding and splits SSE events, and each event goes straight to the caller with the time
it arrived. Every request says ``Connection: close`` and gets a connection of its own: llama-server
closes the connection after each stream, and a pooled client that reuses it races that close and
loses requests (seen with aiohttp); a fresh connection costs ~0.1 ms on loopback.
"""

from __future__ import annotations

import asyncio
import functools
import json
import socket
import ssl
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

EventSink = Callable[[float, bytes], None]  # (arrival time from time.perf_counter(), one SSE data payload)
_MAX_HEAD = 64 * 1024
_MAX_ERROR_BODY = 4096
_READ_SIZE = 256 * 1024
LINGER_S = 1.0  # how long a finished connection waits for the server to close it
_buffers = threading.local()


def _read_buffer() -> memoryview:
    """This thread's receive buffer: every connection reads into it, and its bytes are copied out at once."""
    view = getattr(_buffers, "view", None)
    if view is None:
        view = _buffers.view = memoryview(bytearray(_READ_SIZE))
    return view


class HTTPStatusError(Exception):
    """The server answered with a status other than 200."""

    def __init__(self, status: int, body: bytes):
        text = body[:300].decode("utf-8", "replace").strip()
        super().__init__(f"HTTP {status}: {text}" if text else f"HTTP {status}")
        self.status = status


class StreamBroken(ConnectionError):
    """The connection ended before the answer was complete."""


@dataclass(frozen=True)
class Endpoint:
    """Where requests go: scheme, host, port and the path prefix of a server's root URL."""

    scheme: str
    host: str
    port: int
    prefix: str

    @classmethod
    def parse(cls, url: str) -> Endpoint:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        return cls(parts.scheme, parts.hostname, port, parts.path.rstrip("/"))

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"


def request_bytes(endpoint: Endpoint, path: str, body: bytes, headers: Mapping[str, str], stream: bool) -> bytes:
    """One HTTP/1.1 POST with a JSON body and ``Connection: close``."""
    lines = [
        f"POST {endpoint.prefix}{path} HTTP/1.1",
        f"Host: {endpoint.host_header}",
        "Content-Type: application/json",
        f"Accept: {'text/event-stream' if stream else 'application/json'}",
        f"Content-Length: {len(body)}",
        "Connection: close",
        *(f"{name}: {value}" for name, value in headers.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class _Response(asyncio.BufferedProtocol):
    """Reads one HTTP/1.1 response: head, then a chunked, length-delimited or close-delimited body.

    With a ``sink``, a 200 body is split into SSE events as it arrives and each ``data:`` payload is
    handed to the sink with its arrival time; otherwise the body is collected. Bytes are received into
    a buffer shared by the thread's connections (asyncio's plain protocols allocate 256 KiB per read).
    """

    def __init__(self, sink: EventSink | None):
        self.sink = sink
        self.done: asyncio.Future[tuple[int, bytes, float]] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None
        self.status = 0
        self._head = bytearray()
        self._in_body = False
        self._chunked = False
        self._remaining: int | None = None  # bytes left in a Content-Length body
        self._chunk_left = 0  # > 0: data bytes left in the current chunk; < 0: CRLF bytes to skip after it
        self._raw = b""  # an incomplete chunk-size line
        self._events = b""  # an incomplete SSE event
        self._body = bytearray()  # collected body (no sink, or an error status)
        self._saw_done = False
        self._timer: asyncio.TimerHandle | None = None

    # -- asyncio.BufferedProtocol -------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def get_buffer(self, sizehint: int) -> memoryview:
        return _read_buffer()

    def buffer_updated(self, nbytes: int) -> None:
        now = time.perf_counter()
        data = _read_buffer()[:nbytes].tobytes()
        try:
            if not self._in_body:
                data = self._read_head(data)
                if not self._in_body:
                    return
            if self._chunked:
                self._read_chunked(data, now)
            else:
                self._read_plain(data, now)
        except Exception as exc:  # noqa: BLE001 - a bad answer or a sink error ends this request, not the run
            self._finish(exc)

    def eof_received(self) -> bool | None:
        return None  # let the transport close; connection_lost decides whether the body was complete

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self.done.done():
            return
        if self._in_body and not self._chunked and self._remaining is None:
            self._complete()  # close-delimited body
        elif self._in_body and self.status == 200 and self._saw_done:
            self._complete()  # a stream that said [DONE] and then closed without a last chunk
        else:
            what = f"after HTTP {self.status}" if self.status else "before answering"
            self._finish(StreamBroken(f"the server closed the connection {what}" + (f" ({exc})" if exc else "")))

    # -- parsing ------------------------------------------------------------------------------
    def _read_head(self, data: bytes) -> bytes:
        self._head += data
        end = self._head.find(b"\r\n\r\n")
        if end < 0:
            if len(self._head) > _MAX_HEAD:
                raise StreamBroken("the answer's HTTP head is too long")
            return b""
        head, rest = bytes(self._head[:end]), bytes(self._head[end + 4:])
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/"):
            raise StreamBroken(f"not an HTTP answer: {lines[0][:80]!r}")
        self.status = int(parts[1])
        if self.status == 100:  # 100 Continue: the real head follows
            self._head = bytearray()
            return self._read_head(rest) if rest else b""
        fields = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            fields[name.strip().lower()] = value.strip()
        self._chunked = "chunked" in fields.get("transfer-encoding", "").lower()
        if not self._chunked and "content-length" in fields:
            self._remaining = int(fields["content-length"])
        self._in_body = True
        self._head = bytearray()
        if self._remaining == 0:
            self._complete()
        return rest

    def _read_plain(self, data: bytes, now: float) -> None:
        if self._remaining is not None:
            data = data[: self._remaining]
            self._remaining -= len(data)
        self._take(data, now)
        if self._remaining == 0:
            self._complete()

    def _read_chunked(self, data: bytes, now: float) -> None:
        if self._raw:
            data, self._raw = self._raw + data, b""
        elif self._chunk_left == 0 and self._one_chunk(data, now):
            return
        pos, size = 0, len(data)
        pieces = []
        while pos < size:
            left = self._chunk_left
            if left > 0:  # chunk data
                end = pos + left
                if end <= size:
                    pieces.append(data[pos:end])
                    pos, self._chunk_left = end, -2
                else:
                    pieces.append(data[pos:])
                    pos, self._chunk_left = size, end - size
            elif left < 0:  # the CRLF after a chunk's data
                skip = min(-left, size - pos)
                pos += skip
                self._chunk_left += skip
            else:  # a chunk-size line
                line_end = data.find(b"\r\n", pos)
                if line_end < 0:
                    self._raw = data[pos:]
                    break
                length = int(data[pos:line_end].split(b";", 1)[0], 16)
                pos = line_end + 2
                if length == 0:  # the last chunk (trailers, if any, are ignored)
                    self._take(b"".join(pieces), now)
                    self._complete()
                    return
                self._chunk_left = length
        if pieces:
            self._take(pieces[0] if len(pieces) == 1 else b"".join(pieces), now)

    def _one_chunk(self, data: bytes, now: float) -> bool:
        """The usual read, one whole chunk (a streaming server writes one per event): take it; False otherwise."""
        line_end = data.find(b"\r\n")
        if line_end <= 0:
            return False
        try:
            length = int(data[:line_end], 16)
        except ValueError:  # a chunk extension: the general path
            return False
        start = line_end + 2
        if length == 0 or len(data) != start + length + 2 or not data.endswith(b"\r\n"):
            return False
        self._take(data[start:start + length], now)
        return True

    def _take(self, body: bytes, now: float) -> None:
        if self.sink is None or self.status != 200:
            if len(self._body) < _MAX_ERROR_BODY or self.status == 200:
                self._body += body
            return
        if self._events:
            body, self._events = self._events + body, b""
        elif body.startswith(b"data: ") and body.endswith(b"\n\n") and body.count(b"\n") == 2:
            self._data(body[6:-2], now)  # the usual: one event of one data line
            return
        if b"\r" in body:
            body = body.replace(b"\r\n", b"\n")
        start = 0
        while True:
            end = body.find(b"\n\n", start)
            if end < 0:
                break
            if body.startswith(b"data: ", start) and body.find(b"\n", start, end) < 0:  # one data line: the norm
                self._data(body[start + 6:end], now)
            else:
                self._event(body[start:end], now)
            start = end + 2
        if start < len(body):
            self._events = body[start:]

    def _event(self, block: bytes, now: float) -> None:
        for line in block.split(b"\n"):
            if line.startswith(b"data:"):
                self._data(line[5:].strip(), now)

    def _data(self, payload: bytes, now: float) -> None:
        if payload == b"[DONE]":
            self._saw_done = True
        elif payload:
            self.sink(now, payload)  # type: ignore[misc]

    # -- the end ------------------------------------------------------------------------------
    def _complete(self) -> None:
        if self.status != 200:
            self._finish(HTTPStatusError(self.status, bytes(self._body)))
        else:
            self._finish(None)

    def _finish(self, error: Exception | None) -> None:
        if not self.done.done():
            if error is None:
                self.done.set_result((self.status, bytes(self._body), time.perf_counter()))
            else:
                self.done.set_exception(error)
        if self.transport is None or self.transport.is_closing():
            return
        if error is None:
            self._linger()
        else:
            self.transport.close()

    def _linger(self) -> None:
        """After a complete answer, give the server a moment to close first (it was told ``Connection: close``):
        the closing side keeps the TIME_WAIT entry, and a client that closes first runs out of local ports
        at a few hundred requests per second."""
        transport = self.transport
        assert transport is not None
        timer = asyncio.get_running_loop().call_later(LINGER_S, transport.close)
        _lingering().add(transport)
        self._timer = timer


def _lingering() -> weakref.WeakSet[asyncio.BaseTransport]:
    found: weakref.WeakSet[asyncio.BaseTransport] | None = getattr(_buffers, "lingering", None)
    if found is None:
        found = _buffers.lingering = weakref.WeakSet()
    return found


def close_lingering() -> None:
    """Close this thread's connections still waiting for the server to close them (at the end of a run)."""
    for transport in list(_lingering()):
        transport.close()


@functools.lru_cache(maxsize=64)
def _address(host: str, port: int) -> str:
    """``host`` resolved once (asyncio would ask the resolver, in a thread, for every connection)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return str(infos[0][4][0])


@functools.lru_cache(maxsize=1)
def _tls() -> ssl.SSLContext:
    return ssl.create_default_context()


async def _exchange(endpoint: Endpoint, payload: bytes, sink: EventSink | None) -> tuple[int, bytes, float]:
    loop = asyncio.get_running_loop()
    protocol = _Response(sink)
    tls = endpoint.scheme == "https"
    transport, _ = await loop.create_connection(
        lambda: protocol, _address(endpoint.host, endpoint.port), endpoint.port,
        ssl=_tls() if tls else None, server_hostname=endpoint.host if tls else None)
    try:
        transport.write(payload)
        return await protocol.done
    except BaseException:
        transport.close()
        raise


async def stream(endpoint: Endpoint, path: str, body: Mapping[str, Any], headers: Mapping[str, str],
                 sink: EventSink) -> float:
    """POST ``body`` as JSON and hand every SSE ``data:`` payload of the answer to ``sink`` as it arrives.

    Returns the time (``time.perf_counter()``) the answer's last byte arrived.

    Raises :class:`HTTPStatusError` for a status other than 200, :class:`StreamBroken` (a
    ``ConnectionError``) when the connection ends early, ``OSError`` when it cannot be opened.
    """
    _, _, end = await _exchange(endpoint, request_bytes(endpoint, path, _dumps(body), headers, stream=True), sink)
    return end


async def post_json(endpoint: Endpoint, path: str, body: Any, headers: Mapping[str, str]) -> Any:
    """POST ``body`` as JSON and return the decoded JSON answer (raises as :func:`stream` does)."""
    _, answer, _ = await _exchange(endpoint, request_bytes(endpoint, path, _dumps(body), headers, stream=False), None)
    return json.loads(answer)


def _dumps(body: Any) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()
