"""Pieces the recipes share, as plain functions: building a model from the ``model`` section,
loading a tokenizer, the contrastive evaluation (any model with ``encode_image`` /
``encode_text`` / ``scale()``: CLIP, ALBEF, BLIP) and the summary lines of its metrics.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ...data.loader import eval_loader
from ...eval.retrieval import retrieval_metrics, similarity_matrix, unique_captions
from ...eval.zeroshot import zeroshot_accuracy
from ...losses.contrastive import clip_loss
from ...runtime import autocast, eval_mode

SHAPES_TOKENIZER = "shapes"
CONVERSATION_TOKENIZER = "conversations"


@dataclass
class EvalOutput:
    """Metrics of one evaluation, and a small similarity matrix (images x their captions) to plot."""

    metrics: dict[str, float]
    similarity: torch.Tensor | None = None
    texts: list[str] = field(default_factory=list)


def load_tokenizer(name: str):
    """``shapes`` -> :func:`vlkit.data.synthetic.shapes_tokenizer` (the built-in shapes' 47-token
    WordPiece); ``conversations`` -> :func:`vlkit.data.conversations.conversation_tokenizer` (the
    shapes' word tokenizer with the chat template's tokens); anything else ->
    :func:`vlkit.get_tokenizer` (a preset name or a folder)."""
    if name == SHAPES_TOKENIZER:
        from ...data.synthetic import shapes_tokenizer

        return shapes_tokenizer()
    if name == CONVERSATION_TOKENIZER:
        from ...data.conversations import conversation_tokenizer

        return conversation_tokenizer()
    import vlkit

    return vlkit.get_tokenizer(name)


def model_from_spec(model_spec: dict[str, Any], *, expected: type, task: str, **extra) -> nn.Module:
    """The model a ``model`` config section describes: ``{"pretrained": folder, **overrides}`` or
    ``{"preset": name, **create_model overrides}`` (``extra``: more overrides for a preset); a
    TypeError unless it is an ``expected`` instance."""
    import vlkit

    spec = dict(model_spec)
    pretrained, preset = spec.pop("pretrained", None), spec.pop("preset", None)
    if pretrained is not None:
        model = vlkit.from_pretrained(pretrained, **spec)
    elif preset is not None:
        model = vlkit.create_model(preset, **spec, **extra)
    else:
        raise ValueError("model needs a 'preset' (e.g. clip-tiny) or a 'pretrained' folder")
    if not isinstance(model, expected):
        raise TypeError(f"the {task} task trains a {expected.__name__} model; got {type(model).__name__}")
    return model


def check_model_spec(model_spec: dict[str, Any], options: Any, task: str) -> None:
    """A ValueError when the ``model`` section holds one of the task's options (they moved to ``task:``)."""
    moved = sorted(set(model_spec) & {f.name for f in dataclasses.fields(options)})
    if moved:
        raise ValueError(
            f"model.{moved[0]} is an option of the {task} task, not a model field: "
            f"give it as task.{moved[0]} (the recipe's options)"
        )


def check_vocabulary(tokenizer, tokenizer_name: str, vocab_size: int) -> None:
    """A ValueError when the tokenizer has ids the model's embedding table lacks."""
    if tokenizer.vocab_size > vocab_size:
        raise ValueError(
            f"tokenizer {tokenizer_name!r} has {tokenizer.vocab_size} tokens but the model's vocabulary "
            f"only {vocab_size}: set model.text.vocab_size >= {tokenizer.vocab_size}"
        )


def captions_in(batch: dict[str, Any]) -> int:
    """The number of samples of an image-caption batch (skipped samples are not counted)."""
    return len(batch["captions"])


