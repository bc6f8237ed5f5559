"""Quantize a GGUF file without ``llama-quantize``: llama.cpp's own quantizer, called from Python.

PyPI has no ``llama-quantize``, but the prebuilt server's library (``xllamacpp``) exports
``ggml_quantize_chunk`` — the per-tensor function ``llama-quantize`` itself calls. This module reads an
F16/F32 GGUF with the ``gguf`` package, picks each tensor's type the way ``llama-quantize`` does for the
quantization ladder servekit teaches (llama.cpp's ``llama_tensor_get_type``, for dense llama-style models
without an importance matrix: bigger types for ``output``, for some ``attn_v``/``ffn_down`` layers in the
``_M`` mixtures, fallbacks for rows the block size does not divide), quantizes with ``ggml_quantize_chunk``
and writes the same metadata with the new file type. The tests check it tensor by tensor, byte for byte,
against ``llama-quantize`` from the compiled build.
"""

from __future__ import annotations

import ctypes
import re
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BuildError

# name -> (default tensor type, llama_ftype), as llama-quantize's ftype table
LADDER: dict[str, tuple[str, int]] = {
    "Q8_0": ("Q8_0", 7), "Q6_K": ("Q6_K", 18), "Q5_K_M": ("Q5_K", 17), "Q4_K_M": ("Q4_K", 15),
    "Q4_0": ("Q4_0", 2), "Q3_K_M": ("Q3_K", 12), "Q2_K": ("Q2_K", 10),
}
# a type whose block size does not divide a tensor's rows falls back (llama.cpp's tensor_type_fallback)
_FALLBACK = {"Q2_K": "Q4_0", "Q3_K": "Q4_0", "Q4_K": "Q5_0", "Q5_K": "Q5_1", "Q6_K": "Q8_0"}
_LAYER = re.compile(r"^blk\.(\d+)\.")


def available() -> bool:
    """True when llama.cpp's quantizer can be loaded from the prebuilt package."""
    try:
        _library()
    except BuildError:
        return False
    return True


def quantize(source: Path, target: Path, kind: str) -> Path:
    """Write ``target``: ``source`` (an F16/F32 GGUF of a dense llama-style model) quantized as ``kind``."""
    import gguf

    if kind not in LADDER:
        raise BuildError(f"Unknown quantization {kind!r}: choose one of {', '.join(LADDER)}.")
    reader = gguf.GGUFReader(source)
    arch = str(reader.fields["general.architecture"].contents())
    layers = int(reader.fields[f"{arch}.block_count"].contents())
    writer = gguf.GGUFWriter(target, arch=arch, endianess=reader.endianess)
    _copy_metadata(reader, writer, file_type=LADDER[kind][1])
    choose = type_chooser(kind, layers)
    for tensor in reader.tensors:
        source_type = gguf.GGMLQuantizationType(tensor.tensor_type)
        rows = np.asarray(tensor.data)
        if not _quantizable(tensor.name, len(tensor.shape), source_type):
            writer.add_tensor(tensor.name, rows, raw_dtype=source_type)
            continue
        new_type = gguf.GGMLQuantizationType[choose(tensor.name, int(tensor.shape[0]))]
        data = rows.astype(np.float32).reshape(-1, int(tensor.shape[0]))
        writer.add_tensor(tensor.name, _quantize_rows(data, new_type), raw_dtype=new_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return target


def type_chooser(kind: str, layers: int) -> Callable[[str, int], str]:
    """``(tensor name, row length) -> type name`` for ``kind``, stateful like llama-quantize (it counts the
    ``attn_v`` tensors it has seen): call it once per tensor, in file order."""
    default = LADDER[kind][0]
    seen_attn_v = 0

    def choose(name: str, row: int) -> str:
        nonlocal seen_attn_v
        new = default
        if name == "output.weight":
            new = "Q8_0" if row % _block(default) else ("Q8_0" if default == "Q8_0" else "Q6_K")
        elif name.endswith("attn_v.weight"):
            new = _attn_v(kind, default, seen_attn_v, layers)
            seen_attn_v += 1
        elif name.endswith("ffn_down.weight"):
            new = _ffn_down(kind, default, _layer(name), layers)
        elif name.endswith("attn_output.weight"):
            new = {"Q2_K": "Q3_K", "Q3_K_M": "Q4_K"}.get(kind, default)
        if row % _block(new):
            new = _FALLBACK.get(new, new)
            if row % _block(new):
                new = "F16"
        return new

    return choose


def _attn_v(kind: str, default: str, index: int, layers: int) -> str:
    if kind == "Q2_K":
        return "Q3_K"  # Q4_K with grouped-query attention of 4+ heads a group (not in servekit's models)
    if kind == "Q3_K_M":
        return "Q5_K" if index < 2 else "Q4_K"
    if kind in ("Q4_K_M", "Q5_K_M") and _more_bits(index, layers):
        return "Q6_K"
    return default


def _ffn_down(kind: str, default: str, layer: int, layers: int) -> str:
    if kind == "Q2_K":
        return "Q3_K"
    if kind == "Q3_K_M":
        return "Q5_K" if layer < layers // 16 else "Q4_K"
    if kind in ("Q4_K_M", "Q5_K_M") and _more_bits(layer, layers):
        return "Q6_K"
    return default


def _more_bits(layer: int, layers: int) -> bool:
    """llama.cpp's ``use_more_bits``: the first and last eighth of the layers, and every third between."""
    return layer < layers // 8 or layer >= 7 * layers // 8 or (layer - layers // 8) % 3 == 2


def _layer(name: str) -> int:
    found = _LAYER.match(name)
    if not found:
        raise BuildError(f"Cannot tell the layer of tensor {name!r}.")
    return int(found.group(1))


def _quantizable(name: str, dims: int, source_type: Any) -> bool:
    import gguf

    return (dims >= 2 and name.endswith(".weight") and "norm" not in name
            and source_type in (gguf.GGMLQuantizationType.F16, gguf.GGMLQuantizationType.F32,
                                gguf.GGMLQuantizationType.BF16))


def _block(type_name: str) -> int:
    import gguf

    return gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[type_name]][0]


