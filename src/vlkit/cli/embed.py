"""``vlkit embed``: images and/or texts -> embeddings in ``.npy`` files.

    vlkit embed --model runs/clip-shapes --images photos/ --texts captions.txt --out embeddings/

writes ``image_embeddings.npy`` (N_img, D) with ``image_files.txt`` (one path per row, in order)
and ``text_embeddings.npy`` (N_txt, D) with ``texts.txt``; float32, L2-normalised unless
``--no-normalize``. Unreadable images are skipped and listed at the end.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

import vlkit

from ..data.annotations import read_utf8
from ..data.folder import SkipReport
from ..eval.harness import ImageBatches
from ..eval.resolve import load_model, load_tokenizer, require_embedder
from ..eval.retrieval import encode_images, encode_texts
from ..runtime import resolve_device
from .output import write_atomic, write_text

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def add_commands(commands) -> None:
    p = commands.add_parser(
        "embed",
        help="embed images and/or texts into .npy files",
        description="Embed images and/or texts with a two-tower model (CLIP, ALBEF, BLIP).",
    )
    p.add_argument(
        "--model",
        required=True,
        help="model folder, run folder, training checkpoint (.pt), or anything vlkit.from_pretrained reads",
    )
    p.add_argument(
        "--images",
        nargs="+",
        default=[],
        metavar="PATH",
        help="image files and/or folders (searched recursively for image files)",
    )
    p.add_argument("--texts", metavar="FILE", help="text file, one text per line")
    p.add_argument("--text", action="append", default=[], help="a text to embed (repeatable)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument(
        "--tokenizer",
        default=None,
        help="tokenizer name or folder (default: the model's own, else bert-base-uncased for BLIP and ALBEF, "
        "clip for the others)",
    )
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:N, mps")
    p.add_argument("--no-normalize", dest="normalize", action="store_false", help="keep features un-normalised")
    p.set_defaults(run=run)


def find_images(paths: list[str]) -> list[Path]:
    """Image files named directly, and those under named folders (sorted), in argument order."""
    found: list[Path] = []
    for text in paths:
        path = Path(text)
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        elif path.is_file():
            found.append(path)
        else:
            raise FileNotFoundError(f"image path {path} does not exist")
    return found


class _ImageFiles:
    """A dataset of image files: ``{"pixel_values", "index"}``, or a skip record for a file that
    cannot be decoded (:func:`vlkit.data.skips.load_or_skip`)."""

    def __init__(self, files: list[Path], transform) -> None:
        self.files, self.transform = files, transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> dict:
        from ..data.skips import load_or_skip

        return load_or_skip(self.files[i], {"index": i}, transform=self.transform, source=str(self.files[i]))


def _progress() -> bool:
    """Progress bars on a terminal only (a log file gets no bar updates)."""
    return sys.stderr.isatty()


def _read_texts(args) -> list[str]:
    texts = list(args.text)
    if args.texts:
        path = Path(args.texts)
        if not path.is_file():
            raise FileNotFoundError(f"text file {path} does not exist")
        texts += [line.strip() for line in read_utf8(path).splitlines() if line.strip()]
    return texts


def _embed_images(model, files: list[Path], out: Path, args, device: torch.device) -> None:
    batches = ImageBatches(_ImageFiles(files, vlkit.image_transform(model)), args.batch_size)
    try:
        feats = encode_images(
            model, batches, device=device, normalize=args.normalize, progress=_progress(), total=len(batches)
        )  # (N, D)
    except ValueError:
        if batches.kept:
            raise
        raise ValueError(f"no image could be read: {SkipReport(batches.skipped).summary(len(files))}") from None
    kept = [files[i] for i in batches.kept]
    write_atomic(out / "image_embeddings.npy", lambda f: np.save(f, feats.numpy()))
    write_text(out / "image_files.txt", "".join(f"{p}\n" for p in kept))
    print(f"{len(kept)} images -> {out / 'image_embeddings.npy'} {tuple(feats.shape)}")
    if batches.skipped:
        print(SkipReport(batches.skipped).summary(len(files)))


def _embed_texts(model, tokenizer, texts: list[str], out: Path, args, device: torch.device) -> None:
    feats = encode_texts(
        model,
        tokenizer,
        texts,
        batch_size=args.batch_size,
        device=device,
        normalize=args.normalize,
        progress=_progress(),
    )  # (N, D)
    write_atomic(out / "text_embeddings.npy", lambda f: np.save(f, feats.numpy()))
    write_text(out / "texts.txt", "".join(t.replace("\n", " ") + "\n" for t in texts))
    print(f"{len(texts)} texts -> {out / 'text_embeddings.npy'} {tuple(feats.shape)}")


def run(args: argparse.Namespace) -> int:
    texts = _read_texts(args)
    files = find_images(args.images)
    if not files and not texts:
        raise ValueError("nothing to embed: give --images and/or --texts/--text (image folders held no image files)")
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be positive, got {args.batch_size}")
    device = resolve_device(args.device)
    model = require_embedder(load_model(args.model), args.model).to(device).eval()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if files:
        _embed_images(model, files, out, args, device)
    if texts:
        _embed_texts(model, load_tokenizer(args.model, model, args.tokenizer), texts, out, args, device)
    return 0
