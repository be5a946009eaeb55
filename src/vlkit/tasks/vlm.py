"""A LLaVA-style VLM trained on conversations: next-token cross-entropy on the assistant's answers.

Batches (:class:`vlkit.data.conversations.ConversationCollator`) carry ``pixel_values``
(N, 3, H, W), ``input_ids`` / ``attention_mask`` (B, T) with the image token once per image, and
``labels`` (B, T): the token itself inside an answer, -100 elsewhere (system, user turns, image,
roles, padding). The model's logits at position t predict the token at t + 1.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

IGNORE_INDEX = -100


class VLMTask:
    def losses(self, model: nn.Module, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        logits = model(batch["pixel_values"], batch["input_ids"], batch["attention_mask"])  # (B, T, V)
        labels = batch["labels"][:, 1:]  # (B, T - 1): the next token of each position
        loss = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels.flatten(), ignore_index=IGNORE_INDEX)
        return {"lm_loss": loss}

    def log_values(self, model: nn.Module) -> dict[str, float]:
        return {}
