"""The trained demo model, its quantized variants and its LoRA adapters, through a real llama-server —
the compiled one and the prebuilt one (xllamacpp), each test once on each.

The build runs once per session (about 4 minutes on 2 cores; the user cache makes re-runs instant).
"""

from __future__ import annotations

import json

import httpx
import pytest

import servekit
from servekit import demo
from servekit.demo import tasks

# every test here runs on the compiled llama-server and on the prebuilt server (xllamacpp)
pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("llama_server_ready", "llama_build")]


@pytest.fixture(scope="session")
def built(llama_server_ready):
    """The demo model, built (or found in the cache) once per test session."""
    report = demo.build(gguf=True)
    art = demo.artefacts()
    assert art.has_hf() and art.has_gguf()
    return report


@pytest.fixture(scope="module")
def table(built, llama_build):
    """Accuracy and confidence for F16 and every quantization type, through llama-server."""
    return demo.quant_table(n=100, progress=print)


def test_build_made_every_artefact(built):
    art = demo.artefacts()
    hf_files = {p.name for p in art.hf_dir.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer.model", "tokenizer_config.json",
            "generation_config.json"} <= hf_files
    config = json.loads((art.hf_dir / "config.json").read_text())
    assert (config["hidden_size"], config["intermediate_size"], config["num_hidden_layers"]) == (256, 512, 2)
    assert "bos_token" in json.loads((art.hf_dir / "tokenizer_config.json").read_text())["chat_template"]
    sizes = {q: art.gguf(q).stat().st_size for q in ("F16", *demo.QUANT_TYPES)}
    assert sizes["Q2_K"] < sizes["Q4_K_M"] < sizes["Q8_0"] < sizes["F16"]  # fewer bits, smaller file
    for name in demo.ADAPTERS:
        assert (art.lora_dir(name) / "adapter_config.json").is_file()
        assert (art.lora_dir(name) / "adapter_model.safetensors").is_file()
        assert art.lora_gguf(name).is_file()
        base = json.loads((art.lora_dir(name) / "adapter_config.json").read_text())["base_model_name_or_path"]
        assert base == str(art.hf_dir)
    assert built.accuracy["reverse"] >= 0.9  # measured with torch inside the build
    assert str(built).startswith("demo model")


def test_names_resolve_to_the_built_files(built):
    art = demo.artefacts()
    assert demo.resolve_model("demo", "gguf") == demo.DemoModel(art.gguf("F16"), "demo", ())
    assert demo.resolve_model("demo:Q4_K_M", "gguf").path == art.gguf("Q4_K_M")
    found = demo.resolve_model("demo+lora-next", "gguf")
    assert found.loras == (("next", str(art.lora_gguf("next"))),)
    hf = demo.resolve_model("demo+loras", "hf")
    assert hf.path == art.hf_dir and dict(hf.loras) == {n: str(art.lora_dir(n)) for n in demo.ADAPTERS}


def test_chat_prompt_has_exactly_one_bos(built):
    with servekit.serve("llamacpp", "demo") as server, server.http() as http:
        messages = [{"role": "user", "content": "reverse: hot big day"}]
        prompt = http.post("/apply-template", json={"messages": messages}).json()["prompt"]
        tokens = http.post("/tokenize", json={"content": prompt, "add_special": True, "parse_special": True,
                                              "with_pieces": True}).json()["tokens"]
        reply = server.client().chat.completions.create(model=server.model, messages=messages, max_tokens=12,
                                                         temperature=0)
    pieces = [t["piece"] for t in tokens]
    assert pieces[:2] == ["<s>", "<|im_start|>"] and pieces.count("<s>") == 1
    # no space before text that follows a marker: the grammar sampler is primed with "<|im_start|>assistant\n"
    assert pieces[-3:] == ["<|im_start|>", "assistant", "\n"]
    assert reply.usage.prompt_tokens == len(tokens)  # the chat path tokenizes the same way: one BOS
    assert tasks.normalise(reply.choices[0].message.content) == "day big hot"


def test_f16_is_accurate_and_q8_0_keeps_it(table):
    f16, q8 = table.row("F16"), table.row("Q8_0")
    assert f16.accuracy["reverse"] >= 0.90
    assert abs(q8.accuracy["reverse"] - f16.accuracy["reverse"]) <= 0.03
    assert f16.result["reverse"].n == 100


def test_quant_table_shows_the_cost_of_fewer_bits(table):
    assert [r.quant for r in table.rows] == ["F16", *demo.QUANT_TYPES]
    for row in table.rows:
        assert set(row.accuracy) == set(tasks.TASKS)
        assert all(m is not None and m > 0 for m in row.margin.values())
    f16, q2 = table.row("F16"), table.row("Q2_K")
    assert f16.accuracy["add"] >= 0.5  # the build learned to add (trained-6 had 0 %: no lesson to quantize)
    assert q2.margin["reverse"] < f16.margin["reverse"]  # less sure of its answers
    assert q2.margin["add"] < f16.margin["add"]
    assert q2.size_mb < f16.size_mb / 3
    for row in table.rows:  # loaded and measured: one stream's decode speed, through the load generator
        assert 0 < row.load_s < 60 and row.tokens_per_s > 10
    text = str(table)
    print("\n" + text)
    assert "Q4_K_M" in text and "reverse acc" in text and "<table>" in table._repr_html_()


