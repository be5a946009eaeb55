"""``vlkit classify``: zero-shot labels for a folder of images, as CSV.

    vlkit classify --model runs/clip-shapes --images photos/ --classes "circle,square,star" --out labels.csv

writes ``path,label,score`` and one column per class (the cosine similarity of the image to the
class's prompts), one row per readable image; paths relative to the ``--images`` folder.
Unreadable images are skipped and listed. Without ``--out`` the CSV goes to standard output.
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
from pathlib import Path

from ..data.image_files import find_images
from ..eval.embedding import progress_default
from ..eval.resolve import load_model_and_tokenizer, require_embedder
from ..runtime import resolve_device
from ..search.classify import classify_files, parse_classes
from .output import write_text


def add_commands(commands) -> None:
    p = commands.add_parser("classify", help="zero-shot labels for a folder of images (CSV)",
                            description="Zero-shot classification of a folder of images with a two-tower model.")  # fmt: skip
    p.add_argument("--model", required=True, help="a two-tower model (CLIP, ALBEF, BLIP): folder, run or checkpoint")
    p.add_argument("--images", required=True, help="a folder of images (searched recursively) or one image")
    p.add_argument("--classes", required=True, help='comma-separated class names, e.g. "cat,dog,car"')
    p.add_argument("--template", action="append", default=None,
                   help='prompt template with {} for the class (repeatable; default "a photo of a {}.")')  # fmt: skip
    p.add_argument("--out", default=None, help="CSV file to write (default: standard output)")
    p.add_argument("--tokenizer", default=None, help="tokenizer name or folder (default: the model's own)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=0, help="data worker processes decoding images")
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:N, mps")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    classes = parse_classes(args.classes)
    root = Path(args.images)
    files = find_images([root])
    if not files:
        raise ValueError(f"no image files under {root}")
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be positive, got {args.batch_size}")
    device = resolve_device(args.device)
    model, tokenizer = load_model_and_tokenizer(args.model, args.tokenizer)
    model = require_embedder(model, args.model).to(device).eval()
    result = classify_files(
        model, tokenizer, files, classes, templates=args.template or ("a photo of a {}.",), batch_size=args.batch_size,
        num_workers=args.workers, device=device, progress=progress_default(),
    )  # fmt: skip
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["path", "label", "score", *classes])
    for pos, label, row in zip(result.kept, result.labels(), result.scores.tolist()):
        path = files[pos].relative_to(root).as_posix() if root.is_dir() else str(files[pos])
        writer.writerow([path, label, f"{max(row):.4f}", *(f"{s:.4f}" for s in row)])
    if args.out:
        write_text(args.out, buffer.getvalue())
        print(f"{len(result.kept)} images labelled -> {args.out}", file=sys.stderr)
    else:
        sys.stdout.write(buffer.getvalue())
    if result.skipped:
        print(result.skipped.summary(len(files)), file=sys.stderr)
    return 0
