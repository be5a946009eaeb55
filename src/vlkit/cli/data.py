"""``vlkit data shard``: image-text pairs from an annotation file -> WebDataset tar shards.

    vlkit data shard train.csv --out shards/ --shard-size 1000 --image-size 256

reads the CSV/JSONL (and its images) as training does (``data.kind: folder``), writes
``shards/shard-000000.tar``, ... with the image under ``jpg``/``png``/``webp``, the caption under
``txt`` and ``{"path", "index"}`` under ``json``, and prints the summary and the
``data.train_shards`` pattern to train on them with ``data.kind: webdataset``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from tqdm.auto import tqdm

from ..data.folder import ImageTextFolder
from ..data.shards import write_shards


def add_commands(commands) -> None:
    p = commands.add_parser("data", help="data tools (write WebDataset shards)", description="Data tools.")
    sub = p.add_subparsers(dest="data_command", required=True, metavar="SUBCOMMAND")
    s = sub.add_parser(
        "shard",
        help="write WebDataset tar shards from a CSV/JSONL + images folder",
        description="Write image-caption pairs as WebDataset tar shards (jpg/png/webp + txt + json per sample).",
    )
    s.add_argument("annotations", metavar="ANNOTATIONS", help="CSV (with a header) or JSONL file of image, caption")
    s.add_argument("--out", required=True, help="output folder for the shards (appears whole or not at all)")
    s.add_argument("--shard-size", type=int, default=1000, help="samples per shard (default 1000)")
    s.add_argument("--image-size", type=int, default=None, help="resize so the shorter side is at most this")
    s.add_argument("--root", default=None, help="image paths are relative to this (default: the file's folder)")
    s.add_argument("--image-key", default=None, help="image column (default: image, filepath, ...)")
    s.add_argument("--caption-key", default=None, help="caption column (default: caption, text, title)")
    s.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    s.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    s.set_defaults(run=run_shard)


def run_shard(args) -> int:
    if args.shard_size < 1:
        raise ValueError(f"--shard-size must be a positive number of samples, got {args.shard_size}")
    if args.image_size is not None and args.image_size < 1:
        raise ValueError(f"--image-size must be a positive number of pixels, got {args.image_size}")
    pairs = ImageTextFolder(
        Path(args.annotations), root=args.root, image_key=args.image_key, caption_key=args.caption_key
    )
    with tqdm(total=len(pairs.samples), desc="shard", unit="img", disable=not args.progress, file=sys.stderr) as bar:
        summary = write_shards(
            pairs.samples,
            args.out,
            shard_size=args.shard_size,
            image_size=args.image_size,
            overwrite=args.overwrite,
            root=pairs.root,
            on_sample=bar.update,
        )
    summary.skipped.add(pairs.skipped_at_load)
    for line in summary.lines():
        print(line)
    return 0
