"""``vlkit embed``: images and/or texts -> embeddings in ``.npy`` files.

    vlkit embed --model runs/clip-shapes --images photos/ --texts captions.txt --out embeddings/

writes ``image_embeddings.npy`` (N_img, D) with ``image_files.txt`` (one path per row, in order)
and ``text_embeddings.npy`` (N_txt, D) with ``texts.txt``; float32, L2-normalised unless
``--no-normalize``. Unreadable images are skipped and listed at the end.
"""
from __future__ import annotations

import argparse
from pathlib import Path

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def add_commands(commands) -> None:
    p = commands.add_parser("embed", help="embed images and/or texts into .npy files",
                            description="Embed images and/or texts with a two-tower model (CLIP).")
    p.add_argument("--model", required=True, help="model folder, run folder, or training checkpoint (.pt)")
    p.add_argument("--images", nargs="+", default=[], metavar="PATH",
                   help="image files and/or folders (searched recursively for image files)")
    p.add_argument("--texts", metavar="FILE", help="text file, one text per line")
    p.add_argument("--text", action="append", default=[], help="a text to embed (repeatable)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--tokenizer", default="clip", help="tokenizer name or folder (default: clip)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="auto")
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


def run(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    import vlkit

    from ..data.folder import SkipReport
    from ..eval.retrieval import encode_images, encode_texts
    from .eval import load_model, resolve_device

    texts = list(args.text)
    if args.texts:
        path = Path(args.texts)
        if not path.is_file():
            raise FileNotFoundError(f"text file {path} does not exist")
        texts += [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    files = find_images(args.images)
    if not files and not texts:
        raise ValueError("nothing to embed: give --images and/or --texts/--text (image folders held no image files)")
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be positive, got {args.batch_size}")
    device = resolve_device(args.device)
    model = load_model(args.model).to(device).eval()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    if files:
        from ..data.loader import eval_loader

        skipped, kept = [], []

        def collate(items):
            skipped.extend(it["skipped"] for it in items if "skipped" in it)
            keep = [it for it in items if "skipped" not in it]
            kept.extend(files[it["index"]] for it in keep)
            return torch.stack([it["pixel_values"] for it in keep]) if keep else None

        ds = _ImageFiles(files, vlkit.image_transform(model))
        batches = (b for b in eval_loader(ds, collate, args.batch_size) if b is not None)
        total = -(-len(files) // args.batch_size)
        if len(skipped) == len(files):
            raise ValueError("no image could be read")
        feats = encode_images(model, batches, device=device, normalize=args.normalize, progress=True, total=total)
        np.save(out / "image_embeddings.npy", feats.numpy())
        (out / "image_files.txt").write_text("".join(f"{p}\n" for p in kept), encoding="utf-8")
        print(f"{len(kept)} images -> {out / 'image_embeddings.npy'} {tuple(feats.shape)}")
        if skipped:
            print(SkipReport(skipped).summary(len(files)))
    if texts:
        tok = vlkit.get_tokenizer(args.tokenizer)
        feats = encode_texts(model, tok, texts, batch_size=args.batch_size, device=device, normalize=args.normalize,
                             progress=True)
        np.save(out / "text_embeddings.npy", feats.numpy())
        (out / "texts.txt").write_text("".join(t.replace("\n", " ") + "\n" for t in texts), encoding="utf-8")
        print(f"{len(texts)} texts -> {out / 'text_embeddings.npy'} {tuple(feats.shape)}")
    return 0
