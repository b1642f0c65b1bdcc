"""Command line: `python -m pyramid_core generate|eval|bench|recency|convert ...`.

The CLI is the one place in pyramid_core that prints; everything else logs.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from . import cli_generate

COMMANDS = {"generate": cli_generate}


def _optional_commands() -> dict:
    """Commands whose modules land in later steps register here when present."""
    import importlib

    found = {}
    for name in ("eval", "bench", "recency", "convert"):
        try:
            found[name] = importlib.import_module(f".cli_{name}", __package__)
        except ModuleNotFoundError as err:
            if err.name != f"{__package__}.cli_{name}":
                raise
    return found


def main(argv: list[str] | None = None) -> int:
    commands = {**COMMANDS, **_optional_commands()}
    parser = argparse.ArgumentParser(prog="python -m pyramid_core",
                                     description="KV-cache compression studio: generate, evaluate, benchmark.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, module in commands.items():
        module.add_arguments(sub.add_parser(name, help=module.__doc__.strip().splitlines()[0]))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        result = commands[args.command].run(args)
    except (ValueError, OSError) as err:  # user mistakes and missing files: a sentence, not a traceback
        print(f"error: {err}", file=sys.stderr)
        return 2
    if isinstance(result, dict) and getattr(args, "json", False):
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
