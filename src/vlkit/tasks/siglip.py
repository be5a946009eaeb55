"""The SigLIP task: a two-tower model trained with the pairwise sigmoid loss."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..losses.sigmoid import sigmoid_loss
from ..models.base import unwrap


class SigLIPTask:
    """``losses(model, batch)`` -> ``{"sigmoid_loss"}``; under torchrun each process scores its images
    against the texts of every process (passed round a ring, never gathered). ``chunk_size``: compute
    the loss in tiles of at most chunk_size x chunk_size logits (the same loss and gradients)."""

    name = "siglip"

    def __init__(self, chunk_size: int | None = None) -> None:
        self.chunk_size = chunk_size

    def losses(self, model: nn.Module, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        return self.loss_from_features(model, self.features(model, batch))

    def features(self, model: nn.Module, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """``{"image_features", "text_features"}`` (B, D) each, L2-normalised (through DDP, if wrapped)."""
        image_features, text_features = model(batch["pixel_values"], batch["input_ids"], batch["attention_mask"])
        return {"image_features": image_features, "text_features": text_features}

    def loss_from_features(self, model: nn.Module, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The sigmoid loss of features of any number of pairs at the model's scale and bias: a
        feature task (:mod:`vlkit.tasks.features`), so ``train.accum_steps`` gives the whole batch's gradient."""
        inner = unwrap(model)
        image, text = features["image_features"], features["text_features"]
        return sigmoid_loss(image, text, inner.scale(), inner.bias(), chunk_size=self.chunk_size)

    def log_values(self, model: nn.Module) -> dict[str, float]:
        """The learned scale (inverse temperature) and bias."""
        inner = unwrap(model)
        return {"logit_scale": inner.scale().item(), "logit_bias": inner.bias().item()}
