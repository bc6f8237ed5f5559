"""Import shim for servekit's SGLang CPU mode (put on the server's PYTHONPATH only in that mode).

SGLang's torch-native CPU path *imports* its CUDA kernel package ``sgl_kernel`` (and
``torchvision``) but, for plain text serving, never *calls* them. The packages in this folder
stand in for both: every module and attribute exists, and every call logs a line to stderr
(the server log) and raises ``NotImplementedError``. Nothing here is imported by servekit itself.
"""

from pathlib import Path

SHIM_DIR = Path(__file__).resolve().parent
