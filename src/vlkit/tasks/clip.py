"""The CLIP task: a two-tower model trained with the symmetric image-text contrastive loss."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..losses.contrastive import clip_loss
from ..losses.tiled_contrastive import check_chunk_size
from ..models.base import unwrap


class CLIPTask:
    """``losses(model, batch)`` -> ``{"contrastive_loss"}``, gathered over all processes under torchrun.

    A feature task (:class:`vlkit.tasks.features.FeatureTask`): ``features`` gives the two towers'
    normalised features, ``loss_from_features`` the loss on them, so gradient accumulation
    (``train.accum_steps``) gives the gradient of the whole batch. ``chunk_size``: compute the loss
    in tiles of that many rows and columns of the logits (:func:`vlkit.losses.contrastive.clip_loss`);
    None: all at once."""

    name = "clip"

    def __init__(self, *, chunk_size: int | None = None) -> None:
        check_chunk_size(chunk_size)
        self.chunk_size = chunk_size

    def losses(self, model: nn.Module, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        return self.loss_from_features(model, self.features(model, batch))

    def features(self, model: nn.Module, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """``{"image_features", "text_features"}`` (B, D) each, L2-normalised (through DDP, if wrapped).

        The text tower runs without the batch's padding mask: captions are padded on the right
        (every vlkit tokenizer pads there), so under the causal mask the end-of-text token, the one
        pooled, sees no padding either way, and without an explicit mask attention takes SDPA's
        ``is_causal`` path (its flash kernels on a GPU; nothing built per batch)."""
        image_features, text_features = model(batch["pixel_values"], batch["input_ids"], None)
        return {"image_features": image_features, "text_features": text_features}

    def loss_from_features(self, model: nn.Module, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The contrastive loss of features of any number of pairs, at the model's temperature."""
        image, text = features["image_features"], features["text_features"]
        return clip_loss(image, text, unwrap(model).scale(), chunk_size=self.chunk_size)

    def log_values(self, model: nn.Module) -> dict[str, float]:
        """The learned inverse temperature."""
        return {"logit_scale": unwrap(model).scale().item()}
