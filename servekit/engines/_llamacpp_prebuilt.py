"""llama.cpp's HTTP server without a compiler: ``python -m servekit.engines._llamacpp_prebuilt FLAGS``.

PyPI's ``xllamacpp`` wheel embeds llama.cpp's own server (the same ``/health``, ``/metrics``, ``/slots``,
``/props``, ``/lora-adapters``, OpenAI endpoints) behind a ``CommonParams`` object instead of a command
line. This launcher takes the llama-server flags servekit builds (and the common ones people add after
``--``), sets the matching ``CommonParams`` fields, runs the server in this process until SIGTERM or
SIGINT, and refuses any flag it cannot honour *by name* (``invalid argument: --flag``, exit 2) — a flag
is never dropped silently. ``--check`` parses only (``servekit check``).

The key never needs a command line: ``--api-key-file FILE`` (what servekit passes) is read here.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

EXIT_BAD_FLAG = 2
BUILD_HINT = ("the prebuilt llama.cpp server (xllamacpp) does not take it; `servekit install llamacpp --build` "
              "builds the C++ llama-server, which takes every llama.cpp flag and is then used instead")

Setter = Callable[[Any, str], None]


class BadFlag(Exception):
    """A flag this launcher cannot honour, or a bad value for one."""


def _set(field: str, convert: Callable[[str], Any] = str) -> Setter:
    def setter(params: Any, value: str) -> None:
        target = params
        *parents, leaf = field.split(".")
        for parent in parents:
            target = getattr(target, parent)
        try:
            setattr(target, leaf, convert(value))
        except ValueError as exc:
            raise BadFlag(f"bad value {value!r} ({exc})") from exc
    return setter


def _flag(field: str, value: Any) -> Setter:
    return lambda params, _: _set(field, lambda _v: value)(params, "")


def _int(value: str) -> int:
    return int(value)


def _gpu_layers(value: str) -> int:
    return -1 if value in ("auto", "all") else int(value)


def _lora(params: Any, value: str, scaled: bool) -> None:
    import xllamacpp

    adapters = list(params.lora_adapters)
    for item in filter(None, value.split(",")):
        path, scale = (item.rsplit(":", 1) if scaled and ":" in item else (item, "1"))
        if not Path(path).is_file():
            raise BadFlag(f"LoRA file {path} does not exist")
        adapters.append(xllamacpp.CommonAdapterLoraInfo(path, float(scale)))
    params.lora_adapters = adapters


def _api_keys(params: Any, value: str) -> None:
    params.api_keys = [*params.api_keys, *filter(None, value.split(","))]


def _api_key_file(params: Any, value: str) -> None:
    try:
        keys = [line.strip() for line in Path(value).read_text().splitlines() if line.strip()]
    except OSError as exc:
        raise BadFlag(f"cannot read the key file {value}: {exc.strerror}") from exc
    params.api_keys = [*params.api_keys, *keys]


def _enum(enum_name: str, field: str, choices: dict[str, str]) -> Setter:
    def setter(params: Any, value: str) -> None:
        import xllamacpp

        if value not in choices:
            raise BadFlag(f"bad value {value!r}: one of {', '.join(choices)}")
        setattr(params, field, getattr(getattr(xllamacpp, enum_name), choices[value]))
    return setter


def _alias(params: Any, value: str) -> None:
    params.model_alias = set(filter(None, value.split(",")))


def _host(params: Any, value: str) -> None:
    params.hostnames = [value]


_ON_OFF = {"on": "LLAMA_FLASH_ATTN_TYPE_ENABLED", "off": "LLAMA_FLASH_ATTN_TYPE_DISABLED",
           "auto": "LLAMA_FLASH_ATTN_TYPE_AUTO"}
_SPLIT = {"none": "LLAMA_SPLIT_MODE_NONE", "layer": "LLAMA_SPLIT_MODE_LAYER", "row": "LLAMA_SPLIT_MODE_ROW"}

# flag names -> (takes a value, setter)
FLAGS: dict[tuple[str, ...], tuple[bool, Setter]] = {
    ("-m", "--model"): (True, _set("model.path")),
    ("-hf", "-hfr", "--hf-repo"): (True, _set("model.hf_repo")),
    ("-hff", "--hf-file"): (True, _set("model.hf_file")),
    ("--host",): (True, _host),
    ("--port",): (True, _set("port", _int)),
    ("-a", "--alias"): (True, _alias),
    ("-c", "--ctx-size"): (True, _set("n_ctx", _int)),
    ("-np", "--parallel"): (True, _set("n_parallel", _int)),
    ("-b", "--batch-size"): (True, _set("n_batch", _int)),
    ("-ub", "--ubatch-size"): (True, _set("n_ubatch", _int)),
    ("-n", "--n-predict", "--predict"): (True, _set("n_predict", _int)),
    ("--keep",): (True, _set("n_keep", _int)),
    ("-t", "--threads"): (True, _set("cpuparams.n_threads", _int)),
    ("-tb", "--threads-batch"): (True, _set("cpuparams_batch.n_threads", _int)),
    ("--threads-http",): (True, _set("n_threads_http", _int)),
    ("-ngl", "--gpu-layers", "--n-gpu-layers"): (True, _set("n_gpu_layers", _gpu_layers)),
    ("-sm", "--split-mode"): (True, _enum("llama_split_mode", "split_mode", _SPLIT)),
    ("-fa", "--flash-attn"): (True, _enum("llama_flash_attn_type", "flash_attn_type", _ON_OFF)),
    ("--lora",): (True, lambda p, v: _lora(p, v, scaled=False)),
    ("--lora-scaled",): (True, lambda p, v: _lora(p, v, scaled=True)),
    ("--lora-init-without-apply",): (False, _flag("lora_init_without_apply", True)),
    ("-cram", "--cache-ram"): (True, _set("cache_ram_mib", _int)),
    ("--cache-reuse",): (True, _set("n_cache_reuse", _int)),
    ("--slot-save-path",): (True, _set("slot_save_path")),
    ("--api-key",): (True, _api_keys),
    ("--api-key-file",): (True, _api_key_file),
    ("--chat-template",): (True, _set("chat_template")),
    ("--jinja",): (False, _flag("use_jinja", True)),
    ("--no-jinja",): (False, _flag("use_jinja", False)),
    ("--metrics",): (False, _flag("endpoint_metrics", True)),
    ("--slots",): (False, _flag("endpoint_slots", True)),
    ("--no-slots",): (False, _flag("endpoint_slots", False)),
    ("--props",): (False, _flag("endpoint_props", True)),
    ("--no-webui",): (False, _flag("ui", False)),
    ("--embedding", "--embeddings"): (False, _flag("embedding", True)),
    ("-cb", "--cont-batching"): (False, _flag("cont_batching", True)),
    ("-nocb", "--no-cont-batching"): (False, _flag("cont_batching", False)),
    ("--context-shift",): (False, _flag("ctx_shift", True)),
    ("--no-context-shift",): (False, _flag("ctx_shift", False)),
    ("-kvu", "--kv-unified"): (False, _flag("kv_unified", True)),
    ("-no-kvu", "--no-kv-unified"): (False, _flag("kv_unified", False)),
    ("--no-warmup",): (False, _flag("warmup", False)),
    ("-nr", "--no-repack"): (False, _flag("no_extra_bufts", True)),
    ("--swa-full",): (False, _flag("swa_full", True)),
    ("-to", "--timeout"): (True, lambda p, v: (_set("timeout_read", _int)(p, v), _set("timeout_write", _int)(p, v))),
    ("-s", "--seed"): (True, _set("sampling.seed", _int)),
    ("--temp", "--temperature"): (True, _set("sampling.temp", float)),
    ("--top-k",): (True, _set("sampling.top_k", _int)),
    ("--top-p",): (True, _set("sampling.top_p", float)),
    ("--min-p",): (True, _set("sampling.min_p", float)),
    ("--ignore-eos",): (False, _flag("sampling.ignore_eos", True)),
    ("-lv", "--verbosity", "--log-verbosity"): (True, _set("verbosity", _int)),
}
_BY_NAME = {name: spec for names, spec in FLAGS.items() for name in names}


def parse(argv: list[str]) -> Any:
    """``CommonParams`` for a llama-server command line; BadFlag names the first flag it cannot honour."""
    import xllamacpp

    params = xllamacpp.CommonParams()
    params.endpoint_slots = False  # llama-server's defaults: /slots and /metrics only when asked
    params.endpoint_metrics = False
    params.n_parallel = -1  # llama-server's default: automatic slots (CommonParams' own default is 1)
    i = 0
    while i < len(argv):
        arg = argv[i]
        name, eq, inline = arg.partition("=") if arg.startswith("--") else (arg, "", "")
        spec = _BY_NAME.get(name)
        if spec is None:
            raise BadFlag(f"invalid argument: {arg} — {BUILD_HINT}")
        takes_value, setter = spec
        if takes_value and not eq:
            if i + 1 >= len(argv):
                raise BadFlag(f"invalid argument: {name} needs a value")
            inline, i = argv[i + 1], i + 1
        try:
            setter(params, inline)
        except BadFlag as exc:
            raise BadFlag(f"error while handling argument {name}: {exc}") from exc
        i += 1
    if not params.model.path and not params.model.hf_repo:
        raise BadFlag("invalid argument: no model given (-m FILE.gguf or -hf REPO)")
    if params.n_parallel < 0:  # as llama-server resolves "auto": 4 slots sharing one KV pool
        params.n_parallel, params.kv_unified = 4, True
    return params


def serve(params: Any) -> int:
    """Run the server until SIGTERM/SIGINT; then shut it down in order."""
    import xllamacpp

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda *_: stop.set())
    server = xllamacpp.Server(params)
    print(f"servekit: xllamacpp {getattr(xllamacpp, '__version__', '?')} listening on "
          f"{server.listening_address}", file=sys.stderr, flush=True)
    while not stop.wait(3600):
        pass
    del server  # stops the HTTP loop and frees the model
    sys.stderr.flush()
    os._exit(0)  # the interpreter's own teardown adds ~1.8 s with nothing left to clean up


def main(argv: list[str]) -> int:
    check = "--check" in argv
    argv = [a for a in argv if a != "--check"]
    try:
        params = parse(argv)
    except BadFlag as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return EXIT_BAD_FLAG
    if check:
        print("servekit: the prebuilt llama.cpp server accepts every flag", flush=True)
        return 0
    return serve(params)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
