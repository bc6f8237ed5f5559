"""Tool calling and constrained output with the trained demo model, through a real llama-server, and through
vLLM's and SGLang's CPU builds with their own tool parsers (whose servers also take the load generator's same-run
check).

The demo model learned two tool tasks (``servekit.demo.tasks``): answer ``add 417 and 385`` with a Hermes
``<tool_call>`` and, once the tool's result is sent back, with ``the answer is 802``. llama-server parses the
calls into ``tool_calls`` from the model's chat template (servekit passes ``--jinja`` when ``tool_parser`` is
set); its JSON-schema and grammar sampling need the model's tokens to spell the prompt exactly as rendered.
"""

from __future__ import annotations

import json
import re

import pytest

import servekit
from servekit import demo
from servekit.demo import tasks

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("llama_server_ready")]

ANSWER_SCHEMA = {"type": "object", "properties": {"answer": {"type": "integer"}}, "required": ["answer"],
                 "additionalProperties": False}
_SHARED: set[str] = set()  # names of the vLLM and SGLang servers this module's tests share


@pytest.fixture(autouse=True)
def _no_server_outlives_a_test():
    """As in conftest, except for the vLLM or SGLang server shared by this module's tests of that engine."""
    yield
    strays = [s for s in servekit.running() if s.name not in _SHARED]
    for stray in strays:
        stray.stop()
    assert not strays, f"test left servers running: {[s.name for s in strays]}"


@pytest.fixture(scope="module")
def built(llama_server_ready):
    """The demo model, built (or found in the cache) once."""
    demo.build(gguf=True)
    art = demo.artefacts()
    assert art.has_gguf() and art.checks_path.is_file()
    return art


@pytest.fixture
def tool_server(built):
    """llama-server with the demo model and tool-call parsing on."""
    with servekit.serve("llamacpp", "demo", tool_parser="hermes", parallel=4) as server:
        yield server


def test_served_prompts_are_token_for_token_what_the_model_learned(built, tool_server):
    """llama-server renders each task's conversation (tools included) and tokenizes it like the training did."""
    checks = json.loads(built.checks_path.read_text())
    assert {c["task"] for c in checks} == set(tasks.ALL_TASKS)
    bos = 1
    with tool_server.http() as http:
        for check in checks:
            body = {"messages": check["messages"], **({"tools": check["tools"]} if check["tools"] else {})}
            prompt = http.post("/apply-template", json=body).json()["prompt"]
            assert check["text"].endswith(prompt)  # llama.cpp drops the rendered BOS: its tokenizer adds one
            ids = http.post("/tokenize", json={"content": prompt, "add_special": True, "parse_special": True}).json()
            assert ids["tokens"] == check["ids"], check["text"]
            assert ids["tokens"].count(bos) == 1


def test_tool_calls_come_back_as_tool_calls(tool_server):
    client = tool_server.client()
    reply = client.chat.completions.create(model=tool_server.model, tools=list(tasks.TOOLS), temperature=0,
                                           messages=[{"role": "user", "content": "add 417 and 385"}], max_tokens=48)
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls" and not choice.message.content
    (call,) = choice.message.tool_calls
    assert call.type == "function" and call.id
    assert (call.function.name, json.loads(call.function.arguments)) == ("add", {"a": 417, "b": 385})


def test_tool_calls_are_right_on_held_out_prompts(tool_server):
    result = demo.evaluate(tool_server, n=100, task="tool_call")
    print(result, result["tool_call"].failures())
    assert result.accuracy >= 0.9, result["tool_call"].failures()


def test_answers_after_the_tool_result_quote_it(tool_server):
    result = demo.evaluate(tool_server, n=100, task="tool_answer")
    print(result, result["tool_answer"].failures())
    assert result.accuracy >= 0.9, result["tool_answer"].failures()


def test_agent_loop_calls_the_tool_and_answers_with_its_result(tool_server):
    """call -> run the tool here -> send the result -> final answer, on held-out prompts."""
    examples = tasks.held_out("tool_call", 30, seed=77)
    chats = [demo.chat_with_tools(tool_server, e.prompt) for e in examples]
    first = chats[0]
    assert [m["role"] for m in first.messages] == ["user", "assistant", "tool"]
    done = [c for e, c in zip(examples, chats) if c.calls == [tasks.call_of(e.prompt)] and c.results[0] in c.answer]
    print(f"agent loop right in {len(done)}/{len(chats)}:", [(c.calls, c.answer) for c in chats if c not in done][:5])
    assert len(done) >= 0.9 * len(chats)


