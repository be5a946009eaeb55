"""A causal language model trained on text alone: next-token cross-entropy.

Batches (:class:`vlkit.train.recipes.lm.TextCollator`) carry ``input_ids`` (B, T), right-padded,
and ``labels`` (B, T): the token itself, -100 on padding (and on the start token, which nothing
predicts). The model's logits at position t predict the token at t + 1. Any vlkit decoder (GPT,
OPT, Llama: ``model(input_ids) -> logits``) fits.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

IGNORE_INDEX = -100


def next_token_loss(logits: torch.Tensor, labels: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """logits (B, T, V) and labels (B, T) -> the cross-entropy of each position's next token
    (mean, or ``"sum"`` over the scored tokens); labels of -100 are skipped."""
    targets = labels[:, 1:]  # (B, T - 1)
    return F.cross_entropy(
        logits[:, :-1].flatten(0, 1).float(), targets.flatten(), ignore_index=IGNORE_INDEX, reduction=reduction
    )


class LMTask:
    def losses(self, model: nn.Module, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        # Right padding needs no attention mask: causal attention keeps real tokens from seeing the
        # padding after them, and positions count from the start as they would without it.
        logits = model(batch["input_ids"])  # (B, T, V)
        return {"lm_loss": next_token_loss(logits, batch["labels"])}

    def log_values(self, model: nn.Module) -> dict[str, float]:
        return {}
