"""openai clients bound to one servekit server: a crashed server and a rejected key raise servekit errors
that say what to do, and stay catchable as the openai errors they replace."""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING, Any, Protocol

from .errors import KeyRejected
from .keys import mask_key

if TYPE_CHECKING:
    import openai


class Server(Protocol):
    """What a bound client needs of a :class:`servekit.Server`."""

    name: str
    url: str
    base_url: str
    api_key: str | None
    engine: Any

    def raise_if_down(self, cheap: bool = False) -> None: ...


def make_client(server: Server, *, async_: bool, **kwargs: Any) -> Any:
    """An ``openai.OpenAI`` (or ``AsyncOpenAI``) client for ``server``."""
    base = _client_classes()[1 if async_ else 0]
    bound = type(base.__name__, (base,), {"_servekit_server": server})
    kwargs.setdefault("api_key", server.api_key or "none")
    return bound(base_url=server.base_url, **kwargs)


def key_rejected(server: Server, error: openai.AuthenticationError) -> Exception:
    """A :class:`KeyRejected` that is also the ``openai.AuthenticationError`` it replaces."""
    import openai

    if server.api_key:
        expected = (f"It expects the key {mask_key(server.api_key)}: print it with `servekit key {server.name}`; "
                    f"server.env() (or `%serve ... --export`) gives OPENAI_BASE_URL and OPENAI_API_KEY for other programs.")
    else:
        expected = "servekit holds no key for it: pass the server's key, e.g. servekit.attach(url, api_key=...)."
    message = f"{server.engine.display_name} at {server.url} rejected the request's API key (401). {expected}"
    cls = _key_rejected_class()
    rejected = cls.__new__(cls)
    openai.AuthenticationError.__init__(rejected, message, response=error.response, body=error.body)
    return rejected


@cache
def _key_rejected_class() -> type:
    import openai

    return type("KeyRejected", (KeyRejected, openai.AuthenticationError), {"__module__": "servekit.errors"})


@cache
def _client_classes() -> tuple[type, type]:
    import openai

    class ServekitOpenAI(openai.OpenAI):
        _servekit_server: Server

        def request(self, *args: Any, **kwargs: Any) -> Any:
            server = self._servekit_server
            server.raise_if_down(cheap=True)
            try:
                return super().request(*args, **kwargs)
            except openai.AuthenticationError as exc:
                raise key_rejected(server, exc) from None
            except openai.APIConnectionError:
                server.raise_if_down()
                raise

    class ServekitAsyncOpenAI(openai.AsyncOpenAI):
        _servekit_server: Server

        async def request(self, *args: Any, **kwargs: Any) -> Any:
            server = self._servekit_server
            server.raise_if_down(cheap=True)
            try:
                return await super().request(*args, **kwargs)
            except openai.AuthenticationError as exc:
                raise key_rejected(server, exc) from None
            except openai.APIConnectionError:
                server.raise_if_down()
                raise

    return ServekitOpenAI, ServekitAsyncOpenAI