def _quantize_rows(data: np.ndarray, new_type: Any) -> np.ndarray:
    """``data`` (rows x n_per_row, float32) quantized by llama.cpp; uint8 rows x bytes per row."""
    import gguf

    if new_type == gguf.GGMLQuantizationType.F16:
        return data.astype(np.float16)
    lib = _library()
    rows, n_per_row = data.shape
    block, type_size = gguf.GGML_QUANT_SIZES[new_type]
    row_bytes = n_per_row // block * type_size
    out = np.empty((rows, row_bytes), dtype=np.uint8)
    src = np.ascontiguousarray(data, dtype=np.float32)
    lib.ggml_quantize_init(int(new_type))
    written = lib.ggml_quantize_chunk(int(new_type), src.ctypes.data, out.ctypes.data, 0, rows, n_per_row, None)
    if written != out.nbytes:
        raise BuildError(f"llama.cpp's quantizer wrote {written} bytes for {out.nbytes} expected ({new_type.name}).")
    return out


def _copy_metadata(reader: Any, writer: Any, file_type: int) -> None:
    """Every key of ``reader`` (but the GGUF header's own and the file type) into ``writer``."""
    import gguf

    for field in reader.fields.values():
        if field.name.startswith("GGUF.") or field.name in ("general.architecture", "general.file_type"):
            continue
        value_type = field.types[0]
        sub_type = field.types[-1] if value_type == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, field.contents(), value_type, sub_type=sub_type)
    writer.add_file_type(file_type)
    if "general.quantization_version" not in reader.fields:
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)


@cache
def _library() -> ctypes.CDLL:
    """The prebuilt llama.cpp library (xllamacpp's extension module exports the ggml functions)."""
    try:
        import xllamacpp
    except ImportError as exc:
        raise BuildError("llama.cpp's quantizer comes with the prebuilt server: pip install xllamacpp.") from exc
    folder = Path(xllamacpp.__file__).parent
    found = sorted(folder.glob("xllamacpp*.so")) + sorted(folder.glob("xllamacpp*.pyd"))
    if not found:
        raise BuildError(f"No xllamacpp library in {folder}.")
    lib = ctypes.CDLL(str(found[0]))
    lib.ggml_quantize_chunk.restype = ctypes.c_size_t
    lib.ggml_quantize_chunk.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                                        ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]
    lib.ggml_quantize_init.restype = None
    lib.ggml_quantize_init.argtypes = [ctypes.c_int]
    return lib
