"""``vlkit index``: build, update and export a searchable index of a folder of images.

    vlkit index build --model runs/clip-shapes --images photos/ --out photos.index [--ann hnsw]
    vlkit index update photos.index
    vlkit index export photos.index --parquet photos.parquet

Needs the ``search`` extra (``pip install 'vlkit[search]'``). Runs unchanged under torchrun
(each process embeds a slice; rank 0 writes the index). The layout: :mod:`vlkit.search.store`.
"""

from __future__ import annotations

import argparse

from .. import search
from ..runtime import check_precision
from .embed import add_precision_argument


def _embedding_options(p) -> None:
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=None, help="data worker processes decoding images (default: auto, "
                   "none on a CPU for files little larger than the model's input, else up to 4)")  # fmt: skip
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:N, mps")
    add_precision_argument(p)


def add_commands(commands) -> None:
    group = commands.add_parser("index", help="build, update and export an image search index",
                                description="A searchable index of a folder of images (FAISS + SQLite).")  # fmt: skip
    sub = group.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = sub.add_parser("build", help="embed every image of a folder into a new index")
    p.add_argument("--model", required=True, help="a two-tower model (CLIP, ALBEF, BLIP): folder, run or checkpoint")
    p.add_argument("--images", required=True, help="the folder of images (searched recursively)")
    p.add_argument("--out", required=True, help="the index folder to write")
    p.add_argument("--ann", choices=search.ANN_KINDS, default="flat", help="exact (flat, default) or approximate")
    p.add_argument("--ann-recall", type=float, default=search.DEFAULT_RECALL, help="target recall@10 of --ann")
    p.add_argument("--overwrite", action="store_true", help="replace an existing index (atomically)")
    p.add_argument("--captioner", default=None, help="a captioning BLIP: store a caption for every image")
    _embedding_options(p)
    p.set_defaults(run=_build)
    p = sub.add_parser("update", help="embed new and changed images, drop deleted ones")
    p.add_argument("index", help="the index folder")
    p.add_argument("--model", default=None, help="the index's model from another place (default: where it was)")
    p.add_argument("--ann", choices=search.ANN_KINDS, default=None, help="change the index kind")
    p.add_argument("--ann-recall", type=float, default=None, help="target recall@10 (default: the index's)")
    p.add_argument("--captioner", default=None, help="caption new images with this BLIP (default: the index's)")
    _embedding_options(p)
    p.set_defaults(run=_update)
    p = sub.add_parser("export", help="write embeddings + metadata for vector databases")
    p.add_argument("index", help="the index folder")
    p.add_argument("--parquet", required=True, metavar="OUT", help="the Parquet file to write")
    p.set_defaults(run=_export)


def _options(args) -> dict:
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be positive, got {args.batch_size}")
    if args.workers is not None and args.workers < 0:
        raise ValueError(f"--workers must be >= 0, got {args.workers}")
    precision = check_precision(args.precision, "--precision")
    options = dict(batch_size=args.batch_size, num_workers=args.workers, device=args.device, precision=precision)
    return dict(options, progress=search.progress(), ann_recall=args.ann_recall)


def _print_report(report) -> int:
    if not report.version:  # not rank 0 under torchrun
        return 0
    print(report.summary())
    if report.tuning is not None:
        print(f"approximate index {report.tuning.summary()}")
    if report.skipped:
        print(report.skipped.summary())
    return 0


def _build(args: argparse.Namespace) -> int:
    options = _options(args)
    report = search.build_index(
        args.out, args.model, args.images, ann=args.ann, overwrite=args.overwrite, captioner=args.captioner, **options
    )
    return _print_report(report)


def _update(args: argparse.Namespace) -> int:
    options = _options(args)
    return _print_report(
        search.update_index(args.index, model=args.model, ann=args.ann, captioner=args.captioner, **options)
    )


def _export(args: argparse.Namespace) -> int:
    rows = search.export_parquet(args.index, args.parquet)
    print(f"{rows} rows -> {args.parquet}")
    return 0
