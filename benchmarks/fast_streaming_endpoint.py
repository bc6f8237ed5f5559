"""A FAST LOCAL STREAMING ENDPOINT written for ``bench_client_cost.py`` — not an inference server.

It exists only to measure load-generator *clients*: it answers OpenAI ``/v1/completions`` and
``/v1/chat/completions`` streams with vLLM-shaped chunks, one token per chunk for every open stream on a
shared tick (as a batching engine's decode step does), costs little CPU itself, and counts what it
sent. Nothing in servekit or its tests uses it; tests run real engines.

    python benchmarks/fast_streaming_endpoint.py --port 8123 --tick-ms 2

``GET /stats`` answers ``{"requests", "streams_now", "max_streams", "tokens", "first_request_at"}``;
``POST /reset`` zeroes the counters.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

_HEAD = (b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
         b"transfer-encoding: chunked\r\n")


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


class Stats:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.requests = 0
        self.streams_now = 0
        self.max_streams = 0
        self.tokens = 0
        self.first_request_at: float | None = None

    def json(self) -> bytes:
        return json.dumps({"requests": self.requests, "streams_now": self.streams_now, "max_streams": self.max_streams,
                           "tokens": self.tokens, "first_request_at": self.first_request_at}).encode()


class Stream:
    """One streamed answer: ``left`` tokens to go, written one per tick."""

    def __init__(self, transport: asyncio.Transport, chat: bool, max_tokens: int, usage_each: bool, usage_end: bool,
                 keep_alive: bool, on_done: object):
        self.transport, self.chat, self.left, self.total = transport, chat, max_tokens, max_tokens
        self.usage_each, self.usage_end, self.keep_alive, self.on_done = usage_each, usage_end, keep_alive, on_done
        self.sent = 0
        kind = b"chat.completion.chunk" if chat else b"text_completion"
        self._prefix = b'data: {"id":"cmpl-fake","object":"' + kind + b'","created":0,"model":"fake","choices":[{'

    def _choice(self, text: bytes, finish: bytes) -> bytes:
        if self.chat:
            return b'"index":0,"delta":{"content":"' + text + b'"},"finish_reason":' + finish + b"}]"
        return b'"index":0,"text":"' + text + b'","logprobs":null,"finish_reason":' + finish + b"}]"

    def _usage(self) -> bytes:
        return b',"usage":{"prompt_tokens":16,"completion_tokens":%d,"total_tokens":%d}' % (self.sent, self.sent + 16)

    def tick(self, stats: Stats) -> bool:
        """Write the next token; True when the stream has ended."""
        if self.transport.is_closing():
            return True
        self.sent += 1
        self.left -= 1
        stats.tokens += 1
        event = self._prefix + self._choice(b" tok", b"null") + (self._usage() if self.usage_each else b"") + b"}\n\n"
        out = [_chunk(event)]
        if self.left <= 0:
            out.append(_chunk(self._prefix + self._choice(b"", b'"length"') + b"}\n\n"))
            if self.usage_end:
                out.append(_chunk(b'data: {"id":"cmpl-fake","object":"text_completion","created":0,"model":"fake",'
                                  b'"choices":[]' + self._usage() + b"}\n\n"))
            out.append(_chunk(b"data: [DONE]\n\n"))
            out.append(b"0\r\n\r\n")
        self.transport.write(b"".join(out))
        if self.left <= 0:
            if not self.keep_alive:
                self.transport.close()
            return True
        return False


class Connection(asyncio.Protocol):
    def __init__(self, server: Endpoint):
        self.server = server
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buffer[:end]).decode("latin-1")
            lines = head.split("\r\n")
            fields = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
            length = int(fields.get("content-length", "0"))
            if len(self.buffer) < end + 4 + length:
                return
            body = bytes(self.buffer[end + 4:end + 4 + length])
            del self.buffer[:end + 4 + length]
            method, path = lines[0].split(" ")[:2]
            keep_alive = fields.get("connection", "keep-alive").lower() != "close"
            self.server.handle(self.transport, method, path, body, keep_alive)  # type: ignore[arg-type]


class Endpoint:
    def __init__(self, tick_s: float):
        self.tick_s = tick_s
        self.stats = Stats()
        self.streams: list[Stream] = []

    def handle(self, transport: asyncio.Transport, method: str, path: str, body: bytes, keep_alive: bool) -> None:
        if path == "/stats":
            return self._reply(transport, self.stats.json(), keep_alive)
        if path == "/reset":
            self.stats.reset()
            return self._reply(transport, b"{}", keep_alive)
        if path in ("/v1/models", "/health"):
            return self._reply(transport, b'{"object":"list","data":[{"id":"fake","object":"model"}]}', keep_alive)
        if method != "POST" or path not in ("/v1/completions", "/v1/chat/completions"):
            return self._reply(transport, b'{"error":"not found"}', keep_alive, status=b"404 Not Found")
        request = json.loads(body or b"{}")
        self.stats.requests += 1
        if self.stats.first_request_at is None:
            self.stats.first_request_at = time.time()
        options = request.get("stream_options") or {}
        usage_end = bool(options.get("include_usage"))
        stream = Stream(transport, path.endswith("chat/completions"), int(request.get("max_tokens") or 16),
                        usage_end and bool(options.get("continuous_usage_stats")), usage_end, keep_alive, None)
        connection = b"keep-alive" if keep_alive else b"close"
        transport.write(_HEAD + b"connection: " + connection + b"\r\n\r\n")
        self.streams.append(stream)
        self.stats.streams_now = len(self.streams)
        self.stats.max_streams = max(self.stats.max_streams, self.stats.streams_now)

    @staticmethod
    def _reply(transport: asyncio.Transport, payload: bytes, keep_alive: bool, status: bytes = b"200 OK") -> None:
        connection = b"keep-alive" if keep_alive else b"close"
        transport.write(b"HTTP/1.1 " + status + b"\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
                        b"connection: %s\r\n\r\n%s" % (len(payload), connection, payload))
        if not keep_alive:
            transport.close()

    async def ticker(self) -> None:
        """The decode step: one token to every open stream, every tick."""
        loop = asyncio.get_running_loop()
        next_tick = loop.time()
        while True:
            next_tick += self.tick_s
            await asyncio.sleep(max(0.0, next_tick - loop.time()))
            if self.streams:
                self.streams = [s for s in self.streams if not s.tick(self.stats)]
                self.stats.streams_now = len(self.streams)


async def serve(port: int, tick_s: float) -> None:
    endpoint = Endpoint(tick_s)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Connection(endpoint), "127.0.0.1", port, backlog=4096)
    print(f"fast streaming endpoint (for client benchmarks) on http://127.0.0.1:{port}", flush=True)
    async with server:
        await endpoint.ticker()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--tick-ms", type=float, default=2.0, help="decode step: one token per stream per tick")
    args = parser.parse_args()
    asyncio.run(serve(args.port, args.tick_ms / 1000.0))


if __name__ == "__main__":
    main()
