"""SGLang: map a ServeSpec onto ``python -m sglang.launch_server``, check it with SGLang's own parser.

The interpreter that runs SGLang is, in order: ``$SERVEKIT_SGLANG_PYTHON``; the current one when
``sglang`` is importable there (e.g. ``pip install 'servekit[sglang]'`` on a GPU machine); the
environment ``servekit install sglang-cpu`` makes in the user cache.

**CPU mode** (``cpu=True``; automatic when no GPU device is present or the interpreter is
servekit's sglang-cpu environment) runs SGLang's torch-native CPU path
(``SGLANG_USE_CPU_ENGINE=1 … --device cpu``). PyPI has no CPU build of SGLang's kernel package,
so servekit puts an import shim for ``sgl_kernel`` and ``torchvision`` on the server's
``PYTHONPATH``: importable, never callable — any call is logged to the server log and fails.
Plain text generation never calls it; speculative decoding and LoRA do, so CPU mode refuses them.
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..constraints import Constraint, choice_as_regex, response_format
from ..envs import cpu_torch_requirements
from ..errors import EngineNotInstalled, InvalidSpec
from ..gpus import gpus
from ..spec import ServeSpec
from ._pyenv import PythonEnvEngine, check_hf_model, last_lines, named_hf_model, settings_report
from ._usage_stream import UsageStreamBench
from .base import Launch, LaunchContext, Progress, Request, answers_json, has_flag

if TYPE_CHECKING:
    import httpx

log = logging.getLogger(__name__)

SGLANG_VERSION = "0.5.23"
TORCH_VERSION = "2.13.0"  # SGLang 0.5.23 asks for 2.14.1; it runs on 2.13.0, whose CPU wheel is small
TRITON_VERSION = "3.7.1"  # real triton: torch.compile'd sampling penalties need it, a shim breaks them
CPU_ENV_NAME = f"sglang-cpu-{SGLANG_VERSION}"
CPU_MAX_TOTAL_TOKENS = 8192  # without it SGLang reserves 70 % of RAM for the KV cache on CPU

# What SGLang 0.5.23 imports to serve text on the CPU (found by starting it and reading import
# errors), pinned where SGLang pins them. Its CUDA packages (sglang-kernel, flashinfer, …),
# torchvision/torchaudio/torchcodec and GPU-only extras are left out on purpose.
CPU_DEPS: tuple[str, ...] = (
    "aiohttp==3.14.5",
    "apache-tvm-ffi==0.1.11",
    "compressed-tensors==0.18.0",
    "dill==0.4.1",
    "einops==0.8.2",
    "fastapi==0.165.0",
    "gguf==0.19.0",
    "interegular==0.3.3",
    "ipython==9.18.1",
    "jsonschema==4.26.0",
    "msgspec==0.22.0",
    "numpy==2.4.6",
    "openai==2.8.0",
    "openai-harmony==0.0.4",  # /v1/responses
    "orjson==3.13.0",
    "packaging==26.3",
    "partial-json-parser==0.2.1.1.post7",
    "pillow==13.0.0",
    "prometheus-client==0.26.0",
    "psutil==7.2.2",
    "pybase64==1.5.1",
    "pydantic==2.14.4",
    "python-multipart==0.0.34",
    "pyzmq==27.3.0",
    "regex==2026.11.19",
    "requests==2.34.2",
    "sentencepiece==0.2.1",
    "setproctitle==1.3.8",
    "soundfile==0.13.1",
    "tokenizers==0.23.2",
    "tqdm==4.70.1",
    "transformers==5.19.0",
    "uvicorn==0.54.0",
    "uvloop==0.23.0",
    "watchfiles==1.3.0",
    "xgrammar==0.2.7",
    "xxhash==4.1.0",
    "zstandard==0.25.0",
)

# Flags that make SGLang call a GPU kernel (speculative decoding) or need pinned CUDA memory (LoRA).
_CPU_REFUSED_PREFIXES: tuple[tuple[str, str], ...] = (
    ("--speculative", "speculative decoding calls SGLang's CUDA kernels"),
    ("--enable-lora", "SGLang's LoRA path pins memory with CUDA (fails with 'pin_memory' on the CPU)"),
    ("--lora-", "SGLang's LoRA path pins memory with CUDA (fails with 'pin_memory' on the CPU)"),
    ("--max-lora", "SGLang's LoRA path pins memory with CUDA (fails with 'pin_memory' on the CPU)"),
    ("--max-loaded-loras", "SGLang's LoRA path pins memory with CUDA (fails with 'pin_memory' on the CPU)"),
    ("--max-loras-per-batch", "SGLang's LoRA path pins memory with CUDA (fails with 'pin_memory' on the CPU)"),
)

SHIM_DIR = Path(__file__).resolve().parent / "sglang_cpu_shim"
_CHECK_SCRIPT = Path(__file__).resolve().parent / "_sglang_check.py"
_ARGPARSE_ERROR = re.compile(r"^[\w.][\w. -]*: error: ", re.MULTILINE)  # "sglang serve: error: ..." (argparse)


KEY_ENV = "SERVEKIT_SGLANG_API_KEY"
_KEY_LAUNCHER = (
    "import os, runpy, sys; "
    f"key = os.environ.pop({KEY_ENV!r}); "
    "sys.argv = ['sglang.launch_server', *sys.argv[1:], '--api-key=' + key]; "
    "runpy.run_module('sglang.launch_server', run_name='__main__', alter_sys=True)"
)


def cpu_refusal(args: Sequence[str]) -> str | None:
    """Why CPU mode cannot run with these SGLang flags, or None."""
    for arg in args:
        for prefix, why in _CPU_REFUSED_PREFIXES:
            if arg.startswith(prefix):
                return f"{arg.split('=', 1)[0]}: {why}"
    return None


class SglangEngine(UsageStreamBench, PythonEnvEngine):
    """SGLang's HTTP server (``sglang.launch_server``)."""

    name = "sglang"
    aliases = ()
    display_name = "SGLang"
    default_port = 30000
    # 503 while starting and warming up; once up, a 1-token generation (~1 s). No key needed.
    health_path = "/health_generate"
    health_timeout = 10.0
    startup_timeout = 900.0
    pip_extra = "sglang"
    longest_socket = "tmp/" + "0" * 24  # ZMQ sockets from tempfile in $TMPDIR (tmpXXXXXXXX)
    package = "sglang"
    cpu_env_name = CPU_ENV_NAME
    cpu_version = SGLANG_VERSION
    cpu_install_note = f"SGLang {SGLANG_VERSION} in its own environment, text only, ~2.3 GB"
    metric_names: Mapping[str, str] = {
        "requests_running": "sglang:num_running_reqs",
        "requests_waiting": "sglang:num_queue_reqs",
        "kv_cache_usage": "sglang:token_usage",
        "kv_cache_tokens": "sglang:num_used_tokens",
        # generation_tokens_total moves only when a request ends; this one every 40 decode steps
        "generation_tokens_live_total": 'sglang:realtime_tokens_total{mode="decode"}',
        "prompt_tokens_total": "sglang:prompt_tokens_total",
        "generation_tokens_total": "sglang:generation_tokens_total",
        "ttft_seconds": "sglang:time_to_first_token_seconds",
        "itl_seconds": "sglang:inter_token_latency_seconds",
        "e2e_seconds": "sglang:e2e_request_latency_seconds",
        "requests_total": "sglang:num_requests_total",
        "cache_hit_rate": "sglang:cache_hit_rate",
        "generation_tokens_per_second": "sglang:gen_throughput",
        "queue_seconds": "sglang:queue_time_seconds",
    }

    def cpu_install_steps(self, progress: Progress | None = None) -> list[list[str]]:
        return cpu_install_steps(progress)

    # -- spec -> command line --------------------------------------------------------------
    def resolve(self, spec: ServeSpec, *, prepare: bool = True) -> ServeSpec:
        """Demo names to the demo model's HF export; decide CPU mode; refuse what CPU mode cannot run."""
        spec = resolve_model(spec, prepare)
        if spec.cpu is None:
            spec = spec.replace(cpu=self.auto_cpu())
        if spec.cpu:
            self._refuse_on_cpu(spec)
            log.warning(
                "SGLang runs in servekit's CPU mode: torch-native path (--device cpu) with an import shim for "
                "sgl_kernel/torchvision; speculative decoding and LoRA are unavailable."
            )
        elif spec.dtype is None and any(gpu.bfloat16 is False for gpu in gpus()):
            log.warning("servekit: %s", _NO_BF16_HALF)
            spec = spec.replace(dtype="float16")
        return spec

    def _refuse_on_cpu(self, spec: ServeSpec) -> None:
        if spec.loras or spec.max_lora_rank:
            raise InvalidSpec(
                "LoRA is not available in servekit's SGLang CPU mode: SGLang's LoRA path pins memory with CUDA "
                "(fails with 'pin_memory' on the CPU). Serve LoRA adapters on a GPU, "
                "or with llamacpp or vllm on the CPU."
            )
        why = cpu_refusal(spec.extra_args)
        if why:
            raise InvalidSpec(
                f"Not available in servekit's SGLang CPU mode: {why}. "
                "Drop the flag, or run SGLang on a GPU (cpu=False)."
            )

    def server_args(self, spec: ServeSpec) -> list[str]:
        """SGLang's own arguments for ``spec`` (what follows ``python -m sglang.launch_server``)."""
        args = ["--model-path", spec.model, "--host", spec.host, "--port", str(spec.port or self.default_port)]
        args += ["--served-model-name", self.served_name(spec)]
        if spec.dtype:
            args += ["--dtype", spec.dtype]
        if spec.quantization:
            args += ["--quantization", spec.quantization]
        if spec.ctx:
            args += ["--context-length", str(spec.ctx)]
        if spec.parallel:
            args += ["--max-running-requests", str(spec.parallel)]
        if spec.loras or spec.max_lora_rank:
            args += ["--enable-lora"]
            if spec.loras:
                args += ["--lora-paths", *(f"{name}={path}" for name, path in spec.loras)]
            else:  # adapters only at run time: SGLang must know which modules they touch
                args += ["--lora-target-modules", "all"]
            if spec.max_lora_rank:
                args += ["--max-lora-rank", str(spec.max_lora_rank)]
        if spec.tensor_parallel:
            args += ["--tp-size", str(spec.tensor_parallel)]
        if spec.tool_parser:
            args += ["--tool-call-parser", spec.tool_parser]
        if spec.memory_fraction is not None:
            args += ["--mem-fraction-static", f"{spec.memory_fraction:g}"]
        if spec.metrics:
            args += ["--enable-metrics"]
        if spec.cpu:
            args += ["--device", "cpu"]
            if not has_flag(spec.extra_args, "--max-total-tokens"):
                args += ["--max-total-tokens", str(max(CPU_MAX_TOTAL_TOKENS, spec.ctx or 0))]
        return args + list(spec.extra_args)

    def command(self, spec: ServeSpec) -> list[str]:
        if spec.cpu:
            self._refuse_on_cpu(spec)
        return [str(self.python()), "-P", "-m", "sglang.launch_server", *self.server_args(spec)]

    def launch(self, spec: ServeSpec, ctx: LaunchContext) -> Launch:
        """SGLang reads its key only from ``--api-key``: a launcher takes it from the environment and adds
        it to ``sys.argv`` inside the process, so no command line shows it (its children get the parsed
        arguments through a pipe, not a command line)."""
        command = self.command(spec)
        env = self.environment(spec, ctx)
        if spec.api_key:
            command = [command[0], "-P", "-c", _KEY_LAUNCHER, *self.server_args(spec)]
            env[KEY_ENV] = spec.api_key
        return Launch(command, env)

    def environment(self, spec: ServeSpec, ctx: LaunchContext) -> dict[str, str]:
        """Private TMPDIR (removed on stop); in CPU mode the CPU engine switch and the kernel shim."""
        from ..paths import cache_dir

        tmp = ctx.run_dir / "tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        compile_cache = cache_dir() / "sglang" / "compile"
        env = {
            "TMPDIR": str(tmp),
            "TORCHINDUCTOR_CACHE_DIR": str(compile_cache / "inductor"),
            "TRITON_CACHE_DIR": str(compile_cache / "triton"),
        }
        if Path(spec.model).expanduser().is_dir():
            env["HF_HUB_OFFLINE"] = "1"
        if spec.cpu:
            env.update(cpu_environment())
        return env

    # -- validation by SGLang's own parser ---------------------------------------------------
    def constraint_options(self, constraint: Constraint) -> dict[str, Any]:
        """SGLang's chat API: a JSON schema through ``response_format``; ``regex`` and ``ebnf`` (GBNF, read by
        xgrammar) as request fields; a choice as the regex of its alternatives."""
        if constraint.kind == "json_schema":
            return {"response_format": response_format(constraint)}
        if constraint.kind == "grammar":
            return {"extra_body": {"ebnf": constraint.value}}
        regex = choice_as_regex(constraint.value) if constraint.kind == "choice" else constraint.value
        return {"extra_body": {"regex": regex}}

    def validate(self, spec: ServeSpec) -> str:
        """Parse and resolve the command line with SGLang's ``prepare_server_args`` + ``resolve_once()``.

        Takes a spec before or after :meth:`resolve`. Runs in SGLang's interpreter (a subprocess, ~5-15 s)
        with ``--device cpu``, so it needs no GPU; the GPU command line is checked, LoRA included, whatever
        ``spec.cpu`` says. Returns a short report; raises InvalidSpec with SGLang's own message.
        """
        args = self.server_args(resolve_model(spec, prepare=False).replace(cpu=False)) + ["--device", "cpu"]
        return check_server_args(args, self.python())

    def _own_endpoint(self, http: httpx.Client) -> bool:
        return answers_json(http, "/server_info", "version") or answers_json(http, "/get_server_info", "version")

    # -- diagnosis ---------------------------------------------------------------------------
    def diagnose(self, log_tail: str) -> str | None:
        """Most specific first: a start fails once, but the log tail also holds harmless warnings."""
        if _ARGPARSE_ERROR.search(log_tail):
            return (
                "SGLang rejected its command line: `servekit check sglang MODEL ...` shows SGLang's own parser message."
            )
        if "[servekit sglang-cpu shim]" in log_tail and "was called" in log_tail:
            return (
                "SGLang called a GPU kernel that servekit's CPU mode does not have (see the shim line in the log): "
                "this feature needs SGLang on a GPU."
            )
        if "pin_memory" in log_tail or "no NVIDIA driver" in log_tail:
            return "SGLang needs a GPU for this: on a machine without one, serve with cpu=True (servekit's CPU mode)."
        if "Repo id must be" in log_tail or "does not appear to have a file named config.json" in log_tail:
            return (
                "SGLang could not find the model: give a Hugging Face id or a folder with config.json and safetensors."
            )
        lowered = log_tail.lower()
        if "out of memory" in lowered or "not enough memory" in lowered:
            return "SGLang ran out of memory: lower ctx, parallel or memory_fraction (on the CPU, --max-total-tokens)."
        if "ModuleNotFoundError" in log_tail:
            return (
                "SGLang's environment is missing a package (see the import error above): "
                "`servekit install sglang-cpu --force` rebuilds servekit's environment."
            )
        return super().diagnose(log_tail)

    # -- LoRA at run time ----------------------------------------------------------------------
    def _load_request(self, name: str, path: str) -> Request:
        return Request("POST", "/load_lora_adapter", json={"lora_name": name, "lora_path": str(path)})

    def _unload_request(self, name: str) -> Request:
        return Request("POST", "/unload_lora_adapter", json={"lora_name": name})

    # -- load generation (servekit.bench): see _usage_stream.UsageStreamBench ------------------
    tokenize_path = "/v1/tokenize"  # SGLang serves it under /v1


