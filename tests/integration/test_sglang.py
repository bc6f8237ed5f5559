"""SGLang for real: its own parser checks every command line servekit builds, and a real server runs on the CPU.

Needs SGLang (`servekit install sglang-cpu`, ~2-4 min; the first test installs it when missing).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

import servekit
from servekit.engines import get_engine
from servekit.engines import sglang as sg
from servekit.engines.base import LaunchContext
from servekit.errors import InvalidSpec
from servekit.spec import ServeSpec

pytestmark = pytest.mark.integration
NO_EOS = {"ignore_eos": True}  # random weights often emit EOS at once
_SHARED: dict[str, str] = {}  # name of the module's one long-lived server
_PORT_RACE: dict = {}  # the port the module's server found taken, and how long its start took


@pytest.fixture(autouse=True)
def _no_server_outlives_a_test():
    """As in conftest, except for this module's shared server (one cold start for many tests)."""
    yield
    strays = [s for s in servekit.running() if s.name != _SHARED.get("name")]
    for stray in strays:
        stray.stop()
    assert not strays, f"test left servers running: {[s.name for s in strays]}"


@pytest.fixture(scope="module")
def engine():
    """SGLang's CPU environment, installed once (``make test`` runs ``servekit install sglang-cpu`` first)."""
    engine = get_engine("sglang")
    if not engine.available():
        engine.install(progress=print)
    assert engine.available(), engine.available().install_hint
    return engine


@pytest.fixture(scope="module")
def model(engine) -> str:
    """``demo`` (the demo model's HF export, built into the user cache on first use).

    ``SERVEKIT_TEST_SGLANG_MODEL=PATH`` runs these tests on another HF folder instead.
    """
    override = os.environ.get("SERVEKIT_TEST_SGLANG_MODEL")
    if override:
        return override
    from servekit.demo import resolve_model

    assert resolve_model("demo", "hf") is not None
    return "demo"


# -- (a) every command line servekit builds, checked by SGLang's own parser and resolver ------------------
VARIANTS: dict[str, tuple[dict, tuple[str, ...]]] = {
    "base": ({}, ("enable_metrics=True", "api_key=set", "port=30123")),
    "no metrics, no key": ({"metrics": False, "api_key": ""}, ()),
    "key that starts with a dash": ({"api_key": "-Zx8_secret"}, ("api_key=set",)),
    "served name, dtype, concurrency": ({"served_name": "tiny", "dtype": "bfloat16", "parallel": 4},
                                        ("served_model_name=tiny", "dtype=bfloat16", "max_running_requests=4")),
    "LoRA at start": ({"lora": {"style": "/loras/style", "math": "/loras/math"}, "max_lora_rank": 16},
                      ("enable_lora=True", "style=/loras/style", "math=/loras/math", "max_lora_rank=16")),
    "LoRA at run time only": ({"max_lora_rank": 8}, ("enable_lora=True", "max_lora_rank=8", "lora_target_modules")),
    "tool calling": ({"tool_parser": "llama3"}, ("tool_call_parser=llama3",)),
    "quantization": ({"quantization": "fp8"}, ("quantization=fp8",)),
    "tensor parallel": ({"tensor_parallel": 2}, ("tp_size=2",)),
    "context length": ({"ctx": 1024}, ("context_length=1024",)),
    "memory fraction": ({"memory_fraction": 0.5}, ("mem_fraction_static=0.5",)),
    "extra flags": ({"extra_args": ["--chunked-prefill-size", "512"]}, ()),
}
BROKEN = {
    "unknown flag": ["--no-such-flag"],
    "renamed flag (argparse abbreviation)": ["--max-lora", "4"],
    "bad choice": ["--tool-call-parser", "no-such-parser"],
}


@pytest.fixture(scope="module")
def parsed(engine, model, tmp_path_factory) -> dict[str, tuple[bool, str]]:
    """All command lines checked in one SGLang interpreter: GPU ones with --device cpu, and the CPU one as run."""
    base = sg.resolve_model(ServeSpec.build("sglang", model))

    def spec(**options) -> ServeSpec:
        options = {"port": 30123, "api_key": "k" * 16, "cpu": False, "served_name": base.served_name, **options}
        return ServeSpec.build("sglang", base.model, **options)

    def args(one: ServeSpec) -> list[str]:
        """What SGLang parses: servekit's arguments, and the key as its launcher adds it (never on a command line)."""
        return engine.server_args(one) + ([f"--api-key={one.api_key}"] if one.api_key else [])

    lines = {name: args(spec(**opts)) + ["--device", "cpu"] for name, (opts, _) in VARIANTS.items()}
    cpu_mode = engine.resolve(spec(cpu=True))
    command = engine.launch(cpu_mode, LaunchContext(run_dir=tmp_path_factory.mktemp("run"), log_path=Path(os.devnull))).command
    assert cpu_mode.api_key not in " ".join(command)
    lines["CPU mode, as servekit runs it"] = args(cpu_mode)
    lines.update({name: args(spec()) + ["--device", "cpu", *extra] for name, extra in BROKEN.items()})
    results = sg.check_many(list(lines.values()), engine.python())
    return dict(zip(lines, results, strict=True))


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_sglang_parser_accepts_command_line(parsed, variant):
    ok, report = parsed[variant]
    assert ok, f"SGLang rejects servekit's {variant} command line: {report}"
    for expected in VARIANTS[variant][1]:
        assert expected in report, report
    assert "device=cpu" in report


