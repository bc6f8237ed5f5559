"""httpx clients for servers: a plain-HTTP URL gets no TLS context.

httpx builds a TLS context with the system's certificates for every client it makes (~0.25 s on a
busy 2-core machine), even for ``http://127.0.0.1`` where none is used; readiness polls and metric
scrapes make many clients, so for plain HTTP servekit skips it. HTTPS URLs are verified as usual.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import httpx


def needs_tls(url: str) -> bool:
    return url.lower().startswith("https://")


def client(base_url: str, headers: Mapping[str, str] | None = None, timeout: float = 30.0,
           **options: Any) -> httpx.Client:
    """An ``httpx.Client`` rooted at ``base_url``."""
    import httpx

    options.setdefault("verify", needs_tls(base_url))
    return httpx.Client(base_url=base_url, headers=dict(headers or {}), timeout=timeout, **options)


def async_client(base_url: str, headers: Mapping[str, str] | None = None, timeout: float = 30.0,
                 **options: Any) -> httpx.AsyncClient:
    """An ``httpx.AsyncClient`` rooted at ``base_url``."""
    import httpx

    options.setdefault("verify", needs_tls(base_url))
    return httpx.AsyncClient(base_url=base_url, headers=dict(headers or {}), timeout=timeout, **options)