def test_json_schema_output_is_valid_json_of_that_schema(built):
    """response_format=json_schema: llama-server primes its grammar with the generation prompt's tokens."""
    with servekit.serve("llamacpp", "demo", parallel=4) as server:
        client = server.client()
        values = []
        for example in tasks.held_out("add", 10, seed=5):
            reply = client.chat.completions.create(
                model=server.model, messages=example.messages(), temperature=0, max_tokens=40,
                response_format={"type": "json_schema", "json_schema": {"name": "sum", "schema": ANSWER_SCHEMA}})
            data = json.loads(reply.choices[0].message.content)
            assert set(data) == {"answer"} and isinstance(data["answer"], int)
            values.append((example.answer, data["answer"]))
        reply = client.chat.completions.create(model=server.model, messages=example.messages(), temperature=0,
                                               max_tokens=40, response_format={"type": "json_object"})
        # any object is allowed: the demo model (never taught JSON keys) may ramble in a key until max_tokens
        content, finish = reply.choices[0].message.content, reply.choices[0].finish_reason
        assert content.startswith("{"), content  # unconstrained, it would answer with the bare number
        if finish == "stop":
            assert isinstance(json.loads(content), dict)
    print("json_schema answers (expected, got):", values)


def test_grammar_constrained_answers_stay_right(built):
    """A GBNF grammar that allows only the task's words: the model's own answers pass through it."""
    words = " | ".join(f'"{w}"' for w in tasks.WORDS)
    grammar = f'root ::= word (" " word)*\nword ::= {words}\n'
    with servekit.serve("llamacpp", "demo", parallel=4) as server:
        client = server.client()
        examples = tasks.held_out("reverse", 30, seed=5)
        outputs = [client.chat.completions.create(model=server.model, messages=e.messages(), temperature=0,
                                                  max_tokens=16, extra_body={"grammar": grammar}
                                                  ).choices[0].message.content for e in examples]
    assert all(re.fullmatch(r"[a-z]+( [a-z]+)*", out) and set(out.split()) <= set(tasks.WORDS) for out in outputs)
    right = sum(tasks.is_correct("reverse", e.prompt, out) for e, out in zip(examples, outputs))
    assert right >= 0.9 * len(examples)



# -- one way to constrain output, every engine: obeyed in every sample, or refused -------------------------
CHOICES = ["yes", "no", "maybe"]
# Bounded: after `{"answer": ` the demo model (never taught JSON) writes digits until max_tokens wherever the
# grammar lets it; llama.cpp's integers stop at 16 digits, xgrammar's (vLLM, SGLang) only at a maximum.
BOUNDED_SCHEMA = {"type": "object", "properties": {"answer": {"type": "integer", "minimum": 0, "maximum": 9999}},
                  "required": ["answer"], "additionalProperties": False}
WORDS_GRAMMAR = "root ::= word (\" \" word)*\nword ::= " + " | ".join(f'"{w}"' for w in tasks.WORDS) + "\n"


def constrained(server, prompt: str, samples: int, temperature: float, max_tokens: int, **kind) -> list[str]:
    client, options = server.client(), server.constraint_options(**kind)
    return [client.chat.completions.create(model=server.model, messages=[{"role": "user", "content": prompt}],
                                           temperature=temperature, max_tokens=max_tokens, **options
                                           ).choices[0].message.content for _ in range(samples)]