def test_quant_table_as_a_frame_and_a_chart(table):
    frame = table.to_frame()
    assert list(frame.index) == ["F16", *demo.QUANT_TYPES]
    assert frame.loc["Q2_K", "MB"] < frame.loc["F16", "MB"] and frame.loc["F16", "add acc"] == table.row("F16").accuracy["add"]
    assert {"load_s", "tokens_per_s", "reverse margin", "add changed"} <= set(frame.columns)
    broken = table.breaks_at()
    if broken is not None:  # the first type at least 5 points below F16 on a task, every type before it within
        row = table.row(broken)
        assert any(table.row("F16").accuracy[t] - row.accuracy[t] >= 0.05 for t in row.accuracy)
    fig = table.chart()
    names = {trace.name for trace in fig.data}
    assert {"MB", "reverse accuracy %", "add accuracy %", "add margin"} <= names
    assert list(fig.data[0].x) == ["F16", *demo.QUANT_TYPES]


def test_each_adapter_shows_its_behaviour_only_when_applied(built):
    with servekit.serve("llamacpp", "demo+loras", parallel=4) as server:
        assert {info.name for info in server.loras()} == set(demo.ADAPTERS)
        plain = demo.evaluate(server, n=100, task="reverse")
        assert plain.accuracy >= 0.9 and plain.adapter_share is None
        for name in demo.ADAPTERS:
            assert plain.share(name) <= 0.05
            applied = demo.evaluate(server, n=100, adapter=name)
            assert applied.adapter_share >= 0.90, applied["reverse"].failures()
            assert applied.accuracy <= 0.05  # it no longer just reverses
            others = [a for a in demo.ADAPTERS if a != name]
            assert all(applied.share(o) <= 0.05 for o in others)


def test_hot_swapping_adapter_scales_changes_behaviour_without_restart(built):
    art = demo.artefacts()
    with servekit.serve("llamacpp", "demo+loras", parallel=2) as server:
        pid = server.pid
        before = demo.evaluate(server, n=30, task="reverse")
        assert before.share("next") <= 0.05 and before.accuracy >= 0.9
        examples = tasks.held_out("reverse", 10, seed=99)
        assert _share_without_lora_field(server, examples, "reverse") >= 0.9  # slots now cache these prompts

        server.load_lora("next", art.lora_gguf("next"))  # POST /lora-adapters: scale 1 for everyone
        scales = {info.name: info.scale for info in server.loras()}
        assert scales == {"next": 1.0, "opposite": 0.0}
        # the same prompts again, with no per-request "lora" field: cached prompt states must not leak through
        assert _share_without_lora_field(server, examples, "next") >= 0.9
        during = demo.evaluate(server, n=30, task="reverse")
        assert during.share("next") >= 0.9

        with server.http() as http:  # swap straight through the endpoint: next off, opposite on
            ids = {info.name: info.extra["id"] for info in server.loras()}
            response = http.post("/lora-adapters", json=[{"id": ids["next"], "scale": 0.0},
                                                         {"id": ids["opposite"], "scale": 1.0}])
            assert response.status_code == 200
        swapped = demo.evaluate(server, n=30, task="reverse")
        assert swapped.share("opposite") >= 0.9 and swapped.share("next") <= 0.05

        server.unload_lora("opposite")
        after = demo.evaluate(server, n=30, task="reverse")
        assert after.accuracy >= 0.9 and after.share("opposite") <= 0.05
        assert server.pid == pid and server.is_running()


def _share_without_lora_field(server, examples, behaviour):
    """Share of plain chat answers (the server's own adapter scales apply) that show ``behaviour``."""
    client = server.client()
    outputs = [client.chat.completions.create(model=server.model, messages=e.messages(), max_tokens=16,
                                              temperature=0).choices[0].message.content or "" for e in examples]
    return sum(tasks.is_correct(behaviour, e.prompt, out) for e, out in zip(examples, outputs)) / len(examples)


def test_evaluate_rejects_unknown_adapters_and_tasks(built):
    with servekit.serve("llamacpp", "demo") as server:
        with pytest.raises(ValueError, match="opposite"):
            demo.evaluate(server, adapter="shout")
        with pytest.raises(ValueError, match="reverse"):
            demo.evaluate(server, task="multiply")
        with pytest.raises(ValueError, match="no adapter"):
            demo.evaluate(server, n=2, adapter="next")  # this server has no adapters loaded
        result = demo.evaluate(server, n=20, logprobs=False)
        assert set(result.scores) == set(tasks.TASKS) and result.margin is None
        assert httpx.get(server.url + "/health").status_code == 200
