"""``vlkit embed``: images and/or texts -> embeddings in ``.npy`` files.

    vlkit embed --model runs/clip-shapes --images photos/ --texts captions.txt --out embeddings/

writes ``image_embeddings.npy`` (N_img, D) with ``image_files.txt`` (one path per row, in order)
and ``text_embeddings.npy`` (N_txt, D) with ``texts.txt``; float32, L2-normalised unless
``--no-normalize``. Unreadable images are skipped and listed at the end.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from ..data.annotations import read_utf8
from ..data.image_files import IMAGE_SUFFIXES, find_images
from ..data.image_files import ImageFiles as _ImageFiles
from ..eval.embedding import embed_image_files
from ..eval.embedding import progress_default as _progress
from ..eval.resolve import load_model, load_tokenizer, require_embedder
from ..eval.retrieval import encode_texts
from ..runtime import PRECISIONS, check_precision, resolve_device
from .output import write_atomic, write_text

__all__ = ["IMAGE_SUFFIXES", "_ImageFiles", "add_commands", "find_images", "run"]


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
    add_precision_argument(p)
    p.add_argument("--no-normalize", dest="normalize", action="store_false", help="keep features un-normalised")
    p.set_defaults(run=run)


def add_precision_argument(p: argparse.ArgumentParser) -> None:
    """``--precision {auto,bf16,fp32}`` (checked by :func:`vlkit.runtime.check_precision` in the
    command, so that a bad value is a one-line error)."""
    p.add_argument(
        "--precision",
        default="auto",
        metavar="{" + ",".join(PRECISIONS) + "}",
        help="auto (default): bf16 autocast on CUDA, and on a CPU with native bf16 (AVX512-BF16/AMX) for "
        "models wide enough that it pays, else float32 (docs/precision.md); bf16; fp32",
    )


def _read_texts(args) -> list[str]:
    texts = list(args.text)
    if args.texts:
        path = Path(args.texts)
        if not path.is_file():
            raise FileNotFoundError(f"text file {path} does not exist")
        texts += [line.strip() for line in read_utf8(path).splitlines() if line.strip()]
    return texts


def _embed_images(model, files: list[Path], out: Path, args, device: torch.device) -> None:
    result = embed_image_files(
        model,
        files,
        batch_size=args.batch_size,
        device=device,
        precision=args.precision,
        normalize=args.normalize,
        progress=_progress(),
    )
    feats = result.features  # (N, D)
    kept = [files[i] for i in result.kept]
    write_atomic(out / "image_embeddings.npy", lambda f: np.save(f, feats.numpy()))
    write_text(out / "image_files.txt", "".join(f"{p}\n" for p in kept))
    print(f"{len(kept)} images -> {out / 'image_embeddings.npy'} {tuple(feats.shape)}")
    if result.skipped:
        print(result.skipped.summary(len(files)))


def _embed_texts(model, tokenizer, texts: list[str], out: Path, args, device: torch.device) -> None:
    feats = encode_texts(
        model,
        tokenizer,
        texts,
        batch_size=args.batch_size,
        device=device,
        precision=args.precision,
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
    check_precision(args.precision, "--precision")
    device = resolve_device(args.device)
    model = require_embedder(load_model(args.model), args.model).to(device).eval()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if files:
        _embed_images(model, files, out, args, device)
    if texts:
        _embed_texts(model, load_tokenizer(args.model, model, args.tokenizer), texts, out, args, device)
    return 0
