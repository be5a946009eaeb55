"""``vlkit`` command line: one module per command group, each adding its sub-commands."""
from __future__ import annotations

import argparse
import sys

from . import caption, convert, embed, eval, tokenize, train


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vlkit", description="Vision-language models: train, evaluate, use.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in (caption, convert, embed, eval, tokenize, train):
        group.add_commands(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args) or 0
    except (FileNotFoundError, ValueError, KeyError, TypeError) as e:
        print(f"vlkit {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
