"""Bad samples: what was left out and why, and the line that reports it.

A sample is skipped, never dropped silently and never fatal: when an annotation row cannot be used
(found while the annotation file is read) or when its image cannot be decoded (found when the
sample is loaded: :func:`load_or_skip` returns a *skip record* instead of a sample, which the
collators pass on under ``batch["skipped"]``). :class:`SkipReport` counts them:

    skipped 3 samples of 40 (1 empty caption, 2 unreadable images): a.png (empty caption); ...

Every reason is a noun phrase whose plural adds an ``s`` ("1 missing file", "2 missing files").
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from .images import ImageError, load_image

# Why a sample was left out; each reads as "N <reason>s" in the plural.
REASONS = (
    "empty caption",
    "non-text caption",  # image-caption pairs
    "empty question",
    "non-text question",
    "missing answer",
    "non-text answer",  # questions about images
    "bad conversation",  # LLaVA-format conversations (the detail says what is wrong)
    "non-text image path",
    "missing file",
    "zero-size file",  # found when the annotations are read
    "unreadable image",  # found when the image is decoded
    "missing image",  # a shard sample without an image file
    "unreadable shard",  # a tar that cannot be read to its end (the samples before the fault are kept)
    "empty line",
    "undecodable line",  # plain text files (one sample per line), not UTF-8
)


def plural(n: int, noun: str) -> str:
    """``"1 image"``, ``"2 images"``."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


@dataclass(frozen=True)
class Skipped:
    """One sample left out: where it was, why (one of :data:`REASONS`), and the detail the reader gave."""

    source: str
    reason: str
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
        parts = ", ".join(plural(n, reason) for reason, n in sorted(self.counts().items()))
        shown = "; ".join(
            f"{s.source} ({s.reason}{': ' + s.detail if s.detail else ''})" for s in self.skipped[:examples]
        )
        more = f"; and {len(self.skipped) - examples} more" if len(self.skipped) > examples else ""
        return f"skipped {plural(len(self.skipped), 'sample')}{of} ({parts}): {shown}{more}"


def load_or_skip(
    path: str | os.PathLike, fields: Mapping[str, Any], *, transform: Callable | None, source: str
) -> dict[str, Any]:
    """``fields`` plus the decoded image (:func:`vlkit.data.images.load_image`): under ``"image"``
    (a PIL RGB image), or ``"pixel_values"`` (``transform(image)``) when a transform is given.
    When the image cannot be decoded: ``{"skipped": Skipped(source, "unreadable image", why),
    "index": fields["index"]}``."""
    try:
        image = load_image(path)
    except ImageError as e:
        return {"skipped": Skipped(source, "unreadable image", e.reason), "index": fields["index"]}
    if transform is None:
        return {**fields, "image": image}
    return {**fields, "pixel_values": transform(image)}


def start_batch(items: Sequence[Mapping[str, Any]]) -> tuple[dict[str, Any], list[Mapping[str, Any]]]:
    """A collator's first step: (the batch begun with ``skipped``, the skip records among
    ``items``, and ``index``, a long tensor of the other items' dataset indices; those items)."""
    skipped = [it["skipped"] for it in items if "skipped" in it]
    kept = [it for it in items if "skipped" not in it]
    return {"skipped": skipped, "index": torch.tensor([it["index"] for it in kept], dtype=torch.long)}, kept