def assert_constraints_obeyed(server, kinds: tuple[str, ...]) -> None:
    """Each kind in every sample: random sampling (temperature 1) where the constraint bounds the length,
    the model's own greedy answers where it does not (a rambling JSON string would be cut by max_tokens)."""
    if "choice" in kinds:
        outs = constrained(server, "reverse: hot big day", 5, 1.0, 8, choice=CHOICES)
        assert all(out in CHOICES for out in outs), outs
    if "regex" in kinds:
        outs = constrained(server, "add: 417+385", 5, 1.0, 8, regex="[0-9]{3}")
        assert all(re.fullmatch("[0-9]{3}", out) for out in outs), outs
    if "grammar" in kinds:
        outs = constrained(server, "reverse: cold dark night", 3, 0.0, 16, grammar=WORDS_GRAMMAR)
        assert all(re.fullmatch(r"[a-z]+( [a-z]+)*", o) and set(o.split()) <= set(tasks.WORDS) for o in outs), outs
    if "json_schema" in kinds:
        outs = constrained(server, "add: 417+385", 3, 0.0, 40, json_schema=BOUNDED_SCHEMA)
        assert all(set(json.loads(o)) == {"answer"} and 0 <= json.loads(o)["answer"] <= 9999 for o in outs), outs


def test_llama_cpp_obeys_each_constraint_it_has_and_refuses_regex(tool_server):
    from servekit.constraints import UnsupportedConstraint

    assert_constraints_obeyed(tool_server, ("choice", "grammar", "json_schema"))
    with pytest.raises(UnsupportedConstraint, match="no regex constraint"):
        tool_server.constraint_options(regex="[0-9]{3}")


# -- the same model on vLLM and SGLang (CPU builds): their own tool parsers read its calls -------------
# One server per engine (a vLLM or SGLang start costs 20-30 s on 2 cores) carries both tests of that engine.
@pytest.fixture(scope="module", params=[("vllm", "hermes"), ("sglang", "qwen25")], ids=["vllm-hermes", "sglang-qwen25"])
def other_engine(request, built):
    """The demo model (HF export, chat template and all) on vLLM's or SGLang's CPU build with that engine's own
    tool parser: ``hermes`` for vLLM, ``qwen25`` for SGLang."""
    from servekit.engines import get_engine

    engine, parser = request.param
    eng = get_engine(engine)
    if not eng.available():
        eng.install(progress=print)
    eager = ["--enforce-eager"] if engine == "vllm" else []  # vLLM: no torch.compile at start
    server = servekit.serve(engine, "demo", name=f"tools-{engine}", tool_parser=parser, ctx=512, parallel=4,
                            timeout=900, extra_args=eager)
    _SHARED.add(server.name)
    try:
        yield server
    finally:
        _SHARED.discard(server.name)
        server.stop()


def test_other_engines_parse_the_same_calls(other_engine):
    """vLLM's ``hermes`` and SGLang's ``qwen25`` parsers read the demo model's calls; and every kind of
    constraint, asked through ``constraint_options``, is obeyed."""
    server = other_engine
    calls = demo.evaluate(server, n=50, task="tool_call", logprobs=False)
    answers = demo.evaluate(server, n=50, task="tool_answer", logprobs=False)
    chat = demo.chat_with_tools(server, "add 417 and 385")
    assert_constraints_obeyed(server, ("choice", "regex", "grammar", "json_schema"))  # all four: both engines
    print(server.engine.name, calls, answers, chat.calls, chat.answer)
    assert calls.accuracy >= 0.9, calls["tool_call"].failures()
    assert answers.accuracy >= 0.9, answers["tool_answer"].failures()
    assert chat.calls == [("add", {"a": 417, "b": 385})] and "802" in chat.answer


def test_the_same_load_generator_run_against_vllm_and_sglang_on_the_cpu(other_engine):
    """servekit.bench against vLLM and SGLang (test_bench_live runs it against llama-server): exact prompt and
    output lengths, per-chunk token counts, and the run's output tokens equal to the server's own counter."""
    from servekit import bench

    server = other_engine
    counter_before = server.metrics()["generation_tokens_total"]
    result = bench.run(server, concurrency=2, requests=8, input_tokens=32, output_tokens=16, progress=False)
    records = result.records
    assert result.summary["failed"] == 0, result.summary["errors"]
    assert (records["output_tokens"] == 16).all()  # ignore_eos + min_tokens
    assert (records["prompt_tokens"] == 32).all()  # the server's tokenizer endpoint checked the length
    assert (records["token_counts"] == "per-chunk").all()  # continuous_usage_stats
    assert (records["itl_ms"].map(len) + records["first_chunk_tokens"] == 16).all()
    assert server.metrics()["generation_tokens_total"] - counter_before == records["output_tokens"].sum()
