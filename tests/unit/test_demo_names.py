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


def test_quantized_names_are_for_gguf_only():
    with pytest.raises(ModelNotFound, match="vLLM and SGLang serve `demo`"):
        demo.resolve_model("demo:Q4_K_M", "hf")
    with pytest.raises(ModelNotFound, match="demo-tiny"):
        demo.resolve_model("demo-tiny", "hf")


def test_tiny_resolves_without_a_build():
    found = demo.resolve_model("demo-tiny", "gguf")
    assert found is not None and found.path.is_file() and found.served_name == "demo-tiny" and found.loras == ()


def test_quant_types_cover_the_lesson():
    assert demo.QUANT_TYPES == ("Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q4_0", "Q3_K_M", "Q2_K")
