"""The CLIP task: a two-tower model trained with the symmetric image-text contrastive loss."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..losses.contrastive import clip_loss
from ..models.base import unwrap


class CLIPTask:
    """``losses(model, batch)`` -> ``{"contrastive_loss"}``, gathered over all processes under torchrun."""

    name = "clip"

    def losses(self, model: nn.Module, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        image_features, text_features = model(batch["pixel_values"], batch["input_ids"], batch["attention_mask"])
        return clip_loss(image_features, text_features, unwrap(model).scale())

    def log_values(self, model: nn.Module) -> dict[str, float]:
        """The learned inverse temperature."""
        return {"logit_scale": unwrap(model).scale().item()}
