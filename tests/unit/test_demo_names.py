"""Demo model names: parsing, and what each resolves to once the artefacts exist (no build here)."""

from __future__ import annotations

import pytest

from servekit import demo
from servekit.errors import ModelNotFound


def test_names_are_recognised():
    for name in ("demo", "demo:Q4_K_M", "demo+lora-next", "demo-tiny", "demo:Q2_K+lora-opposite+lora-next"):
        assert demo.is_demo_name(name)
    for name in ("demonstration.gguf", "org/demo", "./demo", "Demo"):
        assert not demo.is_demo_name(name)
        assert demo.resolve_model(name, "gguf") is None


def test_parse_name():
    assert demo.parse_name("demo") == demo.DemoName(tiny=False, quant="F16", adapters=())
    assert demo.parse_name("demo:Q4_K_M").quant == "Q4_K_M"
    assert demo.parse_name("demo:F16").quant == "F16"
    assert demo.parse_name("demo+lora-next").adapters == ("next",)
    assert demo.parse_name("demo:Q8_0+lora-next+lora-opposite").adapters == ("next", "opposite")
    assert demo.parse_name("demo+loras").adapters == demo.ADAPTERS
    assert demo.parse_name("demo-tiny").tiny


@pytest.mark.parametrize("bad", ["demo:Q4_K_X", "demo+lora-shout", "demo+next", "demo:", "demo:q4_k_m"])
def test_bad_names_say_what_exists(bad):
    with pytest.raises(ModelNotFound, match="demo"):
        demo.parse_name(bad)


def test_each_quantized_name_is_for_the_format_that_has_it():
    with pytest.raises(ModelNotFound, match="GGUF quantization for llama.cpp; vLLM serves `demo`"):
        demo.resolve_model("demo:Q4_K_M", "hf")
    with pytest.raises(ModelNotFound, match="serve it with vllm. llama.cpp's 8-bit form is demo:Q8_0"):
        demo.resolve_model("demo:W8A8", "gguf")
    with pytest.raises(ModelNotFound, match="demo-tiny"):
        demo.resolve_model("demo-tiny", "hf")
    assert demo.parse_name("demo:W8A8").quant == "W8A8"
    with pytest.raises(ModelNotFound, match=r"Q2_K \(llama.cpp\) or W8A8 \(vLLM\)"):
        demo.parse_name("demo:W4A16")


def test_w8a8_keeps_every_weight_within_half_a_step(tmp_path):
    """The W8A8 folder: int8 rows and one scale per row for each decoder linear layer, the rest untouched,
    and the compressed-tensors config vLLM reads."""
    import json

    import numpy as np

    from servekit.demo.w8a8 import make_w8a8, read_safetensors, write_safetensors

    rng = np.random.default_rng(0)
    source = tmp_path / "hf"
    source.mkdir()
    weights = {"model.layers.0.self_attn.q_proj.weight": rng.normal(size=(8, 16)).astype(np.float32),
               "model.layers.0.mlp.down_proj.weight": rng.normal(size=(16, 8)).astype(np.float32),
               "model.embed_tokens.weight": rng.normal(size=(10, 16)).astype(np.float32),
               "lm_head.weight": rng.normal(size=(10, 16)).astype(np.float32)}
    weights["model.layers.0.mlp.down_proj.weight"][3] = 0.0  # an all-zero row keeps a usable scale
    write_safetensors(source / "model.safetensors", weights)
    (source / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (source / "tokenizer.json").write_text("{}")
    out = make_w8a8(source, tmp_path / "hf-W8A8")
    tensors, _ = read_safetensors(out / "model.safetensors")
    for name in ("model.layers.0.self_attn.q_proj", "model.layers.0.mlp.down_proj"):
        q, scale = tensors[f"{name}.weight"], tensors[f"{name}.weight_scale"]
        assert q.dtype == np.int8 and scale.shape == (q.shape[0], 1) and np.abs(q).max() <= 127
        assert np.abs(q * scale - weights[f"{name}.weight"]).max() <= scale.max() / 2 + 1e-7
    for name in ("model.embed_tokens.weight", "lm_head.weight"):
        assert np.array_equal(tensors[name], weights[name])
    config = json.loads((out / "config.json").read_text())["quantization_config"]
    assert config["quant_method"] == "compressed-tensors" and config["format"] == "int-quantized"
    group = config["config_groups"]["group_0"]
    assert group["weights"]["strategy"] == "channel" and group["input_activations"]["dynamic"] is True
    assert (out / "tokenizer.json").is_file() and not (tmp_path / "hf-W8A8.partial").exists()


def test_tiny_resolves_without_a_build():
    found = demo.resolve_model("demo-tiny", "gguf")
    assert found is not None and found.path.is_file() and found.served_name == "demo-tiny" and found.loras == ()


def test_quant_types_cover_the_lesson():
    assert demo.QUANT_TYPES == ("Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q4_0", "Q3_K_M", "Q2_K")
