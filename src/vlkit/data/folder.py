"""A user's own image-text pairs: a folder of images and a CSV or JSONL file of (image, caption).

CSV files have a header row; JSONL files hold one object per line. The image column is ``image``
(also accepted: ``filepath``, ``file``, ``path``, ``image_path``) and the caption column
``caption`` (also ``text``, ``title``); ``image_key`` / ``caption_key`` name others. Image paths
are relative to ``root`` (default: the annotation file's folder) unless absolute.

Bad samples never crash a run and are never dropped silently:
- empty captions, missing files and zero-size files are found when the annotations are read;
- unreadable or truncated images are found when loaded (``__getitem__`` returns a *skip record*
  instead of a sample; :class:`vlkit.data.ImageTextCollator` drops it from the batch and passes
  it on under ``batch["skipped"]``, so it reaches the training loop even from worker processes).
Both kinds are counted and reported at the end of each epoch (:class:`SkipReport`).
"""
from __future__ import annotations

import csv
import json
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

IMAGE_KEYS = ("image", "filepath", "file", "path", "image_path")
CAPTION_KEYS = ("caption", "text", "title")


@dataclass(frozen=True)
class Skipped:
    """One sample left out: where it was, why, and the detail the reader gave."""

    source: str
    reason: str  # "empty caption" | "missing file" | "zero-size file" | "unreadable image"
    detail: str = ""


@dataclass
class SkipReport:
    """Counts of skipped samples; ``summary()`` is the end-of-epoch line."""

    skipped: list[Skipped] = field(default_factory=list)

    def add(self, items) -> None:
        self.skipped.extend(items)

    def __len__(self) -> int:
        return len(self.skipped)

    def counts(self) -> dict[str, int]:
        return dict(Counter(s.reason for s in self.skipped))

    def summary(self, total: int | None = None, examples: int = 3) -> str:
        if not self.skipped:
            return "no samples skipped"
        of = f" of {total}" if total is not None else ""
        parts = ", ".join(f"{n} {reason}" for reason, n in sorted(self.counts().items()))
        shown = "; ".join(f"{s.source} ({s.reason}{': ' + s.detail if s.detail else ''})" for s in self.skipped[:examples])
        more = f"; and {len(self.skipped) - examples} more" if len(self.skipped) > examples else ""
        return f"skipped {len(self.skipped)} samples{of} ({parts}): {shown}{more}"


def _pick_key(available, wanted: str | None, candidates: tuple[str, ...], what: str, source: Path) -> str:
    if wanted is not None:
        if wanted not in available:
            raise KeyError(f"{source}: no {what} column {wanted!r}; columns are {sorted(available)}")
        return wanted
    for key in candidates:
        if key in available:
            return key
    raise KeyError(f"{source}: no {what} column; expected one of {list(candidates)} (or pass {what}_key), found {sorted(available)}")


def image_file_problem(path: Path, rel: str) -> str | None:
    """Why an annotation row's image cannot be used before it is opened, or None."""
    if not rel or not path.is_file():
        return "missing file"
    if path.stat().st_size == 0:
        return "zero-size file"
    return None


def read_annotations(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Rows of a ``.csv`` (with a header), ``.tsv`` or ``.jsonl`` annotation file as dicts."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"annotation file {path} does not exist")
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv"):
        with path.open(newline="", encoding="utf-8") as f:
            return list(csv.DictReader(f, delimiter="\t" if suffix == ".tsv" else ","))
    if suffix in (".jsonl", ".json"):
        rows = []
        with path.open(encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if line.strip():
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError as e:
                        raise ValueError(f"{path}:{n}: not a JSON object per line ({e})") from None
                    if not isinstance(row, dict):
                        raise ValueError(f"{path}:{n}: expected a JSON object, got {type(row).__name__}")
                    rows.append(row)
        return rows
    raise ValueError(f"annotation file {path} must end in .csv, .tsv or .jsonl")


def load_image(path: str | os.PathLike) -> Image.Image:
    """Open and fully decode an image as RGB; a truncated file raises OSError."""
    with Image.open(path) as img:
        img.load()
        return img.convert("RGB")


class ImageTextFolder:
    """Image-caption pairs from an annotation file; a map-style dataset.

    ``__getitem__`` returns ``{"image" or "pixel_values", "caption", "index", "path"}``, or
    ``{"skipped": Skipped}`` when the image cannot be decoded. ``self.skipped_at_load`` lists the
    rows left out while reading the annotations.
    """

    def __init__(
        self,
        annotations: str | os.PathLike,
        root: str | os.PathLike | None = None,
        transform: Callable[[Image.Image], Any] | None = None,
        image_key: str | None = None,
        caption_key: str | None = None,
    ) -> None:
        self.annotations = Path(annotations)
        rows = read_annotations(self.annotations)
        self.root = Path(root) if root is not None else self.annotations.parent
        if not self.root.is_dir():
            raise FileNotFoundError(f"image folder {self.root} does not exist")
        self.transform = transform
        self.samples: list[tuple[Path, str]] = []
        self.skipped_at_load: list[Skipped] = []
        if not rows:
            raise ValueError(f"annotation file {self.annotations} has no rows")
        ikey = _pick_key(rows[0].keys(), image_key, IMAGE_KEYS, "image", self.annotations)
        ckey = _pick_key(rows[0].keys(), caption_key, CAPTION_KEYS, "caption", self.annotations)
        for row in rows:
            rel = str(row.get(ikey) or "").strip()
            caption = str(row.get(ckey) or "").strip()
            path = self.root / rel
            problem = "empty caption" if not caption else image_file_problem(path, rel)
            if problem:
                self.skipped_at_load.append(Skipped(rel or "<no image>", problem))
            else:
                self.samples.append((path, caption))
        if not self.samples:
            report = SkipReport(list(self.skipped_at_load))
            raise ValueError(f"{self.annotations}: no usable image-caption pairs ({report.summary(len(rows))})")
        self.rows_read = len(rows)

    def __len__(self) -> int:
        return len(self.samples)

    def captions(self) -> list[str]:
        return [c for _, c in self.samples]

    def __getitem__(self, index: int) -> dict[str, Any]:
        path, caption = self.samples[index]
        try:
            img = load_image(path)
        except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as e:
            rel = os.path.relpath(path, self.root)
            return {"skipped": Skipped(rel, "unreadable image", f"{type(e).__name__}: {e}"), "index": index}
        item: dict[str, Any] = {"caption": caption, "index": index, "path": str(path)}
        if self.transform is None:
            item["image"] = img
        else:
            item["pixel_values"] = self.transform(img)
        return item

    def __repr__(self) -> str:
        return f"ImageTextFolder({str(self.annotations)!r}, {len(self)} pairs, {len(self.skipped_at_load)} skipped)"
