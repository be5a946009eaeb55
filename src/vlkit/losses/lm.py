"""Language-modelling losses: next-token cross-entropy with label smoothing for captioning
decoders (BLIP; padding and the prompt ignored), and the masked-LM loss with optional momentum
distillation (ALBEF)."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


def lm_labels(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    prompt_length: int | torch.Tensor = 0,
    ignore_index: int = IGNORE_INDEX,
) -> torch.Tensor:
    """Targets for :func:`lm_loss`: ``input_ids`` (B, T) with padding (``attention_mask == 0``)
    and the first ``prompt_length`` tokens of each row (an int, or a (B,) tensor of per-row
    lengths; BLIP's "a picture of " prompt with its [DEC] token) set to ``ignore_index``."""
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must be (batch, length), got shape {tuple(input_ids.shape)}")
    B, T = input_ids.shape
    labels = input_ids.clone()
    if attention_mask is not None:
        if attention_mask.shape != input_ids.shape:
            raise ValueError(f"attention_mask shape {tuple(attention_mask.shape)} != input_ids shape {(B, T)}")
        labels = labels.masked_fill(attention_mask == 0, ignore_index)
    prompt = torch.as_tensor(prompt_length, device=input_ids.device)
    if prompt.dim() > 1 or (prompt.dim() == 1 and prompt.shape[0] != B):
        raise ValueError(f"prompt_length must be an int or a ({B},) tensor, got shape {tuple(prompt.shape)}")
    in_prompt = torch.arange(T, device=input_ids.device)[None, :] < prompt.reshape(-1, 1)  # (B or 1, T)
    return labels.masked_fill(in_prompt, ignore_index)


def lm_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    label_smoothing: float = 0.1,
    ignore_index: int = IGNORE_INDEX,
) -> torch.Tensor:
    """Mean next-token cross-entropy over the predicted tokens.

    ``logits`` (B, T, V) at position t predict ``labels`` (B, T) at position t + 1 (the shift
    happens here, as in transformers' causal-LM losses). With label smoothing eps the target
    distribution is ``(1 - eps) * one_hot + eps / V``. Computed in float32 whatever the logits'
    dtype. Returns 0 (with a gradient path) when no token is predicted.
    """
    if logits.dim() != 3 or labels.shape != logits.shape[:2]:
        raise ValueError(
            f"logits must be (B, T, V) and labels (B, T); got {tuple(logits.shape)} and {tuple(labels.shape)}"
        )
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
    V = logits.shape[-1]
    shifted = logits[:, :-1].reshape(-1, V).float()  # (B * (T-1), V)
    targets = labels[:, 1:].reshape(-1)  # (B * (T-1),)
    count = (targets != ignore_index).sum().clamp(min=1)  # no host sync, no NaN when nothing is predicted
    total = F.cross_entropy(
        shifted, targets, ignore_index=ignore_index, label_smoothing=label_smoothing, reduction="sum"
    )
    return total / count


def mlm_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    teacher_logits: torch.Tensor | None = None,
    alpha: float = 0.0,
    ignore_index: int = IGNORE_INDEX,
) -> torch.Tensor:
    """Masked-LM cross-entropy over the positions whose label is not ``ignore_index`` (no shift).

    With ``teacher_logits`` (a momentum model's predictions, same shape as ``logits`` (B, T, V))
    and ``alpha > 0``, ALBEF's distilled loss: ``(1 - alpha) * CE(labels) +
    alpha * CE(softmax(teacher))`` on the predicted positions. Returns 0 (with a gradient path)
    when no position is predicted.
    """
    if logits.dim() != 3 or labels.shape != logits.shape[:2]:
        raise ValueError(
            f"logits must be (B, T, V) and labels (B, T); got {tuple(logits.shape)} and {tuple(labels.shape)}"
        )
    predicted = labels != ignore_index  # (B, T)
    pred_logits = logits[predicted].float()  # (M, V): only the ~15% predicted positions
    count = predicted.sum().clamp(min=1)
    loss = F.cross_entropy(pred_logits, labels[predicted], reduction="sum") / count
    if teacher_logits is not None and alpha > 0:
        if teacher_logits.shape != logits.shape:
            raise ValueError(f"teacher_logits {tuple(teacher_logits.shape)} must match logits {tuple(logits.shape)}")
        soft = F.softmax(teacher_logits[predicted].detach().float(), dim=-1)  # (M, V)
        distill = -(soft * F.log_softmax(pred_logits, dim=-1)).sum() / count
        loss = (1.0 - alpha) * loss + alpha * distill
    return loss


def scored_lm_loss(
    hidden: torch.Tensor,
    labels: torch.Tensor,
    logits: Callable[[torch.Tensor], torch.Tensor],
    *,
    label_smoothing: float = 0.0,
    ignore_index: int = IGNORE_INDEX,
) -> torch.Tensor:
    """:func:`lm_loss` of ``logits(hidden)`` against ``labels`` (B, T), with the LM
    head run only at the positions whose next label is scored: hidden (B, T, H) predicts labels
    shifted by one. The same loss and gradients (up to float rounding) for a fraction of the LM
    head's work when most positions are ignored (an image, a prompt): ``scored_lm_loss(
    vlm.text_hidden_states(pixel_values, input_ids, attention_mask), labels, vlm.llm.logits)``. Selecting the positions reads
    their count on the host (a synchronisation on a GPU)."""
    if hidden.dim() != 3 or labels.shape != hidden.shape[:2]:
        raise ValueError(
            f"hidden must be (B, T, H) and labels (B, T); got {tuple(hidden.shape)}, {tuple(labels.shape)}"
        )
    targets = labels[:, 1:]  # (B, T-1): the token each position predicts
    scored = targets != ignore_index  # (B, T-1)
    scores = logits(hidden[:, :-1][scored]).float()  # (n, V)
    total = F.cross_entropy(scores, targets[scored], label_smoothing=label_smoothing, reduction="sum")
    return total / scored.sum().clamp(min=1)
