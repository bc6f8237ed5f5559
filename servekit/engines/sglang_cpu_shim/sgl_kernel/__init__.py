"""servekit's stand-in for SGLang's CUDA kernel package on the CPU: importable, never callable."""

import _servekit_cpu_shim

__version__ = "0.0.0+servekit.cpu.shim"
_servekit_cpu_shim.install(__import__(__name__))
