"""`servekit install TARGET`: engine names, their aliases and NAME-VARIANT targets."""

from __future__ import annotations

import pytest

from servekit.cli import install_target
from servekit.errors import UnknownEngine


@pytest.mark.parametrize(("target", "engine", "variant"), [
    ("llamacpp", "llamacpp", ""), ("llama.cpp", "llamacpp", ""), ("llama-cpp", "llamacpp", ""),
    ("llama-server", "llamacpp", ""), ("vllm-cpu", "vllm", "cpu"), ("sglang-cpu", "sglang", "cpu"),
    ("vllm", "vllm", ""),
])
def test_targets_name_an_engine_and_a_variant(target, engine, variant):
    found, found_variant = install_target(target)
    assert (found.name, found_variant) == (engine, variant)


def test_unknown_target_names_the_engines():
    with pytest.raises(UnknownEngine, match="Choose one of: llamacpp, vllm, sglang"):
        install_target("tgi-cpu")
    with pytest.raises(UnknownEngine, match="Choose one of"):
        install_target("tgi")
