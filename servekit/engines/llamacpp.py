"""llama.cpp's ``llama-server``: find the server, map a ServeSpec onto its flags.

Two builds of the same server, chosen per start (``$SERVEKIT_LLAMACPP_BUILD=compiled|prebuilt`` forces one):
- **compiled** (preferred when present): a ``llama-server`` binary from ``$SERVEKIT_LLAMA_SERVER``, else
  ``PATH``, else servekit's own build (``servekit install llamacpp --build``) from the llama.cpp sources
  vendored in the llama-cpp-python sdist. Takes every llama.cpp flag.
- **prebuilt** (no compiler needed): PyPI's ``xllamacpp`` wheel, a dependency of servekit where a wheel
  exists, run in a process of its own by :mod:`servekit.engines._llamacpp_prebuilt`, which takes the same
  flags and refuses by name any it cannot honour.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import sources
from ..constraints import Constraint, UnsupportedConstraint, choice_as_gbnf
from ..errors import BuildError, EngineRequestError, InvalidSpec, ModelNotFound
from ..paths import cache_dir
from ..spec import ServeSpec
from .base import (
    Availability,
    EngineBase,
    Launch,
    LaunchContext,
    LoraInfo,
    Progress,
    WebPage,
    answers_json,
    has_flag,
    write_secret,
)

if TYPE_CHECKING:
    import httpx

SDIST_PACKAGE = "llama-cpp-python"
SDIST_VERSION = "0.3.36"
BUILD_KEY = "native-noamx-1"  # bump when the build recipe changes
TARGETS = ("llama-server", "llama-quantize")
_HF_REPO = re.compile(r"^[\w.-]+/[\w.-]+(:[\w.-]+)?$")


def build_root() -> Path:
    """Where servekit's own llama.cpp build lives, keyed by sdist version and recipe."""
    return cache_dir() / "llama.cpp" / f"{SDIST_VERSION}-{BUILD_KEY}"


def llama_cpp_source_dir() -> Path:
    """The vendored llama.cpp sources (convert_hf_to_gguf.py, convert_lora_to_gguf.py, gguf-py)."""
    src = build_root() / "src"
    if not (src / "convert_hf_to_gguf.py").is_file():
        raise BuildError("llama.cpp sources are not unpacked yet: run `servekit install llamacpp`.")
    return src


def _own_binary(name: str) -> Path:
    return build_root() / "bin" / name


def _find_binary(name: str, env_var: str) -> Path | None:
    override = os.environ.get(env_var)
    if override:
        return Path(override)
    on_path = shutil.which(name)
    if on_path:
        return Path(on_path)
    own = _own_binary(name)
    return own if own.is_file() else None


PREBUILT_MODULE = "servekit.engines._llamacpp_prebuilt"
BUILD_ENV = "SERVEKIT_LLAMACPP_BUILD"


def _prebuilt_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("xllamacpp") is not None


def server_build() -> str | None:
    """``compiled``, ``prebuilt`` or None (neither is here): which llama.cpp server the next start runs."""
    forced = os.environ.get(BUILD_ENV, "").strip().lower()
    if forced not in ("", "compiled", "prebuilt"):
        raise InvalidSpec(f"{BUILD_ENV}={forced!r}: use compiled, prebuilt, or leave it unset.")
    compiled = _find_binary("llama-server", "SERVEKIT_LLAMA_SERVER") is not None
    if forced == "compiled" or (not forced and compiled):
        return "compiled" if compiled else None
    return "prebuilt" if _prebuilt_available() else None


def _xllamacpp_version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("xllamacpp")
    except PackageNotFoundError:
        return None


def llama_server_binary() -> Path:
    """Path of the ``llama-server`` that servekit will run; raises if there is none."""
    found = _find_binary("llama-server", "SERVEKIT_LLAMA_SERVER")
    if found is None:
        raise BuildError("llama-server is not installed: run `servekit install llamacpp` (builds it, ~5 min).")
    return found


