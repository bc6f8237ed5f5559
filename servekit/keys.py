"""API keys: made random, shown masked, scrubbed from engine output."""

from __future__ import annotations

import secrets


def new_api_key() -> str:
    """A random API key; the ``sk-`` prefix keeps it from ever reading as a command-line flag."""
    return "sk-" + secrets.token_urlsafe(24)


def mask_key(key: str | None) -> str:
    """Show an API key as ``abcd…`` — never whole."""
    if not key:
        return "(none)"
    return key[:4] + "…"


def redact(text: str, key: str | None) -> str:
    """``text`` with every occurrence of ``key`` masked (engines echo their arguments into their logs)."""
    return text.replace(key, mask_key(key)) if key else text