def clip_validation_loss(model: nn.Module, image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """CLIP's contrastive loss of one validation batch (normalised features), on this process alone."""
    return clip_loss(image, text, model.scale(), gather=False)["contrastive_loss"]


@torch.no_grad()
def contrastive_evaluate(
    model: nn.Module,
    dataset,
    collate: Callable,
    tokenizer,
    *,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    precision: str = "auto",
    zeroshot: bool = True,
    retrieval: bool = True,
    plot_size: int = 12,
    validation_loss: Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor] = clip_validation_loss,
) -> EvalOutput:
    """Validation contrastive loss (mean over batches of ``batch_size``), Recall@1/5/10 both ways
    and, on data with zero-shot labels, zero-shot top-1/top-5 accuracy per label set, for any model
    with ``encode_image`` / ``encode_text`` (``normalize=True``) and ``scale()``.
    ``validation_loss(model, image_features, text_features)``: the loss of one batch (CLIP's by default)."""
    device = torch.device(device)
    image_feats, text_feats, captions = [], [], []
    loss_sum, n = 0.0, 0
    with eval_mode(model):
        for batch in eval_loader(dataset, collate, batch_size):
            if "pixel_values" not in batch:
                continue
            with autocast(device, precision):
                img = model.encode_image(batch["pixel_values"].to(device), normalize=True)  # (B, D)
                txt = model.encode_text(
                    batch["input_ids"].to(device), batch["attention_mask"].to(device), normalize=True
                )  # (B, D)
                loss = validation_loss(model, img, txt)
            loss_sum += loss.float().item() * len(img)
            n += len(img)
            image_feats.append(img.float().cpu())
            text_feats.append(txt.float().cpu())
            captions += batch["captions"]
        if n == 0:
            raise ValueError("the validation data has no usable samples")
        image_feats, text_feats = torch.cat(image_feats), torch.cat(text_feats)  # (N, D)
        metrics: dict[str, float] = {"loss": loss_sum / n}
        if retrieval:
            texts, positives = unique_captions(captions)  # several images may share one caption
            first: dict[str, int] = {}
            for i, c in enumerate(captions):
                first.setdefault(c, i)
            unique_feats = text_feats[torch.tensor([first[t] for t in texts])]  # (N_unique, D)
            metrics.update(retrieval_metrics(image_feats, unique_feats, positives))
        if zeroshot and hasattr(dataset, "zeroshot_tasks"):
            for name, zs in dataset.zeroshot_tasks().items():
                acc = zeroshot_accuracy(
                    model,
                    tokenizer,
                    image_feats,
                    zs.labels,
                    zs.classnames,
                    zs.templates,
                    device=device,
                    precision=precision,
                )
                metrics.update({f"zeroshot_{name}_{k}": v for k, v in acc.items()})
    k = min(plot_size, n)
    sim = similarity_matrix(image_feats[:k], text_feats[:k])  # (k, k): images x their own captions
    return EvalOutput(metrics, sim, captions[:k])


def held_out(num_images: int | None) -> str:
    return f" on {num_images} held-out images" if num_images else ""


def zeroshot_lines(metrics: dict[str, float], num_images: int | None = None) -> list[str]:
    """``zero-shot top-1 accuracy on N held-out images: colour 95.0%, shape 90.0%`` (when measured)."""
    names = sorted({k[len("zeroshot_") :].rsplit("_", 1)[0] for k in metrics if k.startswith("zeroshot_")})
    if not names:
        return []
    parts = ", ".join(f"{name} {metrics[f'zeroshot_{name}_top1']:.1f}%" for name in names)
    return [f"zero-shot top-1 accuracy{held_out(num_images)}: {parts}"]


def retrieval_lines(
    metrics: dict[str, float], num_images: int | None = None, *, rerank_k: int | None = None
) -> list[str]:
    """Recall@1 both ways, with Recall@5; for a model with an ITM head (``rerank_k`` given) marked
    as ITC and followed by the ITM re-ranked Recall@1 when measured."""
    if "i2t_R@1" not in metrics:
        return []
    line = (
        f"retrieval Recall@1{held_out(num_images)}: image->text {metrics['i2t_R@1']:.1f}%, "
        f"text->image {metrics['t2i_R@1']:.1f}%"
    )
    if rerank_k is None:
        return [line + f" (Recall@5: {metrics['i2t_R@5']:.1f}%, {metrics['t2i_R@5']:.1f}%)"]
    line += " (ITC)"
    if "itm_i2t_R@1" in metrics:
        line += f"; re-ranked by ITM (top {rerank_k}): {metrics['itm_i2t_R@1']:.1f}%, {metrics['itm_t2i_R@1']:.1f}%"
    return [line]
