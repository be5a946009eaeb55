"""Zero-shot classification with a two-tower model (CLIP's recipe).

Each class becomes one classifier weight: its name is put into every prompt template, the
prompts are encoded, L2-normalised, averaged, and normalised again. An image is assigned the
class whose weight has the highest cosine similarity with its (normalised) feature.
"""

from __future__ import annotations

from collections.abc import Sequence
from string import Formatter

import torch
import torch.nn.functional as F

from .retrieval import encode_texts


def check_templates(templates: Sequence[str]) -> None:
    """A ValueError naming the first template that does not hold exactly one ``{}`` (where the
    class name goes; literal braces are written ``{{`` and ``}}``, as ``str.format`` reads them)."""
    if not templates:
        raise ValueError("zero-shot classification needs at least one prompt template")
    for t in templates:
        try:
            fields = [name for _, name, _, _ in Formatter().parse(t) if name is not None]
        except ValueError as e:  # a lone brace
            raise ValueError(
                f"prompt template {t!r} is not a format string ({e}); write {{{{ and }}}} for "
                "literal braces and {} where the class name goes"
            ) from None
        named = [f"{{{name}}}" for name in fields if name]
        if named:
            raise ValueError(f"prompt template {t!r} has the fields {named}; write {{}} where the class name goes")
        if len(fields) != 1:
            raise ValueError(
                f"prompt template {t!r} must hold exactly one '{{}}' where the class name goes, found {len(fields)}"
            )


def class_prompts(classnames: Sequence[str], templates: Sequence[str]) -> list[str]:
    """Every (class, template) prompt, class-major: ``len(classnames) * len(templates)`` texts."""
    if not classnames:
        raise ValueError("zero-shot classification needs at least one class name")
    check_templates(templates)
    return [t.format(c) for c in classnames for t in templates]


@torch.no_grad()
def zeroshot_classifier(
    model,
    tokenizer,
    classnames: Sequence[str],
    templates: Sequence[str],
    *,
    device: torch.device | str = "cpu",
    batch_size: int = 256,
    precision: str = "auto",
) -> torch.Tensor:
    """Class weights (C, D): mean of each class's normalised prompt embeddings, renormalised."""
    prompts = class_prompts(classnames, templates)
    feats = encode_texts(
        model, tokenizer, prompts, batch_size=batch_size, device=device, normalize=True, precision=precision
    )
    feats = feats.view(len(classnames), len(templates), -1).mean(1)  # (C, D)
    return F.normalize(feats, dim=-1)


def zeroshot_logits(image_features: torch.Tensor, classifier: torch.Tensor) -> torch.Tensor:
    """Cosine similarities (N, C) of images and class weights."""
    return F.normalize(image_features.float(), dim=-1) @ classifier.float().t()


def topk_accuracy(
    logits: torch.Tensor, labels: Sequence[int] | torch.Tensor, ks: Sequence[int] = (1, 5)
) -> dict[str, float]:
    """Top-k accuracy in percent for each k (k capped at the number of classes)."""
    labels = torch.as_tensor(labels, dtype=torch.long)
    if logits.shape[0] != labels.shape[0]:
        raise ValueError(f"{logits.shape[0]} predictions but {labels.shape[0]} labels")
    if labels.numel() and (labels.min() < 0 or labels.max() >= logits.shape[1]):
        raise ValueError(f"labels must lie in [0, {logits.shape[1]}), got {labels.min().item()}..{labels.max().item()}")
    top = logits.topk(min(max(ks), logits.shape[1]), dim=1).indices  # (N, kmax)
    hits = top == labels[:, None]  # (N, kmax)
    return {f"top{k}": 100.0 * hits[:, :k].any(1).float().mean().item() for k in ks}


def zeroshot_accuracy(
    model,
    tokenizer,
    image_features: torch.Tensor,
    labels: Sequence[int],
    classnames: Sequence[str],
    templates: Sequence[str],
    *,
    device: torch.device | str = "cpu",
    ks: Sequence[int] = (1, 5),
    precision: str = "auto",
) -> dict[str, float]:
    """Top-k zero-shot accuracy (percent) of precomputed image features against class prompts."""
    classifier = zeroshot_classifier(model, tokenizer, classnames, templates, device=device, precision=precision)
    return topk_accuracy(zeroshot_logits(image_features, classifier), labels, ks)
