"""``demo:W8A8``: the demo model with int8 weights and int8 activations, in the compressed-tensors format that
vLLM loads (its CPU build runs it with oneDNN's int8 matmul: ``CPUInt8ScaledMMLinearKernel``).

Made from the demo model's Hugging Face folder in a second, with numpy alone (no torch, no llm-compressor):
every linear layer of the decoder (attention q/k/v/o, MLP gate/up/down) gets symmetric per-output-channel
int8 weights with one float32 scale per row; activations are quantized per token at run time (dynamic:
no calibration data needed). Embeddings, norms and ``lm_head`` stay as they were. This is the scheme
llm-compressor calls ``W8A8`` (``QuantizationModifier(scheme="W8A8")`` without SmoothQuant), and the
``config.json`` it writes is the one vLLM reads to pick its int8 kernels.
"""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import numpy as np

TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
_NUMPY = {"F32": np.float32, "F16": np.float16, "I8": np.int8, "I32": np.int32, "I64": np.int64}
_NAMES = {np.dtype(v): k for k, v in _NUMPY.items()}

QUANTIZATION_CONFIG = {
    "quant_method": "compressed-tensors",
    "format": "int-quantized",
    "quantization_status": "compressed",
    "ignore": ["lm_head"],
    "kv_cache_scheme": None,
    "global_compression_ratio": None,
    "config_groups": {
        "group_0": {
            "targets": ["Linear"],
            "weights": {"num_bits": 8, "type": "int", "symmetric": True, "strategy": "channel", "dynamic": False,
                        "group_size": None, "block_structure": None, "actorder": None, "observer": "minmax",
                        "observer_kwargs": {}},
            "input_activations": {"num_bits": 8, "type": "int", "symmetric": True, "strategy": "token",
                                  "dynamic": True, "group_size": None, "block_structure": None, "actorder": None,
                                  "observer": None, "observer_kwargs": {}},
            "output_activations": None,
        }
    },
}


def read_safetensors(path: Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """All tensors of a ``.safetensors`` file as numpy arrays, and its metadata."""
    data = path.read_bytes()
    (size,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + size])
    metadata = header.pop("__metadata__", {}) or {}
    body = memoryview(data)[8 + size:]
    tensors = {}
    for name, info in header.items():
        if info["dtype"] not in _NUMPY:
            raise ValueError(f"{path.name}: tensor {name} is {info['dtype']}; only {sorted(_NUMPY)} are read here")
        begin, end = info["data_offsets"]
        tensors[name] = np.frombuffer(body[begin:end], dtype=_NUMPY[info["dtype"]]).reshape(info["shape"])
    return tensors, metadata


def write_safetensors(path: Path, tensors: dict[str, np.ndarray], metadata: dict[str, str] | None = None) -> None:
    """Write ``tensors`` as a ``.safetensors`` file (names sorted, data 8-byte aligned as the format asks)."""
    header: dict[str, object] = {"__metadata__": metadata or {"format": "pt"}}
    offset, blobs = 0, []
    for name in sorted(tensors):
        array = np.ascontiguousarray(tensors[name])
        blob = array.tobytes()
        header[name] = {"dtype": _NAMES[array.dtype], "shape": list(array.shape),
                        "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)
    with open(path, "wb") as out:
        out.write(struct.pack("<Q", len(encoded)))
        out.write(encoded)
        for blob in blobs:
            out.write(blob)


def quantize_rows(weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 per output channel (row): ``weight ≈ q * scale`` with ``scale = max|row| / 127``."""
    w = weight.astype(np.float32)
    scale = np.abs(w).max(axis=1, keepdims=True) / 127.0
    scale[scale == 0] = 1.0
    q = np.clip(np.rint(w / scale), -127, 127).astype(np.int8)
    return q, scale.astype(np.float32)


def is_target(name: str) -> bool:
    parts = name.split(".")
    return len(parts) >= 2 and parts[-1] == "weight" and parts[-2] in TARGETS


def make_w8a8(hf_dir: Path, out_dir: Path) -> Path:
    """Write the W8A8 form of the HF model in ``hf_dir`` to ``out_dir`` (made whole in a staging folder)."""
    staging = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(hf_dir, staging, ignore=shutil.ignore_patterns("*.safetensors", "*.bin", "*.pt"))
    tensors, metadata = read_safetensors(hf_dir / "model.safetensors")
    out: dict[str, np.ndarray] = {}
    for name, array in tensors.items():
        if is_target(name):
            out[name], out[name[: -len("weight")] + "weight_scale"] = quantize_rows(array)
        else:
            out[name] = array
    write_safetensors(staging / "model.safetensors", out, metadata)
    config = json.loads((staging / "config.json").read_text())
    config["quantization_config"] = QUANTIZATION_CONFIG
    (staging / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    shutil.rmtree(out_dir, ignore_errors=True)
    staging.rename(out_dir)
    return out_dir


__all__ = ["QUANTIZATION_CONFIG", "make_w8a8", "quantize_rows", "read_safetensors", "write_safetensors"]
