"""``vlkit`` command line: one module per command group, each adding its sub-commands.

``main`` prints an error a user can cause (a missing or damaged file, a bad option, a model of
the wrong kind, a full disk, an unreadable image) as one line, ``vlkit CMD: error: ...``, and
returns 2; a genuine bug (any other exception) still ends in a traceback.
"""

from __future__ import annotations

import argparse
import os
import pickle
import re
import sys

import torch
from PIL.Image import DecompressionBombError
from safetensors import SafetensorError

from . import caption, chat, convert, data, embed, eval, tokenize, train

# isort: split
from . import classify, index, search, serve

# What a user can cause. ValueError covers vlkit.CheckpointError, JSON and UnicodeDecodeError;
# OSError covers missing files, permissions and a full disk; KeyError and TypeError are what
# vlkit raises for an unknown name and an object of the wrong kind (a model for another task).
USER_ERRORS: tuple[type[BaseException], ...] = (
    ValueError,
    OSError,
    KeyError,
    TypeError,
    SafetensorError,  # a truncated or empty .safetensors file
    pickle.UnpicklingError,  # a checkpoint whose pickle torch refuses to run (weights_only)
    DecompressionBombError,  # an image too large to decode safely
    torch.cuda.OutOfMemoryError,  # a batch too large for the GPU
)

_ANSI = re.compile(r"\x1b\[[0-9;]*m")  # terminal colours some libraries put into messages


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vlkit", description="Vision-language models: train, evaluate, use.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in (caption, chat, convert, data, embed, eval, tokenize, train):
        group.add_commands(commands)
    for group in (index, search, serve, classify):
        group.add_commands(commands)
    return parser


def error_line(error: BaseException) -> str:
    """One line for ``error``: its message's first line (a KeyError's without the quotes); the
    type's name in front where the type says something the message does not."""
    if isinstance(error, KeyError) and len(error.args) == 1 and isinstance(error.args[0], str):
        text = error.args[0]
    else:
        text = str(error)
    lines = [line.strip() for line in _ANSI.sub("", text).splitlines() if line.strip()]
    text = lines[0] if lines else ""
    if isinstance(error, torch.cuda.OutOfMemoryError):
        return f"out of GPU memory ({text}); try a smaller --batch-size"
    if not text or not isinstance(error, (ValueError, OSError, KeyError, TypeError)):
        return f"{type(error).__name__}: {text}" if text else type(error).__name__
    return text


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args) or 0
    except BrokenPipeError:  # the reader of our output went away (`vlkit caption ... | head -1`)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 1
    except KeyboardInterrupt:
        print(f"vlkit {args.command}: interrupted", file=sys.stderr)
        return 130
    except USER_ERRORS as e:
        print(f"vlkit {args.command}: error: {error_line(e)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
