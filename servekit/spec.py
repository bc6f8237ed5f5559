"""ServeSpec: an engine-neutral description of one server."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import InvalidSpec

LOOPBACK = "127.0.0.1"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+:-]{0,63}$")


@dataclass(frozen=True)
class ServeSpec:
    """What to serve and how; each engine module turns it into its own command line.

    ``port`` and ``api_key`` left as ``None`` are filled in by :func:`servekit.serve`
    (a free port, a random key). ``api_key=""`` serves without a key.
    """

    engine: str
    model: str
    name: str | None = None
    served_name: str | None = None
    host: str = LOOPBACK
    port: int | None = None
    api_key: str | None = None
    ctx: int | None = None
    parallel: int | None = None
    dtype: str | None = None
    quantization: str | None = None
    tensor_parallel: int | None = None
    loras: tuple[tuple[str, str], ...] = ()
    max_lora_rank: int | None = None
    tool_parser: str | None = None
    memory_fraction: float | None = None
    metrics: bool = True
    cpu: bool | None = None
    extra_args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = field(default=())

    def __post_init__(self) -> None:
        for attr in ("port", "ctx", "parallel", "tensor_parallel", "max_lora_rank"):
            value = getattr(self, attr)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value <= 0):
                raise InvalidSpec(f"{attr} must be a positive integer, got {value!r}.")
        if self.name is not None:
            check_name(self.name)
        if self.api_key is not None:
            check_api_key(self.api_key)
        if self.port is not None and self.port > 65535:
            raise InvalidSpec(f"port must be at most 65535, got {self.port}.")
        if self.memory_fraction is not None and not 0 < self.memory_fraction <= 1:
            raise InvalidSpec(f"memory_fraction must be in (0, 1], got {self.memory_fraction}.")
        if not self.model:
            raise InvalidSpec("model is empty: give a model name, a Hugging Face id or a local path.")
        for lora_name, lora_path in self.loras:
            if not lora_name or not lora_path:
                raise InvalidSpec(f"LoRA adapters are given as NAME=PATH, got {lora_name}={lora_path}.")

    def replace(self, **changes: Any) -> ServeSpec:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    @property
    def env_dict(self) -> dict[str, str]:
        return dict(self.env)

    @classmethod
    def build(cls, engine: str, model: str, **options: Any) -> ServeSpec:
        """Make a spec from keyword options as users write them (``lora={"n": "path"}``, ``env={...}``)."""
        options = dict(options)
        if "lora" in options:
            options["loras"] = options.pop("lora")
        if "loras" in options:
            options["loras"] = normalise_loras(options["loras"])
        if "extra_args" in options:
            options["extra_args"] = tuple(options["extra_args"] or ())
        if "env" in options:
            options["env"] = tuple(sorted(dict(options["env"] or {}).items()))
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise InvalidSpec(
                f"Unknown option(s) {', '.join(unknown)}. Known options: {', '.join(sorted(known - {'engine', 'model'}))}; "
                "pass engine flags with extra_args=[...]."
            )
        return cls(engine=engine, model=model, **options)


def check_name(name: object) -> str:
    """A server name is 1-64 letters, digits and ``. _ + : -``, starting with a letter or digit (it names files)."""
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise InvalidSpec(
            f"Server name {name!r} is not allowed: use 1-64 letters, digits and . _ + : - "
            "(starting with a letter or digit), e.g. 'qwen-small'."
        )
    return name


def check_api_key(key: object) -> str:
    """An API key is printable ASCII without spaces; ``""`` means no key."""
    if not isinstance(key, str) or (key and (not key.isascii() or not key.isprintable() or " " in key
                                             or key.startswith("#") or "," in key)):
        raise InvalidSpec("api_key must be printable ASCII without spaces or commas, not starting with '#' "
                          "(or \"\" for no key); leave it out to get a random one.")
    return key


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach."""
    return host in LOOPBACK_HOSTS or host.startswith("127.")


def normalise_loras(value: Mapping[str, str] | Iterable[str | tuple[str, str]] | None) -> tuple[tuple[str, str], ...]:
    """Accept ``{"name": "path"}``, ``["name=path", ...]`` or ``[("name", "path")]``."""
    if not value:
        return ()
    if isinstance(value, Mapping):
        return tuple((str(k), str(v)) for k, v in value.items())
    pairs: list[tuple[str, str]] = []
    for item in value:
        if isinstance(item, str):
            if "=" not in item:
                raise InvalidSpec(f"LoRA adapter {item!r} must be written NAME=PATH.")
            name, path = item.split("=", 1)
            pairs.append((name.strip(), path.strip()))
        else:
            name, path = item
            pairs.append((str(name), str(path)))
    return tuple(pairs)


def short_name(model: str) -> str:
    """A readable server name from a model reference: ``Qwen/Qwen2-1.5B-Instruct`` -> ``qwen2-1.5b-instruct``."""
    base = model.rstrip("/").split("/")[-1]
    base = re.sub(r"\.gguf$", "", base, flags=re.IGNORECASE)
    base = re.sub(r"[^A-Za-z0-9._+:-]+", "-", base).strip("-").lower()
    return base or "server"
