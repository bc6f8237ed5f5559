"""Which GPUs this machine has: NVIDIA ones through NVML (``nvidia-ml-py``), else the device nodes.

NVML is the driver's own library (``libnvidia-ml.so``), loaded with ctypes: no torch, no CUDA toolkit, and
it answers in milliseconds. Where it cannot be loaded (no NVIDIA driver, a container without it) the
device nodes ``/dev/nvidia0`` (NVIDIA) and ``/dev/kfd`` (AMD ROCm) still say that a GPU is there.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from functools import cache
from typing import Any

DEVICE_NODES = {"/dev/nvidia0": "NVIDIA GPU (NVML unavailable)", "/dev/kfd": "AMD GPU (ROCm)"}
BF16_MIN_CAPABILITY = (8, 0)  # Ampere and newer; a T4 (7.5) or V100 (7.0) computes in float16


@dataclass(frozen=True)
class Gpu:
    """One GPU: what NVML says about it (fields it cannot tell are None)."""

    index: int
    name: str
    memory_mb: int | None = None
    capability: tuple[int, int] | None = None  # CUDA compute capability
    driver: str | None = None

    @property
    def bfloat16(self) -> bool | None:
        """Whether it computes in bfloat16 (None where the capability is unknown)."""
        return None if self.capability is None else self.capability >= BF16_MIN_CAPABILITY

    def describe(self) -> str:
        parts = [f"GPU {self.index}: {self.name}"]
        if self.memory_mb:
            parts.append(f"{self.memory_mb / 1024:.0f} GiB")
        if self.capability:
            parts.append(f"compute capability {self.capability[0]}.{self.capability[1]}")
        if self.bfloat16 is False:
            parts.append("no bfloat16: vLLM and SGLang fall back to float16 (--dtype half)")
        if self.driver:
            parts.append(f"driver {self.driver}")
        return ", ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "bfloat16": self.bfloat16}


def nvml_gpus() -> list[Gpu] | None:
    """NVIDIA GPUs as NVML lists them; None when NVML cannot be used here (no driver, no ``nvidia-ml-py``)."""
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except Exception:  # noqa: BLE001 - NVMLError_LibraryNotFound / DriverNotLoaded: no NVIDIA driver here
        return None
    try:
        driver = _text(pynvml.nvmlSystemGetDriverVersion())
        found = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            found.append(Gpu(index=index, name=_text(pynvml.nvmlDeviceGetName(handle)),
                             memory_mb=int(pynvml.nvmlDeviceGetMemoryInfo(handle).total) // 2**20,
                             capability=_capability(pynvml, handle), driver=driver))
        return found
    except Exception:  # noqa: BLE001 - a driver/library mismatch: NVML is not usable
        return None
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:  # noqa: BLE001, S110 - shutting down what failed to start
            pass


def _capability(pynvml: Any, handle: Any) -> tuple[int, int] | None:
    try:
        major, minor = pynvml.nvmlDeviceGetCudaComputeCapability(handle)
    except Exception:  # noqa: BLE001 - older drivers lack the call
        return None
    return int(major), int(minor)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def node_gpus() -> list[Gpu]:
    """One entry per GPU device node that exists (no details)."""
    return [Gpu(index=0, name=name) for node, name in DEVICE_NODES.items() if os.path.exists(node)]


@cache
def gpus() -> tuple[Gpu, ...]:
    """This machine's GPUs (NVML first, device nodes else); empty on a CPU-only machine. Looked up once."""
    found = nvml_gpus()
    return tuple(found) if found else tuple(node_gpus())


def has_gpu() -> bool:
    """True when this machine has a GPU an engine could use."""
    return bool(gpus())


__all__ = ["Gpu", "gpus", "has_gpu", "node_gpus", "nvml_gpus"]
