"""The ALBEF task: image-text contrast with momentum distillation (ITC), matching with hard
negatives (ITM) and image-conditioned masked language modelling (MLM).

``losses(model, batch)`` gives ``{"itc_loss", "itm_loss", "mlm_loss"}``. Per training step:

1. the online model's forward (through the DDP wrapper when there is one) gives image tokens,
   text states, normalised ITC features and MLM logits of the masked caption;
2. the momentum encoders take an EMA step and compute their ITC features (and MLM logits);
3. ITC: each image against the momentum texts of the batch and the text queue (and each text
   against images), targets ``alpha * softmax(momentum similarities) + (1 - alpha) * positives``;
4. ITM: per image one text and per text one image sampled among all ranks' samples in
   proportion to the softmaxed ITC similarity (captions equal to the pair's own excluded), and
   the fusion encoder classifies B positive and 2B negative pairs;
5. MLM: 15% of the caption's tokens masked (BERT's 80/10/10), predicted from the text fused with
   the image, distilled from the momentum model's predictions with the same ``alpha``;
6. the momentum features of all ranks go into the queues.

Captions that are equal (the built-in shapes repeat them) count as the same pair id: they are
positives of each other in ITC and never sampled as ITM negatives.

Unlike ALBEF's code, ``alpha`` is constant (ALBEF ramps it from 0 over the first epoch).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from ..losses.contrastive import clip_loss, gather_features
from ..losses.distillation import itc_distillation_loss
from ..losses.itm import caption_ids, hard_negatives, itm_loss, itm_pairs
from ..losses.lm import mlm_loss
from ..losses.mlm import IGNORE_INDEX, mask_tokens
from ..losses.tiled_contrastive import check_chunk_size
from ..models.base import unwrap


def batch_caption_ids(batch: dict[str, Any], device: torch.device | None = None) -> torch.Tensor:
    """The batch's pair ids (B,): the collator's ``caption_ids`` (:class:`vlkit.data.ImageTextCollator`
    makes them in the data workers, so a compiled step reads a tensor), else :func:`caption_ids` of
    its ``captions`` (strings: under ``torch.compile`` a graph break)."""
    ids = batch.get("caption_ids")
    return caption_ids(batch["captions"], device) if ids is None else ids.to(device)


class ALBEFTask:
    """ITC with momentum distillation, ITM with hard negatives and MLM. ``mask_token_id`` and
    ``special_ids`` come from the tokenizer the captions were encoded with."""

    name = "albef"

    def __init__(
        self,
        mask_token_id: int,
        special_ids: Iterable[int],
        *,
        alpha: float = 0.4,
        mlm_probability: float = 0.15,
        negatives_all_ranks: bool = True,
        same_caption_is_positive: bool = True,
        chunk_size: int | None = None,
    ) -> None:
        check_chunk_size(chunk_size)
        self.chunk_size = chunk_size  # ITC without momentum encoders in tiles of the logits (clip_loss)
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        self.mask_token_id = mask_token_id
        self.special_ids = sorted(set(special_ids))
        self.alpha = alpha
        self.mlm_probability = mlm_probability
        self.negatives_all_ranks = negatives_all_ranks
        self.same_caption_is_positive = same_caption_is_positive

    def losses(self, model: nn.Module, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        albef = unwrap(model)
        pixels, ids, mask = batch["pixel_values"], batch["input_ids"], batch["attention_mask"]
        mlm_ids, mlm_labels = mask_tokens(
            ids, albef.config.text.vocab_size, self.mask_token_id, self.special_ids, self.mlm_probability
        )
        mlm_labels = mlm_labels.masked_fill(mask == 0, IGNORE_INDEX)  # padding is never a target
        pair_ids = batch_caption_ids(batch, ids.device) if self.same_caption_is_positive else None

        out = model(pixels, ids, mask, mlm_input_ids=mlm_ids)  # through DDP: its forward is hooked
        scale = albef.scale()
        has_momentum = albef.momentum_encoders is not None
        if has_momentum and self.chunk_size is not None:
            raise ValueError(
                "loss.chunk_size: ALBEF's momentum-distilled ITC has no tiled form; "
                "use chunk_size only with a model without momentum encoders"
            )
        if has_momentum:
            if albef.training:
                albef.momentum_update()
            m = albef.momentum_features(pixels, ids, mask, mlm_ids)
            itc = itc_distillation_loss(
                out["image_features"],
                out["text_features"],
                m["image_features"],
                m["text_features"],
                scale,
                albef.image_queue,
                albef.text_queue,
                alpha=self.alpha,
                ids=pair_ids,
                queue_ids=albef.id_queue,
            )["itc_loss"]
        else:
            m = {}
            itc = clip_loss(out["image_features"], out["text_features"], scale, chunk_size=self.chunk_size)[
                "contrastive_loss"
            ]

        text_side = {"hidden": out["text_hidden"], "attention_mask": mask}
        neg_images, neg_texts = hard_negatives(
            out["image_features"],
            out["text_features"],
            scale,
            out["image_embeds"],
            text_side,
            ids=pair_ids,
            all_ranks=self.negatives_all_ranks,
        )
        images, texts = itm_pairs(out["image_embeds"], text_side, neg_images, neg_texts)  # 3B pairs
        fused = albef.encoders.fuse(texts["hidden"], texts["attention_mask"], images)  # (3B, T, H)
        itm = itm_loss(albef.match_logits(fused))

        mlm = mlm_loss(out["mlm_logits"], mlm_labels, m.get("mlm_logits"), self.alpha)

        if has_momentum and albef.training:
            albef.enqueue(
                gather_features(m["image_features"]),
                gather_features(m["text_features"]),
                None if pair_ids is None else gather_features(pair_ids),
            )
        return {"itc_loss": itc, "itm_loss": itm, "mlm_loss": mlm}

    def log_values(self, model: nn.Module) -> dict[str, float]:
        return {"logit_scale": unwrap(model).scale().item()}
