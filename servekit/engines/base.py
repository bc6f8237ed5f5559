"""The Engine protocol: what servekit needs to know to run one inference engine."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from ..constraints import Constraint, UnsupportedConstraint
from ..errors import EngineRequestError
from ..spec import ServeSpec

if TYPE_CHECKING:
    import httpx

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Availability:
    """Whether an engine can be launched here, and if not, how to fix that."""

    installed: bool
    version: str | None = None
    detail: str = ""
    install_hint: str = ""

    def __bool__(self) -> bool:
        return self.installed


@dataclass(frozen=True)
class Request:
    """One HTTP call against a running server (used for runtime LoRA and the like)."""

    method: str
    path: str
    json: Any = None
    ok_statuses: tuple[int, ...] = (200,)


@dataclass(frozen=True)
class LaunchContext:
    """Per-server facts an engine may need when building its environment."""

    run_dir: Path  # private to this server, removed on stop: TMPDIR, caches, sockets
    log_path: Path


@dataclass(frozen=True)
class Launch:
    """How to start one server: its command line and the environment it adds.

    The API key travels in ``env`` or in a file of the private run directory — never in ``command``,
    which every local user can read (``ps``)."""

    command: list[str]
    env: dict[str, str]


@dataclass(frozen=True)
class WebPage:
    """An engine's own web page for people (a chat page): where it is, and one line about it.

    ``url`` is None when the engine (or this build of it) has none; ``note`` then says why."""

    url: str | None
    note: str = ""


@dataclass(frozen=True)
class LoraInfo:
    """A LoRA adapter as the server reports it."""

    name: str
    path: str | None = None
    scale: float | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)


@runtime_checkable
class Engine(Protocol):
    """One inference engine. Implementations live in ``servekit/engines/<name>.py``."""

    name: str
    aliases: tuple[str, ...]
    display_name: str
    default_port: int
    health_path: str
    health_timeout: float  # seconds one readiness probe may take
    startup_timeout: float
    metric_names: Mapping[str, str]
    # A path relative to the server's run dir at least as long as any unix socket the engine builds there
    # ("" when it builds none): checked against the kernel's 107-character limit before the engine starts.
    longest_socket: str

    def available(self) -> Availability: ...

    def resolve(self, spec: ServeSpec, *, prepare: bool = True) -> ServeSpec:
        """Check and complete a spec (model path, defaults) before anything starts.

        ``prepare=False`` (``servekit check``): never build or download a model to do so."""
        ...

    def command(self, spec: ServeSpec) -> list[str]:
        """The engine's command line for a resolved spec, without the API key."""
        ...

    def environment(self, spec: ServeSpec, ctx: LaunchContext) -> dict[str, str]: ...

    def launch(self, spec: ServeSpec, ctx: LaunchContext) -> Launch:
        """Command and environment that start the server, with the API key delivered out of the command line."""
        ...

    def recognise(self, http: httpx.Client, metrics_text: str) -> bool:
        """True when the server at ``http`` (with its ``/metrics`` text, maybe empty) is this engine."""
        ...

    def identify(self, http: httpx.Client, served_name: str) -> str | None:
        """None when the server answering at ``http`` is the one started (it takes this key and serves
        ``served_name``); else why not."""
        ...

    def validate(self, spec: ServeSpec) -> str | None:
        """Check the command line with the engine's own parser where installed; a short report, or InvalidSpec.

        Takes a spec before :meth:`resolve` (engines resolve what they need)."""
        ...

    def served_name(self, spec: ServeSpec) -> str: ...

    def diagnose(self, log_tail: str) -> str | None:
        """A one-line explanation of a failed start, read from the log, if recognised."""
        ...

    def health_headers(self, api_key: str | None) -> dict[str, str]: ...

    def load_lora(self, http: httpx.Client, name: str, path: str) -> None: ...

    def unload_lora(self, http: httpx.Client, name: str) -> None: ...

    def list_loras(self, http: httpx.Client) -> list[LoraInfo]: ...

    def lora_request_options(self, served_model: str, adapter: str | None, loras: list[LoraInfo]) -> dict[str, Any]:
        """``model`` and ``extra_body`` for one OpenAI request that applies ``adapter`` (None: the base model)."""
        ...

    def constraint_options(self, constraint: Constraint) -> dict[str, Any]:
        """Keyword arguments for a chat request that makes the output obey ``constraint``; raises
        :class:`~servekit.constraints.UnsupportedConstraint` for a kind the engine cannot apply."""
        ...

    def web_ui(self, url: str) -> WebPage:
        """The engine's web page for a server at ``url`` (its root URL)."""
        ...

    def extra_metrics(self, http: httpx.Client, command: tuple[str, ...] = ()) -> dict[str, float]:
        """One sample of numbers beyond ``/metrics`` (keys: MetricsRecorder columns), e.g. from llama.cpp's ``/slots``.

        ``http`` is rooted at the server with its key; ``command`` is its command line when servekit started it."""
        ...

    def install(self, progress: Progress | None = None, force: bool = False, variant: str | None = None) -> str: ...


