"""IPython magics: a thin layer over servekit's Python API (``%load_ext servekit``)."""

from __future__ import annotations

import shlex
import sys
import time
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring

from .display import ServerTable
from .engines import get_engine
from .errors import ServekitError
from .server import Server, get_server, running, serve, stop_all


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
    """%serve, %servers, %stop, %logs and %%chat."""

    @magic_arguments()
    @argument("engine", help="vllm, llamacpp (llama.cpp) or sglang")
    @argument("model", help="a demo name (demo, demo:Q4_K_M), a local path or a Hugging Face id")
    @argument("--name", help="servekit's name for the server (default: from the model)")
    @argument("--port", type=int, help="port (default: a free one)")
    @argument("--ctx", type=int, help="context length in tokens")
    @argument("--parallel", type=int, help="concurrent sequences / slots")
    @argument("--lora", action="append", default=[], metavar="NAME=PATH", help="LoRA adapter at start (repeatable)")
    @argument("--cpu", action="store_true", default=None, help="run the engine on the CPU")
    @argument("--timeout", type=float, help="seconds to wait for readiness")
    @line_magic
    def serve(self, line: str) -> Server:
        """Start a server: ``%serve ENGINE MODEL [options] [-- extra engine flags]``."""
        own, extra = split_extra(line)
        args = parse_argstring(self.serve, own)
        options: dict[str, Any] = {
            key: value for key, value in (("name", args.name), ("port", args.port), ("ctx", args.ctx),
                                          ("parallel", args.parallel), ("cpu", args.cpu)) if value is not None
        }
        started = time.monotonic()
        try:
            print(f"Starting {get_engine(args.engine).display_name} with {args.model} …", flush=True)
            server = serve(args.engine, args.model, lora=args.lora, extra_args=extra, timeout=args.timeout, **options)
        except ServekitError as exc:
            raise _fail(exc) from None
        print(f"{server.name} is ready at {server.base_url} after {time.monotonic() - started:.1f} s "
              f"(log: {server.log_path})", flush=True)
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

    @magic_arguments()
    @argument("name", nargs="?", help="server name (default: the newest)")
    @argument("--max-tokens", type=int, default=256)
    @argument("--temperature", type=float, default=None)
    @argument("--system", default=None, help="system prompt")
    @cell_magic
    def chat(self, line: str, cell: str) -> None:
        """Send the cell as a chat message and stream the reply: ``%%chat [NAME]``."""
        args = parse_argstring(self.chat, line)
        try:
            server = get_server(args.name)
        except ServekitError as exc:
            raise _fail(exc) from None
        messages = ([{"role": "system", "content": args.system}] if args.system else [])
        messages.append({"role": "user", "content": cell.strip()})
        extra = {"temperature": args.temperature} if args.temperature is not None else {}
        stream = server.client().chat.completions.create(
            model=server.model, messages=messages, max_tokens=args.max_tokens, stream=True, **extra
        )
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                sys.stdout.write(chunk.choices[0].delta.content)
                sys.stdout.flush()
        sys.stdout.write("\n")


def _stop_one(name: str) -> str:
    get_server(name).stop()
    return name
