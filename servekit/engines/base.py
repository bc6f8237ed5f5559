"""The Engine protocol: what servekit needs to know to run one inference engine."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

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

    def available(self) -> Availability: ...

    def resolve(self, spec: ServeSpec) -> ServeSpec:
        """Check and complete a spec (model path, defaults) before anything starts."""
        ...

    def command(self, spec: ServeSpec) -> list[str]: ...

    def environment(self, spec: ServeSpec, ctx: LaunchContext) -> dict[str, str]: ...

    def validate(self, spec: ServeSpec) -> str | None:
        """Check the command line with the engine's own parser where installed; a short report, or InvalidSpec.

        Takes a spec before :meth:`resolve` (engines resolve what they need)."""
        ...

    def served_name(self, spec: ServeSpec) -> str: ...

    def diagnose(self, log_tail: str) -> str | None:
        """A one-line explanation of a failed start, read from the log, if recognised."""
        ...

    def health_headers(self, api_key: str | None) -> dict[str, str]: ...

    def lora_load(self, name: str, path: str) -> Request: ...

    def lora_unload(self, name: str) -> Request: ...

    def lora_list(self) -> Request: ...

    def parse_loras(self, payload: Any) -> list[LoraInfo]: ...

    def load_lora(self, http: httpx.Client, name: str, path: str) -> None: ...

    def unload_lora(self, http: httpx.Client, name: str) -> None: ...

    def list_loras(self, http: httpx.Client) -> list[LoraInfo]: ...

    def lora_request_options(self, served_model: str, adapter: str | None, loras: list[LoraInfo]) -> dict[str, Any]:
        """``model`` and ``extra_body`` for one OpenAI request that applies ``adapter`` (None: the base model)."""
        ...

    def web_ui_note(self, url: str) -> str | None: ...

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
    pip_extra: str = ""

    def resolve(self, spec: ServeSpec) -> ServeSpec:
        return spec

    def environment(self, spec: ServeSpec, ctx: LaunchContext) -> dict[str, str]:
        return {"TMPDIR": str(ctx.run_dir / "tmp")}

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

    def lora_load(self, name: str, path: str) -> Request:
        raise NotImplementedError(f"{self.display_name} cannot load LoRA adapters at run time.")

    def lora_unload(self, name: str) -> Request:
        raise NotImplementedError(f"{self.display_name} cannot unload LoRA adapters at run time.")

    def lora_list(self) -> Request:
        raise NotImplementedError(f"{self.display_name} cannot list LoRA adapters.")

    def parse_loras(self, payload: Any) -> list[LoraInfo]:
        return []

    def load_lora(self, http: httpx.Client, name: str, path: str) -> None:
        send(http, self.lora_load(name, path))

    def unload_lora(self, http: httpx.Client, name: str) -> None:
        send(http, self.lora_unload(name))

    def list_loras(self, http: httpx.Client) -> list[LoraInfo]:
        return self.parse_loras(send(http, self.lora_list()))

    def lora_request_options(self, served_model: str, adapter: str | None, loras: list[LoraInfo]) -> dict[str, Any]:
        return {"model": adapter or served_model, "extra_body": {}}  # vLLM and SGLang serve adapters as models

    def web_ui_note(self, url: str) -> str | None:
        return None

    def install(self, progress: Progress | None = None, force: bool = False, variant: str | None = None) -> str:
        raise NotImplementedError(f"servekit cannot install {self.display_name}; {self.available().install_hint}")

    def available(self) -> Availability:  # pragma: no cover - every engine overrides it
        raise NotImplementedError


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
