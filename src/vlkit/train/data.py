"""The training and validation datasets a config's ``data`` section describes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ..data.folder import ImageTextFolder
from ..data.synthetic import ShapesDataset

DATA_KINDS = ("shapes", "folder")


def build_datasets(data, *, image_size: int, train_transform: Callable, eval_transform: Callable):
    """(train dataset, validation dataset or None) for a :class:`~vlkit.train.config.DataConfig`.

    ``shapes`` renders at ``image_size`` (the model's) with varied captions for training and the
    canonical full captions for validation; ``folder`` reads the annotation files.
    """
    if data.kind == "shapes":
        common = dict(seed=data.seed, image_size=image_size)
        train = ShapesDataset("train", size=data.train_size, transform=train_transform, captions="random", **common)
        val = None
        if data.val_size > 0:
            val = ShapesDataset("validation", size=data.val_size, transform=eval_transform, captions="full", **common)
        return train, val
    if data.kind == "folder":
        if not data.train_annotations:
            raise ValueError("data.kind is 'folder' but data.train_annotations (a CSV or JSONL file) is not set")
        common = dict(root=data.root, image_key=data.image_key, caption_key=data.caption_key)
        train = ImageTextFolder(Path(data.train_annotations), transform=train_transform, **common)
        val = None
        if data.val_annotations:
            val = ImageTextFolder(Path(data.val_annotations), transform=eval_transform, **common)
        return train, val
    raise ValueError(f"data.kind must be one of {DATA_KINDS}, got {data.kind!r}")
