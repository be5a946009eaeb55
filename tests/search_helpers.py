"""Shared set-up of the image search tests: a tiny random CLIP and a folder of shape images."""

from __future__ import annotations

from pathlib import Path

import torch

import vlkit
from vlkit.data.synthetic import ShapesDataset


def tiny_clip(folder: Path, seed: int = 0) -> Path:
    """A random clip-tiny (32-pixel images) saved to ``folder``."""
    torch.manual_seed(seed)
    vlkit.create_model("clip-tiny").save_pretrained(folder)
    return folder


def shape_images(folder: Path, count: int, *, start: int = 0, split: str = "validation") -> list[str]:
    """Shape images ``start .. start+count-1`` as PNG files (every third in ``sub/``); their
    paths relative to ``folder``."""
    data = ShapesDataset(split, size=start + count, image_size=32)
    paths = []
    for i in range(start, start + count):
        rel = f"sub/{i:04d}.png" if i % 3 == 0 else f"{i:04d}.png"
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        data.image(i).save(folder / rel)
        paths.append(rel)
    return paths
