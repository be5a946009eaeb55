"""Image files found on disk: the files of named folders and a dataset that decodes them.

    files = find_images(["photos/", "extra.png"])     # folders searched recursively, sorted
    dataset = ImageFiles(files, vlkit.image_transform(model))

An item is ``{"pixel_values": (3, H, W), "index": i}``, or a skip record for a file that cannot
be decoded (:func:`vlkit.data.skips.load_or_skip`), so a bad file never stops a run.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

from .skips import load_or_skip

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def find_images(paths: Sequence[str | os.PathLike]) -> list[Path]:
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


class ImageFiles:
    """A dataset of image files: ``{"pixel_values", "index"}``, or a skip record for a file that
    cannot be decoded."""

    def __init__(self, files: Sequence[Path], transform: Callable) -> None:
        self.files, self.transform = list(files), transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> dict:
        return load_or_skip(self.files[i], {"index": i}, transform=self.transform, source=str(self.files[i]))
