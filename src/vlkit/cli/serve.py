"""``vlkit serve``: the web page of an image index (search by text or image, zero-shot labels).

    vlkit serve --index photos.index [--model runs/clip-shapes] [--host 127.0.0.1] [--port 8000]

Needs the ``search`` extra. The page and its JSON API: :mod:`vlkit.search.app`. ``--captioner``
(a captioning BLIP, or a blip-vqa run's model) adds captions and questions about a result.
"""

from __future__ import annotations

import argparse

from .. import search


def add_commands(commands) -> None:
    p = commands.add_parser("serve", help="serve the search page of an image index",
                            description="A web page (and JSON API) to search an image index.")  # fmt: skip
    p.add_argument("--index", required=True, help="the index folder (vlkit index build)")
    p.add_argument("--model", default=None, help="the index's model from another place (default: where it was)")
    p.add_argument("--captioner", default=None, help="a captioning BLIP for captions and questions about results")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--max-upload-mb", type=float, default=10.0, help="largest image upload accepted (MB)")
    p.add_argument("--device", default="cpu")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..search.app import create_app
    from ..search.assist import Assistant
    from ..search.extras import require

    uvicorn = require("uvicorn")
    searcher = search.Searcher(args.index, args.model, device=args.device)
    assistant = Assistant.load(args.captioner, args.device) if args.captioner else None
    app = create_app(searcher, assistant=assistant, max_upload_bytes=int(args.max_upload_mb * 1024 * 1024))
    print(f"serving {len(searcher.data.entries)} images of {args.index} at http://{args.host}:{args.port}/", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0
