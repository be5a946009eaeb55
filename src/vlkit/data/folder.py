"""A user's own image-text pairs: a folder of images and a CSV or JSONL file of (image, caption).

CSV files have a header row; JSONL files hold one object per line (UTF-8, with or without a
byte-order mark: :mod:`vlkit.data.annotations`). The image column is ``image`` (also accepted:
``filepath``, ``file``, ``path``, ``image_path``) and the caption column ``caption`` (also
``text``, ``title``); ``image_key`` / ``caption_key`` name others. Image paths are relative to
``root`` (default: the annotation file's folder) unless absolute. In JSONL a caption may be a list
of strings: one pair per caption. Images are decoded by :func:`vlkit.data.images.load_image`.

Bad samples never crash a run and are never dropped silently:
- empty or non-text captions (a JSON number or dict), missing files and zero-size files are
  found when the annotations are read;
- unreadable or truncated images are found when loaded (``__getitem__`` returns a *skip record*
  instead of a sample; :class:`vlkit.data.ImageTextCollator` drops it from the batch and passes
  it on under ``batch["skipped"]``, so it reaches the training loop even from worker processes).
Both kinds are counted and reported at the end of each epoch (:class:`SkipReport`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PIL import Image

from .annotations import (
    CAPTION_KEYS,
    IMAGE_KEYS,
    AnnotatedImages,
    image_file_problem,
    image_path,
    pick_key,
    read_annotations,
    text_list,
)
from .images import load_image
from .skips import Skipped, SkipReport

# kept importable from here, where they used to live
__all__ = [
    "CAPTION_KEYS",
    "IMAGE_KEYS",
    "ImageTextFolder",
    "SkipReport",
    "Skipped",
    "image_file_problem",
    "load_image",
    "read_annotations",
]


class ImageTextFolder(AnnotatedImages):
    """Image-caption pairs from an annotation file; a map-style dataset.

    ``__getitem__`` returns ``{"image" or "pixel_values", "caption", "index", "path"}``, or
    ``{"skipped": Skipped}`` when the image cannot be decoded. ``self.skipped_at_load`` lists the
    rows left out while reading the annotations; ``image_key`` and ``caption_key`` are the columns read.
    """

    what, unit = "image-caption pairs", "pairs"

    def __init__(
        self,
        annotations: str | os.PathLike,
        root: str | os.PathLike | None = None,
        transform: Callable[[Image.Image], Any] | None = None,
        image_key: str | None = None,
        caption_key: str | None = None,
    ) -> None:
        self.image_key, self.caption_key = image_key, caption_key
        super().__init__(annotations, root, transform)

    def choose_columns(self, columns) -> None:
        self.image_key = pick_key(columns, self.image_key, IMAGE_KEYS, "image", self.annotations)
        self.caption_key = pick_key(columns, self.caption_key, CAPTION_KEYS, "caption", self.annotations)

    def read_row(self, row: dict[str, Any]) -> list[tuple[Path, str]] | Skipped:
        rel, path, problem = image_path(row.get(self.image_key), self.root)
        captions = text_list(row.get(self.caption_key))
        if captions is None:
            return Skipped(
                rel or "<no image>", "non-text caption", f"a JSON {type(row.get(self.caption_key)).__name__}"
            )
        if problem or not captions:
            return Skipped(rel or "<no image>", problem if captions else "empty caption")
        return [(path, caption) for caption in captions]

    def item_fields(self, index: int) -> dict[str, Any]:
        path, caption = self.samples[index]
        return {"caption": caption, "index": index, "path": str(path)}

    def captions(self) -> list[str]:
        return [c for _, c in self.samples]
