"""The BLIP task: image-text contrast (ITC), matching with hard negatives (ITM) and captioning
with the image-grounded decoder (LM), BLIP's three pre-training objectives.

``losses(model, batch)`` gives whichever of ``{"itc_loss", "itm_loss", "lm_loss"}`` the model
has parts for (retrieval heads: ITC and ITM; a decoder: LM):

- ITC: the symmetric contrastive loss of the projected [CLS] features, gathered over all
  processes (:func:`vlkit.losses.contrastive.clip_loss`) at ``model.scale()`` (at most 100);
- ITM: the caption's first token becomes [ENC]; per image one text and per text one image are
  sampled among all ranks' samples in proportion to the softmaxed ITC similarity (equal
  captions excluded) and the matching head classifies B positive and 2B negative pairs;
- LM: the caption's first token becomes [DEC]; next-token cross-entropy with label smoothing
  0.1, padding and an optional prompt (``prompt="a picture of "`` as in BLIP's captioning
  fine-tuning) ignored.

BLIP's own pre-training adds momentum encoders with queues to ITC; this task uses in-batch
(all-rank) negatives instead, as BLIP's models in transformers have no momentum copy.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..losses.contrastive import clip_loss
from ..losses.itm import hard_negatives, itm_loss, itm_pairs
from ..losses.lm import lm_labels, lm_loss
from ..losses.tiled_contrastive import check_chunk_size
from ..models.base import unwrap
from .albef import batch_caption_ids


class BLIPTask:
    """BLIP's pre-training losses. ``prompt_length``: tokens of the caption prompt ([DEC] and the
    prompt's words) that the LM loss ignores."""

    name = "blip"

    def __init__(
        self,
        *,
        prompt_length: int = 0,
        label_smoothing: float = 0.1,
        negatives_all_ranks: bool = True,
        same_caption_is_positive: bool = True,
        chunk_size: int | None = None,
    ) -> None:
        check_chunk_size(chunk_size)
        self.chunk_size = chunk_size  # ITC in tiles of the logits (clip_loss); None: all at once
        self.prompt_length = prompt_length
        self.label_smoothing = label_smoothing
        self.negatives_all_ranks = negatives_all_ranks
        self.same_caption_is_positive = same_caption_is_positive

    def losses(self, model: nn.Module, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        out = self.forward(model, batch)  # through DDP
        return self.losses_from(unwrap(model), batch, out)

    def decoder_inputs(self, blip: nn.Module, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """The captioning decoder's ids and mask (B, T): ``decoder_input_ids`` (prompt + caption)
        when the batch has them, else the caption; the first token becomes [DEC]."""
        dec_ids = batch.get("decoder_input_ids", batch["input_ids"]).clone()
        dec_mask = batch.get("decoder_attention_mask", batch["attention_mask"])
        dec_ids[:, 0] = blip.config.text.bos_token_id  # [CLS] -> [DEC]
        return dec_ids, dec_mask

    def forward(
        self, model: nn.Module, batch: dict[str, Any], blip: nn.Module | None = None
    ) -> dict[str, torch.Tensor]:
        """``model``'s forward on the batch (through the DDP wrapper, if any): image tokens, ITC
        features and, with a decoder, the captioning logits. ``blip``: the BLIP that forward runs
        (default: ``model`` unwrapped; a container whose forward is its BLIP's passes that one)."""
        blip = unwrap(model) if blip is None else blip
        dec_ids, dec_mask = self.decoder_inputs(blip, batch) if blip.config.text_decoder else (None, None)
        return model(
            batch["pixel_values"],
            batch["input_ids"],
            batch["attention_mask"],
            decoder_input_ids=dec_ids,
            decoder_attention_mask=dec_mask,
        )

    def losses_from(
        self, blip: nn.Module, batch: dict[str, Any], out: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """The losses, given the outputs of :meth:`forward` on the same batch (``blip`` unwrapped)."""
        c = blip.config
        ids, mask = batch["input_ids"], batch["attention_mask"]
        losses: dict[str, torch.Tensor] = {}
        if c.retrieval_heads:
            scale = blip.scale()
            image_f = torch.nn.functional.normalize(out["image_features"], dim=-1)
            text_f = torch.nn.functional.normalize(out["text_features"], dim=-1)
            losses["itc_loss"] = clip_loss(image_f, text_f, scale, chunk_size=self.chunk_size)["contrastive_loss"]
            enc_ids = ids.clone()
            enc_ids[:, 0] = c.text.enc_token_id  # [CLS] -> [ENC], as BLIP's own code does
            text_side = {"input_ids": enc_ids, "attention_mask": mask}
            pads = {"input_ids": c.text.pad_token_id, "attention_mask": 0}
            pair_ids = batch_caption_ids(batch, ids.device) if self.same_caption_is_positive else None
            neg_images, neg_texts = hard_negatives(
                image_f,
                text_f,
                scale,
                out["image_embeds"],
                text_side,
                pads,
                ids=pair_ids,
                all_ranks=self.negatives_all_ranks,
            )
            images, texts = itm_pairs(out["image_embeds"], text_side, neg_images, neg_texts, pads)  # 3B pairs
            fused = blip.fused_hidden(texts["input_ids"], texts["attention_mask"], images)  # (3B, T, H)
            losses["itm_loss"] = itm_loss(blip.match_logits(fused))
        if c.text_decoder:
            dec_ids, dec_mask = self.decoder_inputs(blip, batch)
            labels = lm_labels(dec_ids, dec_mask, self.prompt_length)
            losses["lm_loss"] = lm_loss(out["lm_logits"], labels, label_smoothing=self.label_smoothing)
        return losses

    def log_values(self, model: nn.Module) -> dict[str, float]:
        blip = unwrap(model)
        return {"logit_scale": blip.scale().item()} if blip.config.retrieval_heads else {}