def test_sglang_parser_accepts_cpu_mode_command_line(parsed):
    ok, report = parsed["CPU mode, as servekit runs it"]
    assert ok, report
    assert "device=cpu" in report and "max_total_tokens=8192" in report


@pytest.mark.parametrize("variant", list(BROKEN))
def test_sglang_parser_rejects_unknown_and_renamed_flags(parsed, variant):
    ok, message = parsed[variant]
    assert not ok
    assert BROKEN[variant][0] in message or "no-such-parser" in message, message


def test_validate_reports_sglang_own_message(engine, model):
    with pytest.raises(InvalidSpec, match="invalid choice: 'no-such-parser'"):
        engine.validate(ServeSpec.build("sglang", model, tool_parser="no-such-parser"))


# -- (b) a real SGLang server on the CPU ------------------------------------------------------------------
@pytest.fixture(scope="module")
def server(engine, model, ipython):
    """The module's server, started as a notebook starts it: ``%serve sglang MODEL`` with no device named (there is
    no GPU here: servekit picks SGLang's CPU mode itself), see ``test_percent_serve_picked_cpu_mode_and_chat_talks_to_it``.
    Its start also proves the port move (one SGLang start less than a test of its own): another program holds the
    first port servekit picks while SGLang loads, see ``test_a_port_taken_while_sglang_starts_moves_it_to_another``."""
    from IPython.utils.capture import capture_output

    began = time.monotonic()
    with _first_port_taken() as race, capture_output() as said:
        started = ipython.run_line_magic("serve", f"sglang {model} --name sglang-cpu-test --timeout 600")
    _PORT_RACE.update(race, took=time.monotonic() - began, said=said.stdout)
    _SHARED["name"] = started.name
    try:
        yield started
    finally:
        started.stop()
        _SHARED.clear()


@contextlib.contextmanager
def _first_port_taken() -> Iterator[dict]:
    """servekit's next port choice is a port a silent listener holds; yields that port and what servekit logs."""
    import servekit.server as srv

    race: dict = {"moves": []}
    squatter = socket.socket()
    squatter.bind(("127.0.0.1", 0))
    squatter.listen()  # never answers: the readiness probe cannot take it for SGLang
    race["taken"] = squatter.getsockname()[1]
    calls = iter([race["taken"]])
    real_free_port = srv.free_port
    said = logging.Handler(logging.INFO)
    said.emit = lambda record: race["moves"].append(record.getMessage())  # type: ignore[method-assign]
    level = srv.log.level
    srv.log.addHandler(said)
    srv.log.setLevel(logging.INFO)
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(srv, "free_port", lambda host, avoid=(): next(calls, None) or real_free_port(host, avoid))
            yield race
    finally:
        squatter.close()
        srv.log.removeHandler(said)
        srv.log.setLevel(level)


def test_chat(server):
    reply = server.client().chat.completions.create(
        model=server.model, messages=[{"role": "user", "content": "hello"}], max_tokens=8, extra_body=NO_EOS
    )
    assert reply.usage.completion_tokens == 8
    assert reply.choices[0].message.content
    assert reply.model == server.model


def test_percent_serve_picked_cpu_mode_and_chat_talks_to_it(server, ipython):
    from IPython.utils.capture import capture_output

    assert "sglang-cpu-test is ready at http://127.0.0.1:" in _PORT_RACE["said"], _PORT_RACE["said"]
    command = server.record.command
    assert command[command.index("--device") + 1] == "cpu"  # no GPU here: CPU mode was chosen by itself
    before = server.metrics().get("generation_tokens_total", 0.0)
    with capture_output():
        ipython.run_cell_magic("chat", "sglang-cpu-test --max-tokens 8", "Say hello")
    assert server.metrics()["generation_tokens_total"] >= before + 1


