"""Zero-shot labels for a folder of images (``vlkit classify``), by the embedding code of the index.

result = classify_files(model, tokenizer, files, ["cat", "dog"], templates=("a photo of a {}.",))
result.kept, result.scores      # positions in ``files``; (N_kept, C) cosine similarities
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from ..data.folder import SkipReport
from ..eval.embedding import embed_image_files
from ..eval.zeroshot import zeroshot_classifier, zeroshot_logits


@dataclass
class Classification:
    classes: list[str]
    kept: list[int]  # positions in the input files
    scores: torch.Tensor  # (N_kept, C) cosine similarity of each image to each class
    skipped: SkipReport

    def labels(self) -> list[str]:
        return [self.classes[i] for i in self.scores.argmax(1).tolist()]


def parse_classes(text: str) -> list[str]:
    """``"cat, dog,car"`` -> ``["cat", "dog", "car"]``; a ValueError for fewer than two or repeats."""
    classes = [c.strip() for c in text.split(",") if c.strip()]
    if len(classes) < 2:
        raise ValueError(f"--classes needs at least two comma-separated class names, got {text!r}")
    if len(set(classes)) != len(classes):
        raise ValueError(f"--classes names a class twice: {text!r}")
    return classes


def classify_files(
    model,
    tokenizer,
    files: Sequence[Path],
    classes: Sequence[str],
    *,
    templates: Sequence[str] = ("a photo of a {}.",),
    batch_size: int = 64,
    num_workers: int = 0,
    device: torch.device | str = "cpu",
    progress: bool = False,
) -> Classification:
    """Each readable file's cosine similarity to each class (CLIP's zero-shot recipe)."""
    classifier = zeroshot_classifier(model, tokenizer, list(classes), list(templates), device=device)  # (C, D)
    result = embed_image_files(
        model, files, batch_size=batch_size, num_workers=num_workers, device=device, progress=progress
    )
    scores = zeroshot_logits(result.features, classifier.cpu())  # (N, C)
    return Classification(list(classes), result.kept, scores, result.skipped)
