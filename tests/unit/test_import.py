import subprocess
import sys

HEAVY = ["openai", "httpx", "numpy", "gguf", "IPython", "torch", "transformers", "plotly", "pandas", "psutil"]


def test_import_servekit_loads_no_heavy_module():
    code = f"import servekit, sys; print([m for m in {HEAVY!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"


def test_public_api_names():
    import servekit

    for name in ("serve", "Server", "ServeSpec", "running", "stop_all", "get_server", "demo"):
        assert getattr(servekit, name) is not None
