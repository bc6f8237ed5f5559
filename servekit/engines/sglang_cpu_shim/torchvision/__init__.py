"""servekit's stand-in for torchvision in SGLang's CPU mode (text serving never calls it)."""

import _servekit_cpu_shim

__version__ = "0.0.0+servekit.cpu.shim"
_servekit_cpu_shim.install(__import__(__name__))
