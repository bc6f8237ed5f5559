"""Run inside SGLang's own interpreter by ``servekit.engines.sglang.check_many``; never imported by servekit.

Reads a JSON list of SGLang argument lists on stdin. Each is checked three ways: every ``--flag``
must be one of SGLang's option strings exactly (argparse would silently accept a renamed flag
as an abbreviation of a longer one), ``prepare_server_args`` must parse it, and
``ServerArgs.resolve_once()`` must resolve it. Prints one ``SERVEKIT_RESULT {json}`` line per list.
"""

import argparse
import contextlib
import difflib
import io
import json
import sys

SHOWN = (
    "model_path", "served_model_name", "host", "port", "device", "dtype", "quantization", "context_length",
    "max_running_requests", "max_total_tokens", "tp_size", "mem_fraction_static", "enable_lora", "lora_paths",
    "max_lora_rank", "lora_target_modules", "tool_call_parser", "enable_metrics",
)


def known_flags():
    from sglang.srt.server_args import ServerArgs

    parser = argparse.ArgumentParser(prog="sglang serve")
    ServerArgs.add_cli_args(parser)
    return set(parser._option_string_actions)


def check(argv, known):
    from sglang.srt.server_args import prepare_server_args

    for token in argv:
        flag = token.split("=", 1)[0]
        if token.startswith("--") and flag not in known:
            close = difflib.get_close_matches(flag, sorted(known), n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            return {"ok": False, "error": f"unrecognized argument {flag}{hint}"}
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            args = prepare_server_args(list(argv))
    except SystemExit:
        errors = [line.split(": error: ", 1)[1] for line in stderr.getvalue().splitlines() if ": error: " in line]
        return {"ok": False, "error": errors[-1] if errors else stderr.getvalue().strip()[-500:]}
    try:
        args.resolve_once()
    except Exception as exc:  # noqa: BLE001 - reported with SGLang's own words
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    shown = {key: getattr(args, key, None) for key in SHOWN}
    if getattr(args, "api_key", None):
        shown["api_key"] = "set"
    return {"ok": True, "args": shown}


def main():
    arg_lists = json.load(sys.stdin)
    known = known_flags()
    for index, argv in enumerate(arg_lists):
        result = check(argv, known)
        result["index"] = index
        print("SERVEKIT_RESULT " + json.dumps(result, default=str), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
