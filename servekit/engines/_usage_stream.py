"""Load-generation hooks shared by the OpenAI servers that report running usage (vLLM, SGLang).

Both (vLLM 0.32.0, SGLang 0.5.23 checked): ``stream_options.continuous_usage_stats`` puts the running
``usage`` (cumulative ``completion_tokens``) into every streamed chunk; ``ignore_eos`` + ``min_tokens`` make
the output exactly ``max_tokens`` long; ``POST <tokenize_path> {"model", "prompt", "add_special_tokens"}``
answers ``{"count", ...}``. Only the tokenize path differs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .base import Request


class UsageStreamBench:
    """Mixin for an :class:`~servekit.engines.base.Engine`: the ``bench_*`` and ``tokenize_*`` hooks."""

    tokenize_path = "/tokenize"

    def bench_body(self, max_tokens: int | None, exact_output: bool) -> dict[str, Any]:
        body: dict[str, Any] = {"stream_options": {"include_usage": True, "continuous_usage_stats": True}}
        if exact_output and max_tokens:
            body.update(ignore_eos=True, min_tokens=max_tokens)
        return body

    def bench_exact_output(self) -> bool:
        return True

    def bench_chunk_tokens(self, chunk: Mapping[str, Any]) -> int | None:
        usage = chunk.get("usage")
        return usage.get("completion_tokens") if isinstance(usage, dict) else None

    def tokenize_request(self, model: str, text: str, add_special: bool) -> Request | None:
        return Request("POST", self.tokenize_path,
                       json={"model": model, "prompt": text, "add_special_tokens": add_special})

    def tokenize_count(self, payload: Any) -> int:
        return int(payload["count"])
