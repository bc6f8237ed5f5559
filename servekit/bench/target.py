"""The server under load, duck-typed: anything with ``url``, ``base_url``, ``model``, ``headers()`` and an
``engine`` (an engine object or its name) — a :class:`servekit.Server`, an attached server, or your own."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..engines.base import EngineBase, Request
from ..errors import InvalidBenchmark, UnknownEngine
from . import _http


class EngineHooks:
    """The engine's load-generation methods, with plain-OpenAI defaults for an engine that lacks them."""

    def __init__(self, engine: Any):
        plain = EngineBase()
        self.name = getattr(engine, "name", "") or "openai"
        self.body = getattr(engine, "bench_body", plain.bench_body)
        self.exact_output = getattr(engine, "bench_exact_output", plain.bench_exact_output)
        self.chunk_tokens = getattr(engine, "bench_chunk_tokens", plain.bench_chunk_tokens)
        self.tokenize_request = getattr(engine, "tokenize_request", plain.tokenize_request)
        self.tokenize_count = getattr(engine, "tokenize_count", plain.tokenize_count)


@dataclass
class Target:
    """Everything the load generator needs to know about one server."""

    label: str
    url: str
    model: str
    headers: Mapping[str, str]
    engine: EngineHooks
    endpoint: _http.Endpoint
    api_prefix: str  # path of the OpenAI base URL below the root, normally "/v1"
    no_tokenizer: bool = False  # the tokenizer endpoint answered 404 (e.g. a proxy that forwards /v1 only)
    extra_body: Mapping[str, Any] = field(default_factory=dict)  # sent with every request (a LoRA adapter's)

    def api_path(self, api: str) -> str:
        return self.api_prefix + ("/chat/completions" if api == "chat" else "/completions")

    async def count_tokens(self, text: str, add_special: bool) -> int | None:
        """The server's token count for ``text``; None when the engine has no tokenizer endpoint."""
        request: Request | None = self.engine.tokenize_request(self.model, text, add_special)
        if request is None or self.no_tokenizer:
            return None
        try:
            payload = await _http.post_json(self.endpoint, request.path, request.json, self.headers)
        except _http.HTTPStatusError as exc:
            if exc.status != 404:
                raise
            self.no_tokenizer = True
            return None
        return int(self.engine.tokenize_count(payload))


def target_of(server: Any, label: str | None = None, adapter: str | None = None) -> Target:
    """A :class:`Target` for ``server`` (its LoRA ``adapter`` applied to every request, if given); raises
    InvalidBenchmark naming what is missing."""
    missing = [a for a in ("url", "model") if not getattr(server, a, None)]
    if missing:
        raise InvalidBenchmark(
            f"{server!r} is not a server: it needs {', '.join(missing)} (use servekit.serve(...), "
            "servekit.get_server(NAME), or an object with url, base_url, model, headers() and engine)."
        )
    url = str(server.url).rstrip("/")
    base_url = str(getattr(server, "base_url", None) or url + "/v1").rstrip("/")
    if not base_url.startswith(url):
        raise InvalidBenchmark(f"base_url {base_url!r} is not below url {url!r}.")
    try:
        endpoint = _http.Endpoint.parse(url)
    except ValueError as exc:
        raise InvalidBenchmark(f"Cannot load {url!r}: {exc}; the load generator speaks http:// and https://.") from None
    headers_of = getattr(server, "headers", None)
    headers = dict(headers_of() if callable(headers_of) else headers_of or {})
    model, extra_body = str(server.model), {}
    if adapter is not None:
        options = _adapter_options(server, adapter)
        model, extra_body = str(options["model"]), dict(options.get("extra_body") or {})
    name = str(getattr(server, "name", None) or server.model)
    return Target(
        label=label or (f"{name}+{adapter}" if adapter else name),
        url=url, model=model, headers=headers, engine=EngineHooks(_engine_of(server)),
        endpoint=endpoint, api_prefix=base_url[len(url):], extra_body=extra_body,
    )


def _adapter_options(server: Any, adapter: str) -> Mapping[str, Any]:
    """``model`` and ``extra_body`` that apply ``adapter`` (the server's own method says how, per engine)."""
    options_of = getattr(server, "lora_request_options", None)
    if options_of is None:
        raise InvalidBenchmark(f"{server!r} cannot apply LoRA adapters (it has no lora_request_options()).")
    try:
        return options_of(adapter)
    except ValueError as exc:
        raise InvalidBenchmark(str(exc)) from None


def _engine_of(server: Any) -> Any:
    engine = getattr(server, "engine", None) or getattr(server, "engine_name", None)
    if isinstance(engine, str):
        from ..engines import get_engine

        try:
            return get_engine(engine)
        except UnknownEngine:
            return None
    return engine