# -- helpers (module level so tests and the CLI can use them) -----------------------------------
def cpu_install_steps(progress: Progress | None = None) -> list[list[str]]:
    """pip argument lists that make the sglang-cpu environment (no CUDA packages, no torchvision)."""
    return [
        ["install", *cpu_torch_requirements(TORCH_VERSION, progress), f"triton=={TRITON_VERSION}"],
        ["install", "--no-deps", f"sglang=={SGLANG_VERSION}"],
        # torch pinned again so nothing below can swap it for a CUDA build
        ["install", f"torch=={TORCH_VERSION}+cpu", *CPU_DEPS],
    ]


def cpu_environment() -> dict[str, str]:
    """Environment of an SGLang server in servekit's CPU mode."""
    pythonpath = os.pathsep.join(p for p in (str(SHIM_DIR), os.environ.get("PYTHONPATH", "")) if p)
    return {
        "SGLANG_USE_CPU_ENGINE": "1",
        "PYTHONPATH": pythonpath,
        # crash diagnostics are py-spy and CUDA core dumps: neither exists here, and they add a 5 s sleep
        # to every stop (SIGTERM to the process group looks like a crashed scheduler to SGLang)
        "SGLANG_PYSPY_DUMP_BEFORE_CRASH": "0",
        "SGLANG_CUDA_COREDUMP_BEFORE_CRASH": "0",
    }


