"""The data each evaluation reads: the built-in shapes' validation split, or your annotation file
(CSV or JSONL, image paths relative to ``root``), with the ground truth the metrics need.

    source = DataSource()                                    # 1000 held-out shapes, seed 0
    source = DataSource(annotations="pairs.csv", root="images/")
    images, texts, positives = retrieval_data(model, source)
    images, references = captioning_data(model, source)
    images, tasks = zeroshot_data(model, source, templates=["a photo of a {}."])
    items, answers, types, candidates = vqa_data(model, source)

Images are preprocessed as ``model`` expects (:func:`vlkit.image_transform`). Where rows share
an image (several captions per image), the image dataset holds each image once; unreadable
images found while reading the annotations are listed in the dataset's ``skipped_at_load``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import Dataset, Subset

from ..data.annotations import read_utf8
from ..data.folder import ImageTextFolder, read_annotations
from ..data.synthetic import ShapesDataset, ZeroShotTask
from ..data.transforms import image_transform
from ..data.vqa import VQAFolder
from .retrieval import unique_captions
from .zeroshot import check_templates

DEFAULT_TEMPLATES = ("a photo of a {}.",)


@dataclass(frozen=True)
class DataSource:
    """Where evaluation data comes from: ``annotations`` (a CSV/JSONL file, image paths relative
    to ``root``, default the file's folder; ``image_key`` the image column), or, without
    annotations, ``size`` held-out images of the built-in shapes drawn with ``seed``."""

    annotations: str | os.PathLike | None = None
    root: str | os.PathLike | None = None
    image_key: str | None = None
    size: int = 1000
    seed: int = 0


def shapes_image_size(model: nn.Module) -> int:
    """The image size the built-in shapes are rendered at for ``model`` (its vision tower's; a
    single-stream model's own, which has image and text fields in one config)."""
    config = getattr(model, "config", None)
    vision = getattr(config, "vision", None)
    if vision is None and hasattr(config, "image_size") and hasattr(config, "vocab_size"):
        vision = config
    if vision is None:
        raise ValueError(
            f"a {type(model).__name__} has no vision tower; image evaluations need a vision-language model"
        )
    return vision.image_size


def _shapes(model: nn.Module, source: DataSource, **kwargs) -> ShapesDataset:
    if source.size < 1:
        raise ValueError(f"the number of shapes images must be >= 1, got {source.size}")
    return ShapesDataset(
        "validation",
        size=source.size,
        seed=source.seed,
        image_size=shapes_image_size(model),
        transform=image_transform(model),
        **kwargs,
    )


def _pairs(model: nn.Module, source: DataSource, caption_key: str | None) -> ImageTextFolder:
    return ImageTextFolder(
        source.annotations,
        root=source.root,
        transform=image_transform(model),
        image_key=source.image_key,
        caption_key=caption_key,
    )


def _one_item_per_image(pairs: ImageTextFolder) -> tuple[Dataset, dict[Path, list[int]]]:
    """(the pairs' first row of each distinct image, {image path: its rows}), images in first-seen order."""
    rows: dict[Path, list[int]] = {}
    for i, (path, _) in enumerate(pairs.samples):
        rows.setdefault(path, []).append(i)
    images = Subset(pairs, [r[0] for r in rows.values()])
    images.skipped_at_load = pairs.skipped_at_load
    return images, rows


def parse_classes(classes: str | None) -> list[str] | None:
    """Class names from a file with one per line, or a comma-separated list; None stays None."""
    if not classes:
        return None
    path = Path(classes)
    lines = read_utf8(path).splitlines() if path.is_file() else classes.split(",")
    names = [c.strip() for c in lines if c.strip()]
    if not names:
        raise ValueError(f"no class names in {classes!r}")
    return names


def zeroshot_data(
    model: nn.Module,
    source: DataSource,
    *,
    label_key: str = "label",
    classes: Sequence[str] | None = None,
    templates: Sequence[str] | None = None,
) -> tuple[Dataset, dict[str, ZeroShotTask]]:
    """(images, {task name: ZeroShotTask}). Shapes: two tasks (shape, colour); a file: one task
    named ``label_key`` over ``classes`` (default: the labels seen)."""
    if templates:
        check_templates(templates)
    if source.annotations is None:
        ds = _shapes(model, source)
        tasks = ds.zeroshot_tasks()
        if templates:
            tasks = {k: ZeroShotTask(t.classnames, tuple(templates), t.labels) for k, t in tasks.items()}
        return ds, tasks
    rows = read_annotations(source.annotations)
    if rows and label_key not in rows[0]:
        raise ValueError(f"{source.annotations}: no label column {label_key!r}; columns are {sorted(rows[0])}")
    ds = _pairs(model, source, label_key)
    labels_seen = ds.captions()
    classnames = list(classes) if classes else sorted(set(labels_seen))
    unknown = sorted(set(labels_seen) - set(classnames))
    if unknown:
        raise ValueError(f"labels {unknown[:10]} are not among the classes {classnames[:10]}")
    index = {c: i for i, c in enumerate(classnames)}
    task = ZeroShotTask(tuple(classnames), tuple(templates or DEFAULT_TEMPLATES), tuple(index[c] for c in labels_seen))
    return ds, {label_key: task}


def retrieval_data(
    model: nn.Module,
    source: DataSource,
    *,
    caption_key: str | None = None,
) -> tuple[Dataset, list[str], torch.Tensor]:
    """(images, texts, positives (N_img, N_txt)). Shapes: each image's full caption (images that
    share a caption all match it); a file: every row's caption matches the row's image."""
    if source.annotations is None:
        ds = _shapes(model, source, captions="full")
        texts, positives = unique_captions([ds.caption(i) for i in range(len(ds))])
        return ds, texts, positives
    pairs = _pairs(model, source, caption_key)
    images, rows = _one_item_per_image(pairs)
    positives = torch.zeros(len(rows), len(pairs.samples), dtype=torch.bool)  # (N_img, N_txt)
    for i, image_rows in enumerate(rows.values()):
        positives[i, image_rows] = True
    return images, pairs.captions(), positives


def captioning_data(
    model: nn.Module,
    source: DataSource,
    *,
    caption_key: str | None = None,
) -> tuple[Dataset, list[list[str]]]:
    """(images, reference captions per image)."""
    if source.annotations is None:
        ds = _shapes(model, source, captions="full")
        return ds, [[ds.caption(i)] for i in range(len(ds))]
    pairs = _pairs(model, source, caption_key)
    images, rows = _one_item_per_image(pairs)
    return images, [[pairs.samples[i][1] for i in image_rows] for image_rows in rows.values()]


def vqa_data(
    model: nn.Module,
    source: DataSource,
    *,
    question_key: str | None = None,
    answer_key: str | None = None,
) -> tuple[Dataset, list[list[str]], list[str] | None, list[str]]:
    """(items with pixel_values and question, human answers per item, question types or None,
    every distinct answer: the closed answer set)."""
    if source.annotations is None:
        ds = _shapes(model, source, captions="full")
        qs = [ds.question(i) for i in range(len(ds))]
        return ds, [[q.answer] for q in qs], [q.type for q in qs], list(ds.answer_list())
    ds = VQAFolder(
        source.annotations,
        root=source.root,
        transform=image_transform(model),
        image_key=source.image_key,
        question_key=question_key,
        answer_key=answer_key,
    )
    answers = ds.answer_lists()
    return ds, answers, None, list(dict.fromkeys(a for rows in answers for a in rows))


def read_answer_list(path: str | os.PathLike) -> list[str]:
    """A closed answer set: one answer per line (blank lines ignored)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"answer list {path} does not exist")
    answers = [line.strip() for line in read_utf8(path).splitlines() if line.strip()]
    if not answers:
        raise ValueError(f"answer list {path} holds no answers")
    return answers
