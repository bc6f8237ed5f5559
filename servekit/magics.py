"""IPython magics: a thin layer over servekit's Python API (``%load_ext servekit``)."""

from __future__ import annotations

import os
import shlex
import sys
import time
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring

from .display import ServerTable
from .engines import get_engine
from .errors import NameTaken, ServekitError
from .server import Server, attach, get_server, running, serve, stop_all


def split_extra(line: str) -> tuple[str, list[str]]:
    """Split ``ARGS -- ENGINE FLAGS`` into servekit's part and the engine flags passed through as they are."""
    words = shlex.split(line)
    if "--" in words:
        cut = words.index("--")
        return shlex.join(words[:cut]), words[cut + 1:]
    return line, []


def _fail(exc: ServekitError) -> UsageError:
    return UsageError(str(exc))


@magics_class
class ServekitMagics(Magics):
    """%serve, %servers, %stop, %logs, %bench and %%chat."""

    @magic_arguments()
    @argument("engine", help="the engine: llamacpp (llama.cpp), vllm, sglang, an engine plug-in — or `attach`")
    @argument("model", help="a demo name (demo, demo:Q4_K_M), a local path or a Hugging Face id (with attach: a URL)")
    @argument("--name", help="servekit's name for the server (default: from the model). Running the cell again "
                             "with the same name, engine and model reuses the running server")
    @argument("--port", type=int, help="port (default: a free one)")
    @argument("--host", help="address to bind (default: 127.0.0.1, this machine only)")
    @argument("--ctx", type=int, help="context length in tokens")
    @argument("--parallel", type=int, help="concurrent sequences / slots")
    @argument("--lora", action="append", default=[], metavar="NAME=PATH", help="LoRA adapter at start (repeatable)")
    @argument("--cpu", action="store_true", default=None, help="run the engine on the CPU")
    @argument("--timeout", type=float, help="seconds to wait for readiness")
    @argument("--api-key", help="the API key clients must send (default: a random one)")
    @argument("--no-api-key", action="store_true", help="serve without a key (loopback; warns on other addresses)")
    @argument("--keep", action="store_true", help="keep the server running after this kernel stops or restarts")
    @argument("--quiet", action="store_true", help="show the server as a table, not as the live panel")
    @argument("--export", action="store_true",
              help="set OPENAI_BASE_URL and OPENAI_API_KEY in this kernel, so a stock OpenAI client connects")
    @line_magic
    def serve(self, line: str) -> Server:
        """Start a server: ``%serve ENGINE MODEL [options] [-- extra engine flags]``.

        ``%serve attach URL [--api-key KEY] [--name NAME]`` watches a server servekit did not start."""
        own, extra = split_extra(line)
        args = parse_argstring(self.serve, own)
        if args.engine == "attach":
            try:
                server = attach(args.model, api_key=args.api_key, name=args.name)
            except ServekitError as exc:
                raise _fail(exc) from None
            print(f"Attached {server.name}: {server.engine.display_name} serving {server.model!r} at {server.base_url}")
            return server
        if args.api_key is not None and args.no_api_key:
            raise UsageError("Give --api-key KEY or --no-api-key, not both.")
        options: dict[str, Any] = {
            key: value for key, value in (("name", args.name), ("port", args.port), ("host", args.host),
                                          ("ctx", args.ctx), ("parallel", args.parallel), ("cpu", args.cpu),
                                          ("api_key", "" if args.no_api_key else args.api_key)) if value is not None
        }
        started = time.monotonic()
        try:
            server = _running_twin(args.name, args.engine, args.model)
            if server is not None:
                print(f"{server.name} is already running ({server.engine.display_name}, {args.model}): reusing it. "
                      f"`%stop {server.name}` first to start it anew.", flush=True)
            else:
                print(f"Starting {get_engine(args.engine).display_name} with {args.model} …", flush=True)
                server = serve(args.engine, args.model, lora=args.lora, extra_args=extra, timeout=args.timeout,
                               detach=args.keep, **options)
                print(f"{server.name} is ready at {server.base_url} after {time.monotonic() - started:.1f} s "
                      f"(log: {server.log_path})", flush=True)
        except ServekitError as exc:
            raise _fail(exc) from None
        if args.export:
            os.environ.update(server.env())
            print("OPENAI_BASE_URL and OPENAI_API_KEY are set in this kernel.", flush=True)
        else:
            key = f"server.api_key, or `!servekit key {server.name}`" if server.api_key else "no key"
            print(f"API key: {key}; server.env() (or --export) gives OPENAI_BASE_URL/OPENAI_API_KEY.", flush=True)
        if not args.quiet:
            server.view = _panel(server)  # the cell's result shows as the live panel, not the table
        return server

    @line_magic
    def servers(self, line: str) -> ServerTable:
        """List running servers, from this kernel and any other process (orphans included)."""
        return ServerTable(running())

    @magic_arguments()
    @argument("name", nargs="?", help="server name (see %servers)")
    @argument("--all", action="store_true", help="stop every running server")
    @line_magic
    def stop(self, line: str) -> None:
        """Stop a server: ``%stop NAME`` or ``%stop --all``."""
        args = parse_argstring(self.stop, line)
        if not args.all and not args.name:
            raise UsageError("Give a server name (see %servers) or --all.")
        try:
            names = stop_all() if args.all else [_stop_one(args.name)]
        except ServekitError as exc:
            raise _fail(exc) from None
        print(f"Stopped: {', '.join(names)}" if names else "No servers were running.")

    @magic_arguments()
    @argument("name", nargs="?", help="server name (default: the newest)")
    @argument("-n", type=int, default=40, help="number of lines")
    @line_magic
    def logs(self, line: str) -> None:
        """Show the last lines of a server's log: ``%logs NAME [-n N]``."""
        args = parse_argstring(self.logs, line)
        try:
            server = get_server(args.name)
        except ServekitError as exc:
            raise _fail(exc) from None
        print(server.logs(args.n), end="")

    @line_magic
    def bench(self, line: str) -> Any:
        """Put load on servers and measure every request: ``%bench [NAME …] --concurrency 1,2,4,8 --requests 64``.

        Shows a progress bar and a live chart (client and server side by side); a single run returns its
        result, a list of levels or several servers sweep: a throughput–latency plot, and the table
        (a DataFrame, one row per server and level) as the result. ``%bench --help`` lists the options (the same as ``servekit bench``)."""
        from IPython.display import display

        from .bench import commandline

        if line.split()[:1] in (["--help"], ["-h"]):
            print(commandline.usage())
            return None
        try:
            args = commandline.parse_line(line)
            work = commandline.plan(args, _bench_servers(args.name))
        except ServekitError as exc:
            raise _fail(exc) from None
        chart = _bench_chart(work.servers)
        if chart is not None:
            display(chart)
        try:
            outcome = commandline.execute(work, on_progress=chart)
            if args.save:
                print(f"saved: {commandline.save(outcome, args.save)}")
        except ServekitError as exc:
            raise _fail(exc) from None
        finally:
            if chart is not None:
                chart.finish()
        if not work.is_sweep:
            return outcome
        from .bench import plot

        display(plot(outcome))
        return outcome

    @magic_arguments()
    @argument("name", nargs="?", help="server name (default: the newest)")
    @argument("--max-tokens", type=int, default=256)
    @argument("--temperature", type=float, default=None)
    @argument("--system", default=None, help="system prompt")
    @cell_magic
    def chat(self, line: str, cell: str) -> None:
        """Send the cell as a chat message and stream the reply: ``%%chat [NAME]``.

        An interrupt (the stop button) ends the reply and closes the request; the server stays ready."""
        args = parse_argstring(self.chat, line)
        messages = ([{"role": "system", "content": args.system}] if args.system else [])
        messages.append({"role": "user", "content": cell.strip()})
        extra = {"temperature": args.temperature} if args.temperature is not None else {}
        try:
            server = get_server(args.name)
            stream = server.client().chat.completions.create(
                model=server.model, messages=messages, max_tokens=args.max_tokens, stream=True, **extra
            )
            with stream:
                for chunk in stream:
                    if chunk.choices and chunk.choices[0].delta.content:
                        sys.stdout.write(chunk.choices[0].delta.content)
                        sys.stdout.flush()
        except ServekitError as exc:
            raise _fail(exc) from None
        except KeyboardInterrupt:
            sys.stdout.write("\n[interrupted: the request was closed; the server is still ready]")
        sys.stdout.write("\n")


