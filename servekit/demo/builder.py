"""Build the trained demo model: train (torch, in a private env), export HF + PEFT, convert to GGUF, quantize.

Artefacts live in ``<cache>/demo/<BUILD_VERSION>/``; each stage is marked done by a JSON file written last,
so an interrupted build resumes and a finished one costs nothing. The notebook kernel never imports torch:
training runs in the servekit environment ``demo-build-<ENV_KEY>`` (``_worker.py``).

servekit ships what this deterministic build made (``shipped/<BUILD_VERSION>/``: the HF folder, the PEFT
adapters, the F16 and LoRA GGUF files, ~11 MB), so the first use copies and checks them instead of training
for minutes; only the quantized GGUF files are made here (a second). ``build(force=True)`` trains from
scratch and compares the result with what was shipped.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..envs import cpu_torch_requirements
from ..errors import BuildError
from ..paths import cache_dir
from . import QUANT_TYPES, tasks

Progress = Callable[[str], None]

BUILD_VERSION = "trained-7"  # bump when anything that changes the artefacts changes
ENV_KEY = "1"  # bump when the build environment's packages change
TRAIN_STEPS = 2000
# Peak learning rate. 2e-3 left 3-digit addition at 0-36 % after 1000-1500 steps (and 3e-3 learned nothing);
# 1.5e-3 reached 62-96 % on the same budget across seeds and thread counts.
LEARNING_RATE = 1.5e-3
LORA_STEPS = 400  # 200 left the adapters at 92-96 % on trained-7 (100 % and 99 % at 400)
SEED = 0
SHIPPED_DIR = Path(__file__).with_name("shipped")  # the artefacts servekit comes with, by build version
SHIPPED_MANIFEST = "files.json"  # {"files": {relative path: {"sha256", "bytes"}}}
# The shipped files: what the engines load. Quantized GGUF files are made from the F16 one on first use.
SHIPPED_HF = ("hf", "lora", "tokenizer-checks.json")
SHIPPED_GGUF = ("gguf/demo-F16.gguf",) + tuple(f"gguf/lora-{name}.gguf" for name in tasks.ADAPTERS)
# A rebuild reproduces the shipped build when each task's held-out accuracy is within this much of it.
REPRODUCE_TOLERANCE = 0.10
TORCH_VERSION = "2.13.0"
BUILD_PACKAGES = (
    # transformers as pinned by llama.cpp's converter requirements; sentencepiece 0.2 needs protobuf >= 5.26
    "transformers==4.57.6", "sentencepiece>=0.2,<0.3", "protobuf>=5.26", "peft==0.17.1", "safetensors",
    "numpy>=2.2.6,<2.3", "pyyaml", "tqdm", "requests",
)


# -- where things are ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Artefacts:
    """The files of one build version."""

    root: Path

    hf_dir = property(lambda self: self.root / "hf", doc="Hugging Face folder (vLLM, SGLang, transformers).")
    gguf_dir = property(lambda self: self.root / "gguf")
    hf_marker = property(lambda self: self.root / "hf.json")
    gguf_marker = property(lambda self: self.root / "gguf.json")
    log_path = property(lambda self: self.root / "build.log")
    checks_path = property(lambda self: self.root / "tokenizer-checks.json",
                           doc="Prompts of every task with the text and token ids the model was trained on.")

    def gguf(self, quant: str = "F16") -> Path:
        """The model as GGUF: ``F16`` or one of :data:`QUANT_TYPES`."""
        return self.gguf_dir / f"demo-{quant}.gguf"

    def hf_quant_dir(self, quant: str) -> Path:
        """The Hugging Face folder of a quantized form for vLLM (``W8A8``), made from :attr:`hf_dir` on first use."""
        return self.root / f"hf-{quant}"

    def lora_dir(self, name: str) -> Path:
        """The PEFT folder of adapter ``name`` (vLLM, SGLang)."""
        return self.root / "lora" / name

    def lora_gguf(self, name: str) -> Path:
        """The GGUF LoRA of adapter ``name`` (llama-server); its stem is ``lora-NAME``."""
        return self.gguf_dir / f"lora-{name}.gguf"

    def has_hf(self) -> bool:
        return self.hf_marker.is_file()

    def has_gguf(self) -> bool:
        return self.gguf_marker.is_file()


def artefacts() -> Artefacts:
    """The artefacts of the current build version (they may not be built yet)."""
    return Artefacts(cache_dir() / "demo" / BUILD_VERSION)


# -- the report ----------------------------------------------------------------------------------
@dataclass
class BuildReport:
    """What a build made: files and sizes, seconds per stage, accuracies measured with torch."""

    root: Path
    seconds: dict[str, float] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)
    accuracy: dict[str, float] = field(default_factory=dict)
    adapter_share: dict[str, float] = field(default_factory=dict)
    parameters: int = 0
    shipped: bool = False  # copied from the artefacts servekit ships, not trained here
    comparison: list[str] = field(default_factory=list)  # a rebuild against the shipped build
    made_seconds: dict[str, float] = field(default_factory=dict)  # shipped: the stages of the build that made it

    def lines(self) -> list[str]:
        """The report as text lines."""
        out = [f"demo model {BUILD_VERSION} in {self.root} ({self.parameters / 1e6:.2f} M parameters)"]
        if self.shipped:
            out.append("shipped with servekit: made by this build (same seed and steps) and checked by sha256 on "
                       "copy; `servekit demo build --force` trains it here")
        if self.made_seconds:
            out.append("seconds of the build that made it: " + ", ".join(f"{k} {v:.0f}" for k, v in self.made_seconds.items()))
        if self.seconds:
            label = "seconds here" if self.shipped else "seconds"
            out.append(f"{label}: " + ", ".join(f"{k} {v:.1f}" if v < 10 else f"{k} {v:.0f}" for k, v in self.seconds.items()))
        if self.accuracy:
            out.append("held-out accuracy (torch, F32): " + ", ".join(f"{k} {v:.0%}" for k, v in self.accuracy.items()))
        if self.adapter_share:
            shares = ", ".join(f"{k} {v:.0%}" for k, v in self.adapter_share.items())
            out.append(f"answers showing the adapter: {shares}")
        if self.accuracy.get("reverse", 1.0) < 0.9:
            out.append("warning: the easy task is below 90 %; rebuild with servekit.demo.build(force=True).")
        out.extend(self.comparison)
        for name, size in self.sizes.items():
            out.append(f"  {name:<28} {size / 1e6:7.2f} MB")
        return out

    def __str__(self) -> str:
        return "\n".join(self.lines())


def read_report(art: Artefacts | None = None) -> BuildReport | None:
    """The report of a finished build (HF stage at least), or None."""
    art = art or artefacts()
    if not art.has_hf():
        return None
    hf = json.loads(art.hf_marker.read_text())
    gguf = json.loads(art.gguf_marker.read_text()) if art.has_gguf() else {}
    shipped_copy = hf.get("shipped") or {}
    here = {"copy": shipped_copy["seconds"]} if shipped_copy else hf.get("seconds", {})
    return BuildReport(
        root=art.root, seconds={**here, **gguf.get("seconds", {})},
        made_seconds=hf.get("seconds", {}) if shipped_copy else {},
        sizes={**hf.get("sizes", {}), **gguf.get("sizes", {})}, accuracy=hf.get("accuracy", {}),
        adapter_share=hf.get("adapter_share", {}), parameters=hf.get("parameters", 0),
        shipped=bool(hf.get("shipped")), comparison=hf.get("compared_with_shipped", []),
    )


# -- progress ------------------------------------------------------------------------------------
class Display:
    """Shows build progress: a tqdm bar per training stage when tqdm is installed, else a line every 10 %."""

    def __init__(self, progress: Progress | None):
        self.say: Progress = progress or (lambda line: print(line, flush=True))
        self.custom = progress is not None
        self._bar: Any = None
        self._bar_stage = ""
        self._last_tenth = -1

    def message(self, line: str) -> None:
        self.close_bar()
        self.say(line)

    def step(self, stage: str, step: int, total: int, loss: float | None) -> None:
        if not self.custom and self._tqdm_bar(stage, total) is not None:
            self._bar.n = step
            if loss is not None:
                self._bar.set_postfix(loss=f"{loss:.3f}", refresh=False)
            self._bar.refresh()
            return
        tenth = step * 10 // max(total, 1)
        if stage != self._bar_stage:
            self._bar_stage, self._last_tenth = stage, -1
        if tenth != self._last_tenth and step:
            self._last_tenth = tenth
            self.say(f"{stage}: step {step}/{total}" + (f", loss {loss:.3f}" if loss is not None else ""))

    def _tqdm_bar(self, stage: str, total: int) -> Any:
        if self._bar is not None and self._bar_stage == stage:
            return self._bar
        self.close_bar()
        try:
            from tqdm.auto import tqdm
        except ImportError:
            return None
        self._bar = tqdm(total=total, desc=stage, unit="step", leave=True)
        self._bar_stage = stage
        return self._bar

    def close_bar(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


# -- the build -----------------------------------------------------------------------------------
def build(progress: Progress | None = None, force: bool = False, gguf: bool | None = None) -> BuildReport:
    """Make the demo model ready in the user cache (once per version) and return its report.

    The first use copies the artefacts servekit ships (a second); ``force`` trains from scratch instead
    (about 5-10 minutes on 2 cores) and compares the result with the shipped build.
    ``gguf``: also make the GGUF files (the quantized ones with llama.cpp's quantizer). None: when llama.cpp
    is installed (``servekit install llamacpp``); True: required; False: HF folder and PEFT adapters only.
    """
    display = Display(progress)
    art = artefacts()
    art.root.mkdir(parents=True, exist_ok=True)
    with _build_lock(art, display):
        if force:
            for marker in (art.hf_marker, art.gguf_marker):
                marker.unlink(missing_ok=True)
            for quantized in art.root.glob("hf-*"):  # made from the old HF folder
                shutil.rmtree(quantized, ignore_errors=True)
        source = None if force else shipped()
        if not art.has_hf() and source is not None:
            _install_shipped_hf(art, source, display)
        elif not art.has_hf():
            _build_hf(art, display)
            _compare_with_shipped(art, display)
        want_gguf = gguf if gguf is not None else _llama_cpp_tools_available()
        if want_gguf and not art.has_gguf():
            _build_gguf(art, display)
        elif gguf is None and not want_gguf and not art.has_gguf():
            display.message("GGUF files skipped: llama.cpp is not installed "
                            "(`servekit install llamacpp`, then build again).")
    report = read_report(art)
    assert report is not None
    for line in report.lines():
        display.message(line)
    return report


def hf_quantized(quant: str, progress: Progress | None = None) -> Path:
    """The HF folder of ``demo:QUANT`` for vLLM (``W8A8``): made from the demo model's HF folder in about a
    second the first time (the HF folder is built or copied first if needed)."""
    from .w8a8 import make_w8a8

    art = artefacts()
    target = art.hf_quant_dir(quant)
    if target.is_dir():
        return target
    if not art.has_hf():
        build(progress=progress, gguf=False)
    display = Display(progress)
    with _build_lock(art, display):
        if not target.is_dir():
            display.message(f"making demo:{quant} (int8 weights per channel, int8 activations per token) …")
            make_w8a8(art.hf_dir, target)
    return target


@contextmanager
def _build_lock(art: Artefacts, display: Display) -> Iterator[None]:
    """One builder at a time per version (two notebooks, a test session and the CLI may race)."""
    lock_path = art.root.parent / f"{BUILD_VERSION}.lock"
    with open(lock_path, "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            display.message("another process is building the demo model; waiting for it …")
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            display.close_bar()
            fcntl.flock(handle, fcntl.LOCK_UN)


# -- the shipped artefacts -------------------------------------------------------------------------
def shipped() -> Artefacts | None:
    """The artefacts servekit ships for this build version, or None when it ships none."""
    root = SHIPPED_DIR / BUILD_VERSION
    return Artefacts(root) if (root / SHIPPED_MANIFEST).is_file() else None


def _from_shipped(art: Artefacts) -> bool:
    """True when the HF stage in the cache was copied from the shipped artefacts (so the GGUF files are too)."""
    return art.has_hf() and bool(json.loads(art.hf_marker.read_text()).get("shipped"))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _copy_verified(source: Artefacts, names: tuple[str, ...], target_root: Path) -> int:
    """Copy the shipped files under ``names`` (files or folders) into ``target_root``, each checked against
    the manifest's sha256; raises BuildError naming a damaged or missing file. Returns the bytes copied."""
    manifest = json.loads((source.root / SHIPPED_MANIFEST).read_text())["files"]
    chosen = {rel: entry for rel, entry in manifest.items() if any(rel == n or rel.startswith(n + "/") for n in names)}
    copied = 0
    for rel, entry in sorted(chosen.items()):
        origin, target = source.root / rel, target_root / rel
        if not origin.is_file() or _sha256(origin) != entry["sha256"]:
            raise BuildError(f"The demo model files that come with servekit are damaged or missing ({origin}): "
                             "reinstall servekit, or train the model here with `servekit demo build --force`.")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(origin, target)
        copied += entry["bytes"]
    return copied


def _install_shipped_hf(art: Artefacts, source: Artefacts, display: Display) -> None:
    """The HF stage from the shipped artefacts: HF folder, PEFT adapters and tokenizer checks, checked on copy."""
    started = time.monotonic()
    display.message(f"copying the demo model servekit ships ({BUILD_VERSION}, trained by `servekit demo build`) …")
    staging = art.root / ".hf-partial"
    for stale in (staging, art.hf_dir, art.root / "lora"):
        shutil.rmtree(stale, ignore_errors=True)
    try:
        copied = _copy_verified(source, SHIPPED_HF, staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    staging.joinpath("hf").rename(art.hf_dir)
    staging.joinpath("lora").rename(art.root / "lora")
    staging.joinpath(art.checks_path.name).replace(art.checks_path)
    shutil.rmtree(staging)
    _point_adapters_at_base(art)
    summary = json.loads(source.hf_marker.read_text())
    summary["shipped"] = {"from": str(source.root), "bytes": copied, "seconds": round(time.monotonic() - started, 2)}
    art.hf_marker.write_text(json.dumps(summary, indent=1))


def _point_adapters_at_base(art: Artefacts) -> None:
    """Each PEFT adapter names its base model by path: the HF folder where it now lives."""
    for name in tasks.ADAPTERS:
        config_path = art.lora_dir(name) / "adapter_config.json"
        config = json.loads(config_path.read_text())
        config["base_model_name_or_path"] = str(art.hf_dir)
        config_path.write_text(json.dumps(config, indent=2))


def compare_builds(ours: dict[str, Any], theirs: dict[str, Any], identical: list[str], differing: list[str]) -> list[str]:
    """Report lines comparing a fresh build's summary (``ours``) with the shipped one's (``theirs``)."""
    if not differing:
        return [f"reproduces the shipped build byte for byte ({len(identical)} files compared)"]
    deltas = {task: ours.get("accuracy", {}).get(task, 0.0) - acc for task, acc in theirs.get("accuracy", {}).items()}
    spread = ", ".join(f"{task} {delta:+.0%}" for task, delta in deltas.items())
    listed = ", ".join(differing[:4]) + (" …" if len(differing) > 4 else "")
    lines = [(f"differs from the shipped build in {len(differing)} of {len(identical) + len(differing)} files "
              f"({listed}); held-out accuracy against it: {spread}")]
    worst = max((abs(d) for d in deltas.values()), default=0.0)
    if worst <= REPRODUCE_TOLERANCE + 1e-9:
        lines.append(f"reproduces the shipped build within tolerance (every task within {REPRODUCE_TOLERANCE:.0%})")
    else:
        lines.append(f"warning: does NOT reproduce the shipped build: a task moved by {worst:.0%} "
                     f"(tolerance {REPRODUCE_TOLERANCE:.0%}); this machine's torch or CPU differs")
    return lines


def _compare_with_shipped(art: Artefacts, display: Display) -> None:
    """After training here: compare the HF-stage files and accuracies with the shipped build, note it in hf.json."""
    source = shipped()
    if source is None:
        return
    manifest = json.loads((source.root / SHIPPED_MANIFEST).read_text())["files"]
    identical, differing = [], []
    for rel, entry in sorted(manifest.items()):
        ours = art.root / rel
        if not rel.startswith(SHIPPED_HF) or rel.endswith("adapter_config.json"):  # GGUF: later; configs name paths
            continue
        (identical if ours.is_file() and _sha256(ours) == entry["sha256"] else differing).append(rel)
    summary = json.loads(art.hf_marker.read_text())
    summary["compared_with_shipped"] = compare_builds(summary, json.loads(source.hf_marker.read_text()),
                                                      identical, differing)
    art.hf_marker.write_text(json.dumps(summary, indent=1))


def ship(target: Path | None = None) -> Path:
    """Copy this cache's finished build into ``shipped/<BUILD_VERSION>/`` with its manifest (for maintainers,
    after bumping BUILD_VERSION: ``python -m servekit.demo.builder ship``). Returns the folder."""
    art = artefacts()
    if not (art.has_hf() and art.has_gguf()) or _from_shipped(art):
        raise BuildError("Nothing to ship: train the demo model here first (`servekit demo build --force`).")
    root = target or SHIPPED_DIR / BUILD_VERSION
    shutil.rmtree(root, ignore_errors=True)
    files = [p for name in SHIPPED_HF for p in sorted((art.root / name).rglob("*")) + [art.root / name]
             if p.is_file() and p.name != "README.md"]  # PEFT's README is a template
    files += [art.root / rel for rel in SHIPPED_GGUF]
    manifest = {}
    for path in files:
        rel = str(path.relative_to(art.root))
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, root / rel)
        if path.name == "adapter_config.json":  # a path on this machine; the copy on install sets it again
            config = json.loads(path.read_text())
            config["base_model_name_or_path"] = "hf"
            (root / rel).write_text(json.dumps(config, indent=2))
        manifest[rel] = {"sha256": _sha256(root / rel), "bytes": (root / rel).stat().st_size}
    summary = json.loads(art.hf_marker.read_text())
    summary.pop("compared_with_shipped", None)
    summary["gguf_seconds"] = json.loads(art.gguf_marker.read_text()).get("seconds", {})
    (root / art.hf_marker.name).write_text(json.dumps(summary, indent=1))
    (root / SHIPPED_MANIFEST).write_text(json.dumps({"build_version": BUILD_VERSION, "files": manifest}, indent=1))
    return root


def build_env_steps(progress: Progress | None = None) -> list[list[str]]:
    """pip steps of the build environment: the CPU torch first, then the training packages."""
    return [["install", "--no-compile", *cpu_torch_requirements(TORCH_VERSION, progress)],
            ["install", "--no-compile", *BUILD_PACKAGES]]


def build_python(display: Display | None = None) -> Path:
    """The build environment's interpreter, created on first use (torch, transformers, peft, sentencepiece)."""
    from ..envs import create_env, env_python

    name = f"demo-build-{ENV_KEY}"
    found = env_python(name)
    if found:
        return found
    say = display.message if display else None
    if say:
        say(f"creating the build environment {name} (torch CPU, transformers, peft; once) …")
    return create_env(name, build_env_steps(say), progress=say)


def _build_hf(art: Artefacts, display: Display) -> None:
    started = time.monotonic()
    python = build_python(display)
    env_seconds = time.monotonic() - started
    staging = art.root / ".hf-partial"
    for stale in (staging, art.hf_dir, art.root / "lora"):
        shutil.rmtree(stale, ignore_errors=True)
    art.checks_path.unlink(missing_ok=True)
    display.message(f"training the demo model ({TRAIN_STEPS} steps) and {len(tasks.ADAPTERS)} LoRA adapters …")
    cmd = [str(python), str(Path(__file__).with_name("_worker.py")), str(staging), "--seed", str(SEED),
           "--steps", str(TRAIN_STEPS), "--lr", str(LEARNING_RATE), "--lora-steps", str(LORA_STEPS)]
    if os.environ.get("SERVEKIT_DEMO_THREADS"):
        cmd += ["--threads", os.environ["SERVEKIT_DEMO_THREADS"]]
    _run_worker(cmd, art.log_path, display)
    summary = json.loads((staging / "worker.json").read_text())
    staging.joinpath("hf").rename(art.hf_dir)
    staging.joinpath("lora").rename(art.root / "lora")
    staging.joinpath(art.checks_path.name).replace(art.checks_path)
    shutil.rmtree(staging)
    _point_adapters_at_base(art)
    summary["seconds"] = {"environment": round(env_seconds, 1), **summary["seconds"]}
    summary["sizes"] = {"hf/model.safetensors": (art.hf_dir / "model.safetensors").stat().st_size}
    summary["sizes"].update({f"lora/{n}": _folder_size(art.lora_dir(n)) for n in tasks.ADAPTERS})
    art.hf_marker.write_text(json.dumps(summary, indent=1))


def _run_worker(cmd: list[str], log_path: Path, display: Display) -> None:
    """Run the training worker, turning its ``@@`` lines into progress and the rest into the log."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    # Spinning OpenMP threads collapse when the cores are shared (measured: 2 threads 1.46 s/step vs 0.19 s passive).
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    tail: list[str] = []
    with open(log_path, "a", encoding="utf-8", buffering=1) as log:  # line-buffered: `tail -f` shows progress
        log.write(f"\n$ {' '.join(cmd)}\n")
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, bufsize=1)
        assert proc.stdout is not None
        for line in proc.stdout:
            log.write(line)
            if line.startswith("@@ "):
                _show(json.loads(line[3:]), display)
            else:
                tail = (tail + [line.rstrip()])[-30:]
        code = proc.wait()
    if code != 0:
        raise BuildError(f"Training the demo model failed (exit code {code}):\n" + "\n".join(tail)
                         + f"\nFull log: {log_path}")


def _show(event: dict[str, Any], display: Display) -> None:
    if "message" in event:
        display.message(f"{event['stage']}: {event['message']}")
    if "total" in event and "step" in event:  # step 0 opens the bar, so its rate counts from the start
        display.step(event["stage"], event["step"], event["total"], event.get("loss"))


def _folder_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


# -- GGUF ----------------------------------------------------------------------------------------
def _llama_cpp_tools_available() -> bool:
    """llama.cpp's quantizer is here (prebuilt package or a compiled build); its converters are fetched if needed."""
    from ..engines import _llamacpp_quantize, llamacpp

    if _llamacpp_quantize.available():
        return True
    try:
        llamacpp.llama_quantize_binary()
    except BuildError:
        return False
    return True


def _quantizer(log_path: Path) -> tuple[str, Callable[[Path, Path, str], Any]]:
    """llama.cpp's quantizer from the prebuilt package (byte for byte what llama-quantize writes, no binary
    needed), else the ``llama-quantize`` binary of a compiled build; (what it is, quantize(source, target, kind))."""
    from ..engines import _llamacpp_quantize, llamacpp
    from ..envs import run_logged

    if _llamacpp_quantize.available():
        return "llama.cpp's quantizer (prebuilt package)", _llamacpp_quantize.quantize
    try:
        binary = llamacpp.llama_quantize_binary()
    except BuildError as exc:
        raise BuildError(f"The quantized GGUF files need llama.cpp's quantizer: {exc}") from exc

    def run_binary(source: Path, target: Path, kind: str) -> None:
        run_logged([str(binary), str(source), str(target), kind], log_path, None)

    return "llama-quantize", run_binary


def _build_gguf(art: Artefacts, display: Display) -> None:
    """The GGUF stage: F16 and LoRA files (copied when the HF stage was shipped, else converted), then the
    quantized ladder made from the F16 file."""
    quantizer, quantize = _quantizer(art.log_path)
    staging = art.root / ".gguf-partial"
    shutil.rmtree(staging, ignore_errors=True)
    shutil.rmtree(art.gguf_dir, ignore_errors=True)
    staging.mkdir()
    seconds: dict[str, float] = {}
    started = time.monotonic()
    source = shipped() if _from_shipped(art) else None
    if source is not None:
        copy = art.root / ".gguf-copy"
        shutil.rmtree(copy, ignore_errors=True)
        try:
            _copy_verified(source, SHIPPED_GGUF, copy)
        except BaseException:
            shutil.rmtree(copy, ignore_errors=True)
            shutil.rmtree(staging, ignore_errors=True)
            raise
        staging.rmdir()
        (copy / "gguf").rename(staging)
        shutil.rmtree(copy)
        seconds["copy"] = round(time.monotonic() - started, 2)
    else:
        _convert_to_gguf(art, staging, display)
        seconds["convert"] = round(time.monotonic() - started, 1)
    f16 = staging / "demo-F16.gguf"

    started = time.monotonic()
    display.message(f"quantizing with {quantizer}: {', '.join(QUANT_TYPES)} …")
    for quant in QUANT_TYPES:
        quantize(f16, staging / f"demo-{quant}.gguf", quant)
    seconds["quantize"] = round(time.monotonic() - started, 1)

    staging.rename(art.gguf_dir)
    sizes = {f"gguf/{p.name}": p.stat().st_size for p in sorted(art.gguf_dir.glob("*.gguf"))}
    art.gguf_marker.write_text(json.dumps({"seconds": seconds, "sizes": sizes}, indent=1))


def _convert_to_gguf(art: Artefacts, staging: Path, display: Display) -> None:
    """llama.cpp's own converters (fetched as sources, run in the build environment): F16 model and LoRAs."""
    from ..engines import llamacpp

    try:
        source = llamacpp.fetch_llama_cpp_sources(progress=display.message)
    except BuildError as exc:
        raise BuildError(f"The GGUF files need llama.cpp's converter: {exc}") from exc
    python = build_python(display)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("NO_LOCAL_GGUF", None)  # the converter must use its own gguf-py, not whatever is installed
    display.message(f"converting to GGUF with llama.cpp's converters: the model (F16) and {len(tasks.ADAPTERS)} "
                    "LoRA adapters, side by side …")
    f16 = staging / "demo-F16.gguf"
    conversions = {"convert-F16": [python, source / "convert_hf_to_gguf.py", art.hf_dir, "--outfile", f16,
                                   "--outtype", "f16"]}
    for name in tasks.ADAPTERS:
        conversions[f"convert-lora-{name}"] = [python, source / "convert_lora_to_gguf.py", art.lora_dir(name),
                                               "--base", art.hf_dir, "--outfile", staging / f"lora-{name}.gguf",
                                               "--outtype", "f16"]
    _run_side_by_side(conversions, art.root / "logs", env)


def _run_side_by_side(commands: dict[str, list[Any]], log_dir: Path, env: dict[str, str]) -> None:
    """Run the commands at once (each mostly imports torch on one core), each logging to ``log_dir/NAME.log``."""
    from concurrent.futures import ThreadPoolExecutor

    from ..envs import run_logged

    with ThreadPoolExecutor(max_workers=len(commands)) as pool:
        running = [pool.submit(run_logged, [str(c) for c in cmd], log_dir / f"{name}.log", None, env=env)
                   for name, cmd in commands.items()]
        for job in running:
            job.result()  # re-raises the first failure, with its log's tail


def main(argv: list[str] | None = None) -> int:
    """``python -m servekit.demo.builder``: build and print the report; ``… ship``: copy this cache's own
    build into the package (maintainers, after bumping BUILD_VERSION)."""
    argv = sys.argv[1:] if argv is None else argv
    if argv == ["ship"]:
        print(f"shipped: {ship()}")
        return 0
    build()
    return 0


if __name__ == "__main__":
    sys.exit(main())