def check_server_args(args: Sequence[str], python: Path, timeout: float = 300.0) -> str:
    """Run SGLang's parser and resolver on ``args`` in ``python``; a report, or InvalidSpec with SGLang's words."""
    [(ok, message)] = check_many([args], python, timeout)
    if not ok:
        raise InvalidSpec(f"SGLang rejects this command line: {message}")
    return message


def check_many(arg_lists: Sequence[Sequence[str]], python: Path, timeout: float = 600.0) -> list[tuple[bool, str]]:
    """Check several SGLang argument lists in one interpreter (SGLang's import costs ~5 s).

    Each gives ``(True, report)`` or ``(False, SGLang's error)``. Every ``--flag`` must be an exact
    SGLang option (no argparse abbreviations), then ``prepare_server_args`` parses and
    ``ServerArgs.resolve_once()`` resolves it (``--device cpu`` resolves without a GPU).
    """
    env = {**os.environ, **cpu_environment(), "SERVEKIT_SHIM_QUIET": "1", "PYTHONWARNINGS": "ignore"}
    try:
        proc = subprocess.run(
            # -P: nothing from the current folder may shadow sglang
            [str(python), "-P", "-c", _CHECK_SCRIPT.read_text()],
            check=False, input=json.dumps([list(a) for a in arg_lists]),
            capture_output=True, text=True, timeout=timeout, env=env, cwd=tempfile.gettempdir(),
        )
    except subprocess.TimeoutExpired as exc:
        raise InvalidSpec(f"SGLang's argument check did not finish within {timeout:.0f} s.") from exc
    except OSError as exc:
        raise EngineNotInstalled(f"Could not run {python}: {exc}. {SglangEngine().install_hint()}") from exc
    results = {r["index"]: r for r in _check_results(proc.stdout)}
    if len(results) < len(arg_lists):
        detail = last_lines(proc.stderr + proc.stdout, 15)
        raise InvalidSpec(f"SGLang's argument check failed (exit code {proc.returncode}):\n{detail}")
    return [
        (True, settings_report("SGLang", "accepts and resolves", r["args"])) if r["ok"] else (False, str(r["error"]))
        for r in (results[i] for i in range(len(arg_lists)))
    ]


def _check_results(stdout: str) -> list[dict[str, Any]]:
    prefix = "SERVEKIT_RESULT "
    return [json.loads(line.removeprefix(prefix)) for line in stdout.splitlines() if line.startswith(prefix)]


_NO_BF16_HALF = (
    "this GPU has no bfloat16 (compute capability < 8.0, e.g. a T4): serving in float16 (dtype='float16'); "
    "SGLang would keep a bfloat16 model's dtype and fail in its kernels. Pass dtype= to choose yourself."
)


def resolve_model(spec: ServeSpec, prepare: bool = True) -> ServeSpec:
    """A demo name becomes the demo model's Hugging Face export; a local path must be an HF folder."""
    demo = named_hf_model(spec.model, prepare)
    if demo is not None:
        return spec.replace(model=str(demo.path), served_name=spec.served_name or demo.served_name)
    return spec.replace(model=check_hf_model(spec.model, "SGLang"))