def test_a_port_taken_while_sglang_starts_moves_it_to_another(server):
    """Another program takes the port servekit picked while SGLang loads (the module's server starts so): SGLang
    logs "address already in use" and then hangs in its shutdown instead of exiting. servekit reads that in the log
    within a second, stops it and starts SGLang on another port (it used to wait for the whole start-up timeout)."""
    print(f"SGLang moved off a taken port and was ready {_PORT_RACE['took']:.0f} s after the first try began")
    assert server.port != _PORT_RACE["taken"]
    assert server.is_running() and server.ping()
    assert any(f"port {_PORT_RACE['taken']} was taken" in line for line in _PORT_RACE["moves"]), _PORT_RACE["moves"]
    assert _PORT_RACE["took"] < 300, "servekit waited for the start-up timeout instead of reading the bind error"


def test_demo_model_answers_correctly(server, model):
    if model != "demo":
        pytest.skip("the trained demo model is not in use")
    reply = server.client().chat.completions.create(
        model=server.model, messages=[{"role": "user", "content": "reverse: hot big day open"}], max_tokens=16,
        temperature=0,
    )
    assert reply.choices[0].message.content.strip() == "open day big hot"  # chat template and BOS survive SGLang


def test_streaming(server):
    chunks = list(server.client().chat.completions.create(
        model=server.model, messages=[{"role": "user", "content": "reverse: hot big day open fast"}], max_tokens=12,
        stream=True, extra_body=NO_EOS,
    ))
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) >= 2  # really streamed
    assert chunks[-1].choices[0].finish_reason == "length" or chunks[-2].choices[0].finish_reason == "length"


def test_constrained_output(server):
    reply = server.client().chat.completions.create(
        model=server.model, messages=[{"role": "user", "content": "yes or no?"}], max_tokens=8,
        extra_body={"regex": "(yes|no)"},
    )
    assert reply.choices[0].message.content in ("yes", "no")


def test_responses_api(server):
    import httpx

    reply = httpx.post(server.base_url + "/responses", headers=server.headers(), timeout=120,
                       json={"model": server.model, "input": "hello", "max_output_tokens": 4})
    assert reply.status_code == 200, reply.text  # needs openai-harmony in the sglang-cpu environment
    assert reply.json()["object"] == "response"


def test_metrics_are_mapped(server):
    before = server.metrics()
    server.client().chat.completions.create(
        model=server.model, messages=[{"role": "user", "content": "hi"}], max_tokens=5, extra_body=NO_EOS
    )
    after = server.metrics()
    assert after["generation_tokens_total"] == before.get("generation_tokens_total", 0.0) + 5
    assert after["prompt_tokens_total"] > before.get("prompt_tokens_total", 0.0)
    assert 0.0 <= after["kv_cache_usage"] <= 1.0
    assert after["requests_running"] >= 0 and after["requests_waiting"] >= 0
    before_ttft = before.histograms["ttft_seconds"].count if "ttft_seconds" in before.histograms else 0
    assert after.histograms["ttft_seconds"].count == before_ttft + 1
    assert after.histograms["e2e_seconds"].count >= 1 and after.histograms["itl_seconds"].count >= 1


def test_api_key_is_enforced(server):
    import httpx

    assert server.api_key
    assert httpx.get(server.base_url + "/models").status_code == 401
    assert httpx.get(server.base_url + "/models", headers={"Authorization": "Bearer wrong"}).status_code == 401
    models = httpx.get(server.base_url + "/models", headers=server.headers()).json()
    assert [m["id"] for m in models["data"]] == [server.model]
    from servekit import procs

    members = procs.members_of(server.record)
    assert len(members) >= 3, "launcher, scheduler and detokenizer: by marker, or by run dir and session once retitled"
    assert all(server.api_key not in " ".join(p.cmdline()) for p in members)
    log = server.logs(5000)
    # SGLang prints its arguments, key included (`server_args={...}`, `ServerArgs(...)` before 0.5.2x); servekit masks it
    assert ("server_args=" in log or "ServerArgs(" in log) and server.api_key not in log


def test_attach_recognises_sglang(server, check_attach):
    check_attach(server, "sglang")


def test_cpu_mode_is_labelled_and_calls_no_kernel(server):
    log = server.logs(5000)
    assert "sgl_kernel is servekit's import shim" in log
    assert "was called" not in log  # the torch-native path never calls a kernel


def test_stop_leaves_no_process(server, ipython):
    """``%stop`` (the server was started with ``%serve``) takes SGLang's scheduler and detokenizer with it."""
    from IPython.utils.capture import capture_output

    leader = psutil.Process(server.pid)
    children = leader.children(recursive=True)
    assert children, "SGLang runs a scheduler and a detokenizer process"
    with capture_output() as stopped:
        ipython.run_line_magic("stop", server.name)
    assert f"Stopped: {server.name}" in stopped.stdout
    assert not any(_alive(p) for p in [leader, *children])
    assert servekit.server.port_is_free("127.0.0.1", server.port)
    assert servekit.running() == []


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
