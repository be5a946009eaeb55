"""The training and validation datasets a config's ``data`` section describes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ..data.folder import ImageTextFolder
from ..data.synthetic import ShapesDataset

DATA_KINDS = ("shapes", "folder", "webdataset", "conversations", "shapes-text", "text")


def build_datasets(
    data,
    *,
    image_size: int,
    train_transform: Callable,
    eval_transform: Callable,
    batch_size: int = 1,
    seed: int = 0,
    rank: int = 0,
    world_size: int = 1,
):
    """(train dataset, validation dataset or None) for a :class:`~vlkit.train.config.DataConfig`.

    ``shapes`` renders at ``image_size`` (the model's) with varied captions for training and the
    canonical full captions for validation; ``folder`` reads the annotation files; ``webdataset``
    streams tar shards (a :class:`~vlkit.data.shards.ShardStream` of this rank's batches of
    ``batch_size``, seeded with ``seed``) and validates on ``val_annotations`` when given.
    """
    if data.kind == "webdataset":
        return _shard_datasets(data, train_transform, eval_transform, batch_size, seed, rank, world_size)
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
    if data.kind == "conversations":  # LLaVA-format JSONL (vlkit.data.conversations), for the VLM recipes
        from ..data.conversations import ConversationFolder

        if not data.train_annotations:
            raise ValueError("data.kind is 'conversations' but data.train_annotations (a JSONL file) is not set")
        common = dict(root=data.root, image_key=data.image_key)
        train = ConversationFolder(Path(data.train_annotations), transform=train_transform, **common)
        val = None
        if data.val_annotations:
            val = ConversationFolder(Path(data.val_annotations), transform=eval_transform, **common)
        return train, val
    if data.kind in ("shapes-text", "text"):  # text alone, for the lm recipe (vlkit.data.text_corpus)
        return _text_datasets(data)
    raise ValueError(f"data.kind must be one of {DATA_KINDS}, got {data.kind!r}")


def _text_datasets(data):
    from ..data.text_corpus import ShapesText, TextLines

    if data.kind == "shapes-text":
        train = ShapesText("train", size=data.train_size, seed=data.seed)
        return train, ShapesText("validation", size=data.val_size, seed=data.seed) if data.val_size > 0 else None
    if not data.train_annotations:
        raise ValueError("data.kind is 'text' but data.train_annotations (a text file, one sample per line) is not set")
    return TextLines(data.train_annotations), TextLines(data.val_annotations) if data.val_annotations else None


def _shard_datasets(data, train_transform, eval_transform, batch_size: int, seed: int, rank: int, world_size: int):
    from ..data.shards import ShardStream

    if not data.train_shards:
        raise ValueError(
            "data.kind is 'webdataset' but data.train_shards (a brace pattern, list or .txt file) is not set"
        )
    if not isinstance(data.train_num_samples, int) or data.train_num_samples < 1:
        raise ValueError(
            f"data.train_num_samples must be the number of samples per epoch (a positive integer), got "
            f"{data.train_num_samples!r}"
        )
    if data.shuffle_buffer < 1:
        raise ValueError(f"data.shuffle_buffer must be at least 1 (1: no shuffling), got {data.shuffle_buffer}")
    train = ShardStream(
        data.train_shards,
        num_samples=data.train_num_samples,
        batch_size=batch_size,
        transform=train_transform,
        seed=seed,
        shuffle_buffer=data.shuffle_buffer,
        rank=rank,
        world_size=world_size,
    )
    val = None
    if data.val_annotations:
        common = dict(root=data.root, image_key=data.image_key, caption_key=data.caption_key)
        val = ImageTextFolder(Path(data.val_annotations), transform=eval_transform, **common)
    return train, val