def llama_quantize_binary() -> Path:
    """Path of ``llama-quantize`` (next to a given llama-server, on PATH, or servekit's build)."""
    override = os.environ.get("SERVEKIT_LLAMA_SERVER")
    if override and (Path(override).parent / "llama-quantize").is_file():
        return Path(override).parent / "llama-quantize"
    found = _find_binary("llama-quantize", "SERVEKIT_LLAMA_QUANTIZE")
    if found is None:
        raise BuildError("llama-quantize is not installed: run `servekit install llamacpp`.")
    return found


@cache
def _binary_version(binary: str) -> str | None:
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r"version:\s*(\S+(?:\s*\([0-9a-f]+\))?)", out.stdout + out.stderr)
    return match.group(1) if match else None


class LlamaCppEngine(EngineBase):
    """llama.cpp's ``llama-server``."""

    name = "llamacpp"
    aliases = ("llama.cpp", "llama-cpp", "llama-server")
    display_name = "llama-server"
    model_format = "gguf"
    default_port = 8080
    health_path = "/health"
    startup_timeout = 300.0
    metric_names: Mapping[str, str] = {
        "requests_running": "llamacpp:requests_processing",
        "requests_waiting": "llamacpp:requests_deferred",
        "prompt_tokens_total": "llamacpp:prompt_tokens_total",
        "generation_tokens_total": "llamacpp:tokens_predicted_total",
        "prompt_seconds_total": "llamacpp:prompt_seconds_total",
        "generation_seconds_total": "llamacpp:tokens_predicted_seconds_total",
        "prompt_tokens_per_second": "llamacpp:prompt_tokens_seconds",
        "generation_tokens_per_second": "llamacpp:predicted_tokens_seconds",
        "decode_calls_total": "llamacpp:n_decode_total",
        "busy_slots_per_decode": "llamacpp:n_busy_slots_per_decode",
    }

    # -- availability and installation -----------------------------------------------------
    def available(self) -> Availability:
        build = server_build()
        hint = ("Reinstall servekit where PyPI has an xllamacpp wheel (Linux x86-64, macOS, Windows) for the prebuilt "
                "server, or run `servekit install llamacpp --build` (needs CMake and a C++ compiler), or set "
                "SERVEKIT_LLAMA_SERVER to a llama-server binary.")
        if build is None:
            return Availability(False, install_hint=hint)
        if build == "prebuilt":
            return Availability(True, version=f"xllamacpp {_xllamacpp_version()}", detail="prebuilt (xllamacpp)")
        binary = _find_binary("llama-server", "SERVEKIT_LLAMA_SERVER")
        assert binary is not None
        if not os.access(binary, os.X_OK):
            return Availability(False, detail=f"{binary} is not executable", install_hint=hint)
        return Availability(True, version=_binary_version(str(binary)), detail=str(binary))

    def install(self, progress: Progress | None = None, force: bool = False, variant: str | None = None) -> str:
        """``build``: compile llama-server and llama-quantize into the user cache (once per version).
        Otherwise the prebuilt server (xllamacpp, installed with servekit) when there is one, else the build."""
        if variant not in (None, "", "cpu", "build"):
            raise InvalidSpec(f"Unknown llama.cpp variant {variant!r}: `servekit install llamacpp` (prebuilt where "
                              "possible) or `servekit install llamacpp --build` (compile llama-server).")
        if variant != "build" and not force and _prebuilt_available():
            say = progress or (lambda line: None)
            say(f"llama.cpp's server is prebuilt here (xllamacpp {_xllamacpp_version()}); "
                "`servekit install llamacpp --build` compiles llama-server too")
            return "xllamacpp " + str(_xllamacpp_version())
        return str(build_llama_cpp(progress=progress, force=force))

    # -- spec -> command line --------------------------------------------------------------
    def resolve(self, spec: ServeSpec, *, prepare: bool = True) -> ServeSpec:
        for field_name, why in (("dtype", "the dtype is fixed by the GGUF file: pick another GGUF file"),
                                ("memory_fraction", "llama-server has no memory-fraction setting: use --ctx and --parallel")):
            if getattr(spec, field_name) is not None:
                raise InvalidSpec(f"{field_name} does not apply to llama.cpp: {why}.")
        model, served, loras = _resolve_model(spec.model, spec.quantization, prepare)
        for lora_name, lora_path in spec.loras:
            if not Path(lora_path).expanduser().is_file():
                raise ModelNotFound(f"LoRA adapter {lora_name!r}: {lora_path} is not a file (llama-server needs a GGUF LoRA).")
        all_loras = loras + tuple((n, str(Path(p).expanduser().resolve())) for n, p in spec.loras)
        return spec.replace(model=model, served_name=spec.served_name or served, loras=all_loras)

    def command(self, spec: ServeSpec) -> list[str]:
        if server_build() == "prebuilt":
            cmd = [sys.executable, "-m", PREBUILT_MODULE]
        else:
            binary = _find_binary("llama-server", "SERVEKIT_LLAMA_SERVER")
            cmd = [str(binary) if binary else "llama-server"]
        if spec.model.lower().endswith(".gguf") or Path(spec.model).is_file():
            cmd += ["-m", spec.model]
        else:
            repo = spec.model if ":" in spec.model or not spec.quantization else f"{spec.model}:{spec.quantization}"
            cmd += ["-hf", repo]
        cmd += ["--host", spec.host]
        if spec.port is not None:
            cmd += ["--port", str(spec.port)]
        cmd += ["--alias", self.served_name(spec)]
        if spec.ctx:
            cmd += ["-c", str(spec.ctx)]
        if spec.parallel:
            cmd += ["-np", str(spec.parallel)]
        if spec.loras:
            # Adapters start switched off (scale 0; --lora-init-without-apply is ignored); a request
            # that names one switches it on, and load_lora() switches it on for everyone.
            cmd += ["--lora-scaled", ",".join(f"{path}:0" for _, path in spec.loras)]
            if not has_flag(spec.extra_args, "--cache-ram"):
                # the RAM prompt cache restores states computed under other adapter scales (answers then
                # mix adapters: measured 52-60 % instead of 100 %), so it is off while adapters are loaded
                cmd += ["--cache-ram", "0"]
            if not has_flag(spec.extra_args, "--slot-save-path"):
                # slot actions (erase, used when adapter scales change) need it; "." is the server's run dir
                cmd += ["--slot-save-path", "."]
        if spec.tensor_parallel and spec.tensor_parallel > 1:
            cmd += ["--split-mode", "row"]
        if spec.tool_parser:
            cmd += ["--jinja"]
        if spec.cpu:
            cmd += ["--n-gpu-layers", "0"]
        if spec.metrics:
            cmd += ["--metrics"]
        cmd += ["--slots"]
        return cmd + list(spec.extra_args)

    def environment(self, spec: ServeSpec, ctx: LaunchContext) -> dict[str, str]:
        return {"TMPDIR": str(ctx.run_dir / "tmp")}

    def launch(self, spec: ServeSpec, ctx: LaunchContext) -> Launch:
        """The key goes into a 0600 file of the private run directory (``--api-key-file``)."""
        command = self.command(spec)
        if spec.api_key:
            command += ["--api-key-file", str(write_secret(ctx.run_dir / "api-key", spec.api_key + "\n"))]
        return Launch(command, self.environment(spec, ctx))

    def validate(self, spec: ServeSpec) -> str:
        """Run llama-server's own argument parser on the command line servekit would run (the prebuilt
        server: its launcher's parser, which refuses by name what it cannot honour).

        llama-server parses every flag before it loads a model, so it is started with the model swapped
        for a file that does not exist, on a free loopback port: a bad flag ends it with llama-server's
        own "invalid argument" message; a good command line gets as far as loading the model and stops
        there (no model is built, read or served)."""
        resolved = self.resolve(spec, prepare=False)
        with tempfile.TemporaryDirectory(prefix="servekit-check-") as tmp:
            probe = resolved.replace(model=str(Path(tmp) / "servekit-check-no-model.gguf"), host="127.0.0.1",
                                     port=_free_port(), api_key=None,
                                     loras=tuple((n, str(Path(tmp) / f"{n}.gguf")) for n, _ in resolved.loras))
            for _, path in probe.loras:
                Path(path).write_bytes(b"")  # exists, so the parser accepts it; never loaded
            check_flag = ["--check"] if server_build() == "prebuilt" else []  # the prebuilt launcher parses only
            try:
                out = subprocess.run(self.command(probe) + check_flag, capture_output=True, text=True, timeout=60, cwd=tmp,
                                     env={**os.environ, "TMPDIR": tmp}, stdin=subprocess.DEVNULL, check=False)
            except subprocess.TimeoutExpired as exc:
                raise InvalidSpec("llama-server's argument check did not finish within 60 s.") from exc
        return _parse_check(out.stdout + out.stderr, self.command(resolved))

    def served_name(self, spec: ServeSpec) -> str:
        return spec.served_name or Path(spec.model).stem

    def diagnose(self, log_tail: str) -> str | None:
        if "couldn't bind" in log_tail or "address already in use" in log_tail.lower():
            return "The port is already in use: pick another port, or leave it out to get a free one."
        if "failed to load model" in log_tail or "error loading model" in log_tail:
            return "llama-server could not load the model: check that the file is a complete, valid GGUF."
        if "invalid argument" in log_tail or "unknown argument" in log_tail:
            return "llama-server rejected a flag: see `llama-server --help` for the flags this build knows."
        return super().diagnose(log_tail)

    def _own_endpoint(self, http: httpx.Client) -> bool:
        return answers_json(http, "/props", "default_generation_settings")

    def web_ui(self, url: str) -> WebPage:
        if server_build() == "prebuilt":
            return WebPage(url.rstrip("/") + "/", "llama.cpp's chat page (prebuilt server)")
        binary = _find_binary("llama-server", "SERVEKIT_LLAMA_SERVER")
        if binary is not None and _own_binary("llama-server") == binary:
            return WebPage(None, "API only: servekit's offline build of llama-server has no chat page. For the web UI, "
                                 "install a llama.cpp release build and set SERVEKIT_LLAMA_SERVER to its llama-server.")
        return WebPage(url.rstrip("/") + "/", "llama.cpp's chat page")

    # -- LoRA: llama-server loads adapters at start and switches their scales at run time ----
    def list_loras(self, http: httpx.Client) -> list[LoraInfo]:
        response = http.get("/lora-adapters")
        _check(response, "GET /lora-adapters")
        return [
            LoraInfo(name=_lora_name(item), path=item.get("path"), scale=item.get("scale"), extra={"id": item.get("id")})
            for item in response.json()
        ]

    def load_lora(self, http: httpx.Client, name: str, path: str) -> None:
        self._set_scale(http, name, path, 1.0)

    def unload_lora(self, http: httpx.Client, name: str) -> None:
        self._set_scale(http, name, None, 0.0)

    def _set_scale(self, http: httpx.Client, name: str, path: str | None, scale: float) -> None:
        adapters = self.list_loras(http)
        target = [a for a in adapters if a.name == name or (path and _same_file(a.path, path))]
        if not target:
            raise EngineRequestError(
                f"llama-server has no adapter {name!r}: it loads adapters only at start. "
                "Pass lora={name: path} to serve() (or --lora NAME=PATH to %serve), then switch it on with load_lora().",
                404,
            )
        body = [{"id": a.extra["id"], "scale": scale if a in target else a.scale} for a in adapters]
        response = http.post("/lora-adapters", json=body)
        _check(response, "POST /lora-adapters")
        _erase_slots(http)

    def lora_request_options(self, served_model: str, adapter: str | None, loras: list[LoraInfo]) -> dict[str, Any]:
        """A per-request ``lora`` list of scales: explicit even for the base model, because a changed
        list is what makes llama-server drop a prompt cache computed under other scales."""
        ids = [(info.name, info.extra.get("id"), info.scale) for info in loras if isinstance(info.extra.get("id"), int)]
        if not ids:
            return {"model": served_model, "extra_body": {}}
        scales = [{"id": i, "scale": (1.0 if name == adapter else 0.0) if adapter else float(scale or 0.0)}
                  for name, i, scale in ids]
        return {"model": served_model, "extra_body": {"lora": scales}}

    def constraint_options(self, constraint: Constraint) -> dict[str, Any]:
        """llama-server's own fields: ``json_schema`` (turned into a grammar by the server) and ``grammar``
        (GBNF); a choice becomes a GBNF alternation. It has no regex constraint."""
        if constraint.kind == "json_schema":
            return {"extra_body": {"json_schema": constraint.schema_dict}}
        if constraint.kind == "grammar":
            return {"extra_body": {"grammar": constraint.value}}
        if constraint.kind == "choice":
            return {"extra_body": {"grammar": choice_as_gbnf(constraint.value)}}
        raise UnsupportedConstraint(
            "llama-server has no regex constraint (it would answer unconstrained): write the pattern as a GBNF "
            "grammar (grammar='root ::= …'), or serve the model with vllm or sglang, which take regex=.")

    # -- load generation (servekit.bench) ---------------------------------------------------
    # tools/server (as vendored in llama-cpp-python 0.3.36): `timings_per_token` puts the slot's stats, `predicted_n` = tokens
    # generated so far, into every streamed chunk; `ignore_eos` bans every end-of-generation token;
    # POST /tokenize {"content", "add_special"} answers {"tokens": [...]}. There is no
    # `continuous_usage_stats`, and /v1/completions puts `usage` into the last chunk *with* its choices.
    def bench_body(self, max_tokens: int | None, exact_output: bool) -> dict[str, Any]:
        body: dict[str, Any] = {"stream_options": {"include_usage": True}, "timings_per_token": True}
        if exact_output:
            body["ignore_eos"] = True
        return body

    def bench_exact_output(self) -> bool:
        return True

    def bench_chunk_tokens(self, chunk: Mapping[str, Any]) -> int | None:
        timings = chunk.get("timings")
        return timings.get("predicted_n") if isinstance(timings, dict) else None

    def tokenize_request(self, model: str, text: str, add_special: bool) -> Any:
        from .base import Request

        return Request("POST", "/tokenize", json={"content": text, "add_special": add_special})

    def tokenize_count(self, payload: Any) -> int:
        return len(payload["tokens"])

    # -- monitoring (servekit.metrics) ------------------------------------------------------
    # /metrics has no KV-cache gauge and no latency histograms, and counts a request's generated
    # tokens only when it ends. GET /slots (servekit passes --slots) has, per slot: "n_ctx" (its
    # context size), "is_processing", and for its current task "n_prompt_tokens" (tokens in the
    # slot's KV cache: prompt plus tokens generated so far) and next_token[0].n_decoded.
    def extra_metrics(self, http: httpx.Client, command: tuple[str, ...] = ()) -> dict[str, float]:
        """Busy slots, KV-cache use and the tokens running requests have generated, from ``GET /slots``."""
        response = http.get("/slots")
        _check(response, "GET /slots")
        return self.slot_metrics(response.json(), self.kv_pool(command))

    @staticmethod
    def slot_metrics(slots: list[dict[str, Any]], pool: tuple[bool, int] | None) -> dict[str, float]:
        """``/slots`` as MetricsRecorder values; ``pool`` is :meth:`kv_pool`'s (shared?, -c tokens) or None."""
        busy = [slot for slot in slots if slot.get("is_processing")]
        held = [float(slot.get("n_prompt_tokens") or 0) for slot in busy]
        sizes = [float(slot.get("n_ctx") or 0) for slot in slots]
        capacity = 0.0
        if pool is not None:  # one shared pool: -c (a slot's n_ctx is capped at the model's training context)
            capacity = max(max(sizes, default=0.0), float(pool[1])) if pool[0] else sum(sizes)
        fills = [tokens / float(slot["n_ctx"]) for tokens, slot in zip(held, busy) if slot.get("n_ctx")]
        decoded = [float((slot.get("next_token") or [{}])[0].get("n_decoded") or 0) for slot in busy]
        return {
            "slots_busy": float(len(busy)), "slots_total": float(len(slots)),
            "kv_cache_tokens": sum(held), "kv_cache_usage": sum(held) / capacity if capacity else float("nan"),
            "slot_context_max": max(fills, default=0.0), "generation_tokens_in_flight": sum(decoded),
        }

    @staticmethod
    def kv_pool(command: tuple[str, ...]) -> tuple[bool, int] | None:
        """(whether all slots share one KV pool, -c rounded up as llama.cpp does) from the server's command
        line; None when it cannot tell (a server servekit did not start, or --kv-unified-per-slot).

        llama-server shares one pool when asked (-kvu) or when the slot count is automatic (no -np); a
        slot's n_ctx is then the pool (at most the model's training context), else pool / slots."""
        if not command or has_flag(command, "--kv-unified-per-slot"):
            return None
        unified: bool | None = None
        options = {"-np": "-1", "-c": "0"}
        names = {"-np": "-np", "--parallel": "-np", "-c": "-c", "--ctx-size": "-c"}
        for i, arg in enumerate(command):
            name, eq, value = arg.partition("=")
            if arg in ("-kvu", "--kv-unified"):
                unified = True
            elif arg in ("-no-kvu", "--no-kv-unified"):
                unified = False
            elif name in names and (eq or i + 1 < len(command)):
                options[names[name]] = value if eq else command[i + 1]
        shared = unified if unified is not None else options["-np"].strip() == "-1"
        ctx = int(options["-c"]) if options["-c"].strip().isdigit() else 0
        return shared, -(-ctx // 256) * 256


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


_CHECK_REJECTED = re.compile(r"^(?:error: )?(invalid argument: .*|error while handling argument .*|.*unknown argument.*)$",
                             re.MULTILINE | re.IGNORECASE)
_CHECK_REACHED_MODEL = ("servekit-check-no-model.gguf", "failed to load model", "failed to open", "loading model",
                        "prebuilt llama.cpp server accepts every flag")


def _parse_check(output: str, command: list[str]) -> str:
    """llama-server's verdict on its command line, from what it printed before loading the model."""
    rejected = _CHECK_REJECTED.search(output)
    if rejected:
        raise InvalidSpec(f"llama-server rejects this command line: {rejected.group(1).strip()} "
                          "(`llama-server --help` lists the flags this build knows).")
    if any(marker in output for marker in _CHECK_REACHED_MODEL):
        return "llama-server's parser accepts: " + " ".join(command)
    tail = "\n".join(output.strip().splitlines()[-5:])
    raise InvalidSpec(f"llama-server stopped before it reached the model; its last lines:\n{tail}")


def _erase_slots(http: httpx.Client) -> None:
    """Drop every idle slot's cached prompt: it was computed under the old adapter scales."""
    slots = http.get("/slots")
    if slots.status_code != 200:
        return
    for slot in slots.json():
        if not slot.get("is_processing"):
            _check(http.post(f"/slots/{slot['id']}", params={"action": "erase"}), "POST /slots?action=erase")


def _check(response: Any, what: str) -> None:
    if response.status_code != 200:
        raise EngineRequestError(f"{what} answered {response.status_code}: {response.text[:300]}", response.status_code)


def _lora_name(item: Mapping[str, Any]) -> str:
    path = str(item.get("path") or "")
    return Path(path).stem.removeprefix("lora-") if path else str(item.get("id"))


def _same_file(a: str | None, b: str) -> bool:
    return bool(a) and Path(str(a)).resolve() == Path(b).expanduser().resolve()


def _resolve_model(model: str, quantization: str | None,
                   prepare: bool = True) -> tuple[str, str, tuple[tuple[str, str], ...]]:
    """(model argument, served name, LoRA adapters) for a source's name (``demo:Q4_K_M``), a local GGUF,
    or a Hugging Face repo."""
    named = model if not quantization or ":" in model else f"{model}:{quantization}"
    found = sources.resolve(named, "gguf", prepare=prepare)
    if found is not None:
        return str(found.path), found.served_name, tuple(found.loras)
    path = Path(model).expanduser()
    if path.is_file():
        if quantization:
            raise InvalidSpec("With a local GGUF file the quantization is the file's own: pick the file of that type.")
        return str(path.resolve()), path.stem, ()
    if path.is_dir():
        ggufs = sorted(path.glob("*.gguf"))
        if len(ggufs) == 1:
            return str(ggufs[0].resolve()), ggufs[0].stem, ()
        if (path / "config.json").is_file():
            raise ModelNotFound(f"{path} is a Hugging Face folder; llama-server needs a GGUF file. Convert it with "
                                "llama.cpp's convert_hf_to_gguf.py, or serve it with vllm or sglang.")
        names = ", ".join(p.name for p in ggufs) or "none"
        raise ModelNotFound(f"{path} is a folder; give one GGUF file inside it (found: {names}).")
    if _HF_REPO.match(model) and not model.startswith((".", "/", "~")):
        return model, model.split("/")[-1].split(":")[0], ()
    raise ModelNotFound(f"Model {model!r} is neither a local GGUF file, a demo name (demo, demo:Q4_K_M) "
                        "nor a Hugging Face repo (org/name[:QUANT]).")


# -- building llama.cpp ------------------------------------------------------------------------
def fetch_llama_cpp_sources(progress: Progress | None = None) -> Path:
    """llama.cpp's sources (its GGUF converters, gguf-py) unpacked into the user cache, nothing compiled:
    the demo model's GGUF conversion needs them, the prebuilt server does not. Returns the source folder."""
    try:
        return llama_cpp_source_dir()
    except BuildError:
        pass
    root = build_root()
    root.mkdir(parents=True, exist_ok=True)
    return _download_llama_cpp_sources(root, root / "sources.log", progress, "llama.cpp's converters")


def _download_llama_cpp_sources(root: Path, log_path: Path, progress: Progress | None, purpose: str) -> Path:
    """Download the llama-cpp-python sdist and unpack its vendored llama.cpp into ``root/src``."""
    from ..envs import run_logged

    say = progress or (lambda line: None)
    say(f"downloading the {SDIST_PACKAGE} {SDIST_VERSION} source distribution ({purpose})")
    with tempfile.TemporaryDirectory(prefix="servekit-llama-") as tmp:
        # Only this package from source: its build tools (scikit-build-core …) come as wheels, so reading the
        # sdist's metadata compiles nothing (`--no-binary :all:` built each of them from its sdist: ~1 min).
        run_logged([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", SDIST_PACKAGE,
                    f"{SDIST_PACKAGE}=={SDIST_VERSION}", "-d", tmp], log_path, progress)
        return _unpack_vendored_llama_cpp(next(Path(tmp).glob("*.tar.gz")), root)


def missing_build_tools() -> str | None:
    """What compiling llama-server lacks here (CMake, a C++ compiler), or None."""
    if shutil.which("cmake") is None:
        return "no cmake on PATH"
    if not (shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")):
        return "no C++ compiler on PATH"
    return None


def compiled_build_installed() -> bool:
    """servekit's own compiled llama-server and llama-quantize are in the user cache."""
    return all((build_root() / "bin" / target).is_file() for target in TARGETS)


def build_llama_cpp(progress: Progress | None = None, force: bool = False) -> Path:
    """Build ``llama-server`` and ``llama-quantize`` from the llama-cpp-python sdist; return the bin folder."""
    from ..envs import run_logged

    root = build_root()
    bin_dir = root / "bin"
    if not force and compiled_build_installed() and (root / "src" / "convert_hf_to_gguf.py").is_file():
        return bin_dir
    say = progress or (lambda line: None)
    missing = missing_build_tools()
    if missing:
        raise BuildError(f"Building llama-server needs CMake and a C++ compiler ({missing}): `pip install cmake` "
                         "and `apt-get install build-essential` (or your platform's equivalent), then retry.")
    cmake = str(shutil.which("cmake"))
    root.mkdir(parents=True, exist_ok=True)
    log_path = root / "build.log"
    log_path.unlink(missing_ok=True)
    started = time.monotonic()
    if force or not (root / "src" / "CMakeLists.txt").is_file():
        src = _download_llama_cpp_sources(root, log_path, progress, "llama.cpp sources")
    else:
        src = llama_cpp_source_dir()  # unpacked already for the converters
    with tempfile.TemporaryDirectory(prefix="servekit-llama-") as tmp:
        build_dir = Path(tmp) / "build"
        say("configuring (CMake)")
        run_logged([cmake, "-S", str(src), "-B", str(build_dir), *_cmake_flags()], log_path, progress)
        jobs = str(os.cpu_count() or 2)
        say(f"compiling {', '.join(TARGETS)} with {jobs} jobs (about 5 minutes on 2 cores)")
        run_logged([cmake, "--build", str(build_dir), "-j", jobs, "--target", *TARGETS], log_path, progress)
        install_binaries(build_dir / "bin", bin_dir)
    say(f"built {', '.join(TARGETS)} in {time.monotonic() - started:.0f} s into {bin_dir}")
    return bin_dir


def install_binaries(built: Path, bin_dir: Path) -> None:
    """Copy ``llama-server`` and ``llama-quantize`` from ``built`` into ``bin_dir``, each one whole or not at all:
    a server started while a build finishes finds either no binary or a complete one."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    for target in TARGETS:
        partial = bin_dir / f".{target}.partial"
        shutil.copy2(built / target, partial)
        os.replace(partial, bin_dir / target)
    _binary_version.cache_clear()


def _unpack_vendored_llama_cpp(sdist: Path, root: Path) -> Path:
    src = root / "src"
    if src.exists():
        shutil.rmtree(src)
    with tarfile.open(sdist) as archive:
        marker = "/vendor/llama.cpp/CMakeLists.txt"
        found = next((m.name for m in archive.getmembers() if m.name.endswith(marker)), None)
        if found is None:
            raise BuildError(f"{sdist.name} holds no vendored llama.cpp sources (looked for *{marker}).")
        prefix = found[: -len("/CMakeLists.txt")]
        members = [m for m in archive.getmembers() if m.name.startswith(prefix + "/")]
        for member in members:
            member.name = member.name[len(prefix) + 1:]
        archive.extractall(src, members=members, filter="data")
    return src


def _cmake_flags() -> list[str]:
    flags = [
        "-DCMAKE_BUILD_TYPE=Release", "-DBUILD_SHARED_LIBS=OFF", "-DLLAMA_BUILD_TESTS=OFF",
        "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_BUILD_UI=OFF", "-DLLAMA_USE_PREBUILT_UI=OFF", "-DGGML_NATIVE=ON",
    ]
    if platform.machine().lower() in ("x86_64", "amd64"):
        # -march=native turns on AMX where the CPU reports it, but a process must ask the kernel for AMX
        # first: such a build crashes on the first quantized model. Build without AMX.
        no_amx = "-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
        flags += ["-DGGML_AMX_TILE=OFF", "-DGGML_AMX_INT8=OFF", "-DGGML_AMX_BF16=OFF",
                  f"-DCMAKE_C_FLAGS={no_amx}", f"-DCMAKE_CXX_FLAGS={no_amx}"]
    return flags
