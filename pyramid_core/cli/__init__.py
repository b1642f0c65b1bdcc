"""Command line: `pyramid generate|eval|bench|recency|convert ...` (or `python -m pyramid_core ...`),
one module per command, each with add_arguments(parser) and run(args) -> dict.

The CLI is the one place in pyramid_core that prints; everything else logs.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from . import bench, convert, eval, generate, recency

COMMANDS = {"generate": generate, "eval": eval, "bench": bench, "recency": recency, "convert": convert}


def main(argv: list[str] | None = None, prog: str = "pyramid") -> int:
    parser = argparse.ArgumentParser(prog=prog,
                                     description="KV-cache compression studio: generate, evaluate, benchmark.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, module in COMMANDS.items():
        module.add_arguments(sub.add_parser(name, help=module.__doc__.strip().splitlines()[0]))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        result = COMMANDS[args.command].run(args)
    except (ValueError, OSError) as err:  # user mistakes and missing files: a sentence, not a traceback
        print(f"error: {err}", file=sys.stderr)
        return 2
    if isinstance(result, dict) and getattr(args, "json", False):
        print(json.dumps(result))
    return 0
