"""``vlkit search``: the nearest images of an index to a text or an image.

    vlkit search photos.index --text "a red circle" -k 5
    vlkit search photos.index --image query.jpg --json

prints ``score  path`` per hit, best first, or with ``--json`` a list of ``{"path", "score"}``;
paths are relative to the indexed folder (as the index stores them).
"""

from __future__ import annotations

import argparse
import json

from .. import search
from ..data.images import load_image


def add_commands(commands) -> None:
    p = commands.add_parser("search", help="search an image index by text or by image",
                            description="The nearest images of an index (vlkit index build) to a text or an image.")  # fmt: skip
    p.add_argument("index", help="the index folder")
    query = p.add_mutually_exclusive_group(required=True)
    query.add_argument("--text", help="a text query")
    query.add_argument("--image", metavar="FILE", help="an image file to search by example")
    p.add_argument("-k", type=int, default=10, help="how many results (default 10)")
    p.add_argument("--json", action="store_true", help='print a JSON list of {"path": ..., "score": ...}')
    p.add_argument("--model", default=None, help="the index's model from another place (default: where it was)")
    p.add_argument("--device", default="cpu")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.k < 1:
        raise ValueError(f"-k must be >= 1, got {args.k}")
    searcher = search.Searcher(args.index, args.model, device=args.device)
    if args.text is not None:
        hits = searcher.search_text(args.text, args.k)
    else:
        hits = searcher.search_image(load_image(args.image), args.k)
    if args.json:
        print(json.dumps([h.to_dict() for h in hits]))
    else:
        for h in hits:
            print(f"{h.score:.4f}  {h.path}")
    return 0