def _panel(server: Server) -> Any:
    """The live panel %serve shows, or None where ipywidgets is missing (the table shows instead)."""
    try:
        from .widgets import panel_for
    except ImportError:
        return None
    return panel_for(server)


def _bench_servers(names: list[str]) -> list[Server]:
    return [get_server(name) for name in names] or [get_server(None)]


def _bench_chart(servers: list[Server]) -> Any:
    """The live chart for ``%bench``, or None where ipywidgets/plotly are missing (the bar still shows)."""
    try:
        from .widgets import BenchChart
    except ImportError:
        return None
    return BenchChart(servers)


def _running_twin(name: str | None, engine: str, model: str) -> Server | None:
    """The listed, running server called ``name`` if it was started with this engine and model; a clear
    error if that name belongs to another server; None when the name is free (or no name was given)."""
    if not name:
        return None
    wanted = get_engine(engine).name
    for server in running():
        if server.name != name or not server.is_running():
            continue
        if server.engine.name == wanted and server.record.source_model == model:
            return server
        raise NameTaken(f"A server named {name!r} is already running {server.engine.display_name} with "
                        f"{server.record.source_model or server.model}: `%stop {name}` first, or choose another --name.")
    return None


def _stop_one(name: str) -> str:
    get_server(name).stop()
    return name
