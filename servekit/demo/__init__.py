"""Offline teaching models, built on this machine from a fixed seed — no model hub needed.

Model names (for ``serve()``, ``%serve`` and the CLI):

* ``demo`` — a tiny Llama trained here on two tasks and a tool call (F16 GGUF for llama.cpp, a HF folder for
  vLLM/SGLang);
* ``demo:Q4_K_M`` — the same model quantized by llama.cpp's quantizer (no ``llama-quantize`` binary needed) (Q8_0, Q6_K, Q5_K_M, Q4_K_M, Q4_0, Q3_K_M, Q2_K);
* ``demo:W8A8`` — for vLLM: int8 weights and activations in the compressed-tensors format (made in a second);
* ``demo+lora-opposite``, ``demo+lora-next`` (or ``demo+loras`` for both) — with LoRA adapters loaded;
  a request applies one by naming it (:func:`evaluate` does that for you);
* ``demo-tiny`` — random weights, written in under a second: it proves a server starts, nothing more.

The trained model comes with servekit (what its own deterministic build made, ~11 MB): the first use copies
it into the user cache and makes the quantized files (a second). ``servekit demo build --force`` trains it
here (minutes on 2 cores) and compares the result with the shipped build.
Engines call :func:`resolve_model` to turn a name into files in the format they load.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import ModelNotFound
from ..paths import cache_dir
from ..sources import ModelFiles
from .tasks import ADAPTERS, TASKS, TOOL_TASKS

QUANT_TYPES: tuple[str, ...] = ("Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q4_0", "Q3_K_M", "Q2_K")
# Quantized Hugging Face folders, for vLLM: int8 weights and activations (compressed-tensors), which vLLM's CPU
# build runs with its int8 kernels.
HF_QUANT_TYPES: tuple[str, ...] = ("W8A8",)

from .builder import Artefacts, BuildReport, artefacts, build
from .scoring import EvalResult, QuantTable, ToolChat, chat_with_tools, evaluate, quant_table

__all__ = [
    "ADAPTERS", "HF_QUANT_TYPES", "QUANT_TYPES", "TASKS", "TOOL_TASKS", "Artefacts", "BuildReport", "DemoModel", "EvalResult",
    "QuantTable", "ToolChat", "artefacts", "build", "chat_with_tools", "evaluate", "is_demo_name", "parse_name",
    "quant_table", "resolve_model", "tiny_gguf",
]


DemoModel = ModelFiles  # a demo model in one format: path, served name, LoRA adapters


@dataclass(frozen=True)
class DemoName:
    """A parsed demo model name: ``demo[:QUANT][+lora-NAME…]`` or ``demo-tiny``."""

    tiny: bool
    quant: str  # "F16" unless a quantization type was named
    adapters: tuple[str, ...]


def is_demo_name(model: str) -> bool:
    """True for ``demo``, ``demo:Q4_K_M``, ``demo+lora-NAME`` and the like."""
    return model == "demo" or model.startswith(("demo:", "demo+", "demo-tiny"))


def parse_name(model: str) -> DemoName:
    """Split a demo name into its parts; raises :class:`ModelNotFound` for a name that names nothing."""
    if model == "demo-tiny":
        return DemoName(tiny=True, quant="F16", adapters=())
    base, *extras = model.split("+")
    stem, colon, quant = base.partition(":")
    quant = quant if colon else "F16"
    if stem != "demo" or (quant != "F16" and quant not in QUANT_TYPES + HF_QUANT_TYPES):
        raise ModelNotFound(f"Unknown demo model {model!r}: use demo, demo:QUANT with QUANT one of "
                            f"{', '.join(QUANT_TYPES)} (llama.cpp) or {', '.join(HF_QUANT_TYPES)} (vLLM), "
                            f"demo+lora-NAME (NAME: {', '.join(ADAPTERS)}), or demo-tiny.")
    adapters: list[str] = []
    for extra in extras:
        names = list(ADAPTERS) if extra == "loras" else [extra.removeprefix("lora-")]
        if not extra.startswith("lora") or any(n not in ADAPTERS for n in names):
            raise ModelNotFound(f"Unknown adapter {extra!r} in {model!r}: the demo adapters are "
                                + ", ".join(f"lora-{a}" for a in ADAPTERS) + " (or loras for all).")
        adapters += [n for n in names if n not in adapters]
    return DemoName(tiny=False, quant=quant, adapters=tuple(adapters))


def tiny_gguf() -> Path:
    """The random-weight tiny GGUF, written into the cache on first use."""
    from .tiny import VERSION, write_tiny_gguf

    path = cache_dir() / "demo" / VERSION / "demo-tiny.gguf"
    return path if path.is_file() else write_tiny_gguf(path)


def resolve_model(model: str, fmt: str, *, prepare: bool = True) -> DemoModel | None:
    """The files behind a demo model name in format ``fmt`` ("gguf" or "hf"), or None for other names.

    Builds the trained model first when it is missing (progress is printed) — unless ``prepare`` is
    False: then nothing is built, and the paths the files will have come back with ``ready=False``.
    This is the demo package's model source (:mod:`servekit.sources`).
    """
    if not is_demo_name(model):
        return None
    if fmt not in ("gguf", "hf"):
        raise ValueError(f"fmt must be 'gguf' or 'hf', not {fmt!r}")
    name = parse_name(model)
    if name.tiny:
        if fmt != "gguf":
            raise ModelNotFound("demo-tiny exists only as a GGUF file (llama.cpp); serve `demo` with vLLM or SGLang.")
        return DemoModel(path=tiny_gguf(), served_name=model)
    if fmt == "hf" and name.quant in QUANT_TYPES:
        raise ModelNotFound(f"{model!r} is a GGUF quantization for llama.cpp; vLLM serves `demo` (the HF folder) "
                            f"and `demo:{HF_QUANT_TYPES[0]}` (int8 weights and activations).")
    if fmt == "gguf" and name.quant in HF_QUANT_TYPES:
        raise ModelNotFound(f"{model!r} is the demo model in vLLM's compressed-tensors int8 format (a Hugging Face "
                            "folder): serve it with vllm. llama.cpp's 8-bit form is demo:Q8_0.")
    art = artefacts()
    if name.quant in HF_QUANT_TYPES:
        from .builder import hf_quantized

        path = hf_quantized(name.quant) if prepare else art.hf_quant_dir(name.quant)
        return DemoModel(path=path, served_name=model, ready=path.is_dir(),
                         loras=tuple((a, str(art.lora_dir(a))) for a in name.adapters))

    ready = art.has_gguf() if fmt == "gguf" else art.has_hf()
    if not ready and prepare:
        build(gguf=fmt == "gguf")
        ready = True
    if fmt == "gguf":
        loras = tuple((a, str(art.lora_gguf(a))) for a in name.adapters)
        return DemoModel(path=art.gguf(name.quant), served_name=model, loras=loras, ready=ready)
    return DemoModel(path=art.hf_dir, served_name=model, loras=tuple((a, str(art.lora_dir(a))) for a in name.adapters),
                     ready=ready)