class EngineBase:
    """Defaults shared by the built-in engines; each engine module overrides what differs."""

    name: str = ""
    aliases: tuple[str, ...] = ()
    display_name: str = ""
    default_port: int = 8000
    health_path: str = "/health"
    health_timeout: float = 2.0
    startup_timeout: float = 600.0
    metric_names: Mapping[str, str] = {}
    longest_socket: str = ""
    pip_extra: str = ""
    model_format: str = "hf"  # the files it serves: "gguf" or "hf" (a Hugging Face folder or hub id)

    def resolve(self, spec: ServeSpec, *, prepare: bool = True) -> ServeSpec:
        return spec

    def environment(self, spec: ServeSpec, ctx: LaunchContext) -> dict[str, str]:
        return {"TMPDIR": str(ctx.run_dir / "tmp")}

    def launch(self, spec: ServeSpec, ctx: LaunchContext) -> Launch:
        if spec.api_key:
            raise NotImplementedError(f"{self.display_name} has no way to receive an API key off its command line.")
        return Launch(self.command(spec), self.environment(spec, ctx))

    def recognise(self, http: httpx.Client, metrics_text: str) -> bool:
        """Its metric families in ``/metrics`` (``vllm:…``), or :meth:`_own_endpoint` answering as this engine."""
        prefixes = {name.split(":", 1)[0] + ":" for name in self.metric_names.values() if ":" in name}
        if any(line.startswith(tuple(prefixes)) for line in metrics_text.splitlines() if not line.startswith("#")):
            return True
        return self._own_endpoint(http)

    def _own_endpoint(self, http: httpx.Client) -> bool:
        """Whether an endpoint only this engine has answers (for servers with metrics off)."""
        return False

    def identify(self, http: httpx.Client, served_name: str) -> str | None:
        """Checks ``GET /v1/models`` with the key: 200, and ``served_name`` among the model ids."""
        try:
            response = http.get("/v1/models")
        except Exception as exc:  # noqa: BLE001 - any transport error means "not (yet) identified"
            return f"GET /v1/models failed: {exc}"
        if response.status_code == 401:
            return "it answers with another API key"
        if response.status_code != 200:
            return f"GET /v1/models answered {response.status_code}"
        try:
            ids = [str(item.get("id")) for item in response.json().get("data", [])]
        except (ValueError, AttributeError):
            return "GET /v1/models answered something that is not a model list"
        return None if served_name in ids else f"it serves {', '.join(ids) or 'no model'}, not {served_name!r}"

    def validate(self, spec: ServeSpec) -> str | None:
        return None

    def served_name(self, spec: ServeSpec) -> str:
        return spec.served_name or spec.model

    def diagnose(self, log_tail: str) -> str | None:
        lowered = log_tail.lower()
        if "address already in use" in lowered or "couldn't bind" in lowered:
            return "The port is already in use: pick another port, or leave port unset to get a free one."
        return None

    def health_headers(self, api_key: str | None) -> dict[str, str]:
        return {}

    # Runtime LoRA, one way: the three performers below. Engines whose adapter API is one HTTP call each
    # only say which call (the ``_*_request`` builders) and how to read the list (``_parse_loras``).
    def load_lora(self, http: httpx.Client, name: str, path: str) -> None:
        send(http, self._load_request(name, path))

    def unload_lora(self, http: httpx.Client, name: str) -> None:
        send(http, self._unload_request(name))

    def list_loras(self, http: httpx.Client) -> list[LoraInfo]:
        return self._parse_loras(send(http, self._list_request()))

    def _load_request(self, name: str, path: str) -> Request:
        raise NotImplementedError(f"{self.display_name} cannot load LoRA adapters at run time.")

    def _unload_request(self, name: str) -> Request:
        raise NotImplementedError(f"{self.display_name} cannot unload LoRA adapters at run time.")

    def _list_request(self) -> Request:
        raise NotImplementedError(f"{self.display_name} cannot list LoRA adapters.")

    def _parse_loras(self, payload: Any) -> list[LoraInfo]:
        return []

    def lora_request_options(self, served_model: str, adapter: str | None, loras: list[LoraInfo]) -> dict[str, Any]:
        return {"model": adapter or served_model, "extra_body": {}}  # vLLM and SGLang serve adapters as models

    def constraint_options(self, constraint: Constraint) -> dict[str, Any]:
        raise UnsupportedConstraint(f"servekit does not know how {self.display_name} constrains output.")

    def web_ui(self, url: str) -> WebPage:
        return WebPage(None)

    def extra_metrics(self, http: httpx.Client, command: tuple[str, ...] = ()) -> dict[str, float]:
        return {}  # everything this engine reports is in /metrics

    def install(self, progress: Progress | None = None, force: bool = False, variant: str | None = None) -> str:
        raise NotImplementedError(f"servekit cannot install {self.display_name}; {self.available().install_hint}")

    def available(self) -> Availability:  # pragma: no cover - every engine overrides it
        raise NotImplementedError

    # -- load generation (servekit.bench) ---------------------------------------------------
    # Defaults are plain OpenAI: usage only in the last chunk, no way to force the output length,
    # no tokenizer endpoint. Engines override what they have.
    def bench_body(self, max_tokens: int | None, exact_output: bool) -> dict[str, Any]:
        """Extra body fields of one streamed benchmark request: usage in the stream (per chunk where the
        engine can) and, with ``exact_output``, what makes the server generate exactly ``max_tokens``."""
        return {"stream_options": {"include_usage": True}}

    def bench_exact_output(self) -> bool:
        """True when :meth:`bench_body` can make the output exactly ``max_tokens`` long."""
        return False

    def bench_chunk_tokens(self, chunk: Mapping[str, Any]) -> int | None:
        """Output tokens generated so far, as one streamed chunk reports them; None when it does not say."""
        return None

    def tokenize_request(self, model: str, text: str, add_special: bool) -> Request | None:
        """The call that tokenizes ``text`` on the server (None: the engine has no such endpoint)."""
        return None

    def tokenize_count(self, payload: Any) -> int:
        """The number of tokens in the answer to :meth:`tokenize_request`."""
        raise NotImplementedError(f"{self.display_name or 'this server'} has no tokenizer endpoint.")


def write_secret(path: Path, text: str) -> Path:
    """Write ``text`` to a new file only this user can read (0600); return its path."""
    import os

    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    return path


def answers_json(http: httpx.Client, path: str, key: str) -> bool:
    """True when ``GET path`` answers 200 with a JSON object holding ``key``."""
    try:
        response = http.get(path)
        return response.status_code == 200 and key in response.json()
    except Exception:  # noqa: BLE001 - any failure means "not this engine"
        return False


def has_flag(args: Sequence[str], flag: str) -> bool:
    """True when ``flag`` is among ``args`` (``--flag value`` or ``--flag=value``)."""
    return any(a == flag or a.startswith(flag + "=") for a in args)


def send(http: httpx.Client, request: Request) -> Any:
    """Perform ``request``; return its JSON (or text); raise EngineRequestError on an unexpected status."""
    response = http.request(request.method, request.path, json=request.json)
    if response.status_code not in request.ok_statuses:
        raise EngineRequestError(
            f"{request.method} {request.path} answered {response.status_code}: {response.text[:500]}",
            response.status_code,
        )
    try:
        return response.json()
    except ValueError:
        return response.text
