"""Visual question answering as BLIP trains it: the question is encoded together with the image
(the MED's image-grounded text encoder, mode 3) and the answer decoder, cross-attending to the
encoded question, is trained with next-token cross-entropy on the answer.

Batches carry the question and the answer under their own keys, so that one batch can also carry
a caption for the pre-training losses (:class:`BLIPVQATask`):

- ``question_input_ids`` / ``question_attention_mask`` (B, Tq): the tokenized question as the
  tokenizer gives it ([CLS] question [SEP]). Its first token is kept, as ``Blip.answer``,
  transformers and ``vlkit vqa`` feed it (BLIP's own code swaps it for [ENC]);
- ``answer_input_ids`` / ``answer_attention_mask`` (B, Ta): [CLS] answer [SEP]; the first token
  becomes [DEC] (the decoder's start token), the loss covers the answer and [SEP].

The decoder's cross-attention sees only the real question tokens (the question mask), as in
BLIP's training and :meth:`vlkit.models.Blip.rank_answers`; label smoothing 0.1 as in BLIP.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..losses.lm import lm_labels, lm_loss
from ..models.base import unwrap
from .blip import BLIPTask

VQA_KEYS = ("question_input_ids", "question_attention_mask", "answer_input_ids", "answer_attention_mask")


def _check_vqa_model(model: nn.Module) -> None:
    c = getattr(model, "config", None)
    if c is None or getattr(c, "decoder_context", None) != "question" or not c.text_decoder:
        raise ValueError(
            "VQA needs a BLIP whose decoder reads the encoded question (decoder_context='question'); "
            f"got {type(model).__name__}"
        )


class VQATask:
    """``losses(model, batch)`` -> ``{"vqa_loss"}`` for a BLIP VQA model
    (``decoder_context="question"``)."""

    name = "vqa"

    def __init__(self, *, label_smoothing: float = 0.1) -> None:
        self.label_smoothing = label_smoothing

    def answer_inputs(self, model: nn.Module, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """The decoder's answer ids ([DEC] answer [SEP] padding) and mask, (B, Ta) each."""
        missing = [k for k in VQA_KEYS if k not in batch]
        if missing:
            raise KeyError(f"a VQA batch needs {list(VQA_KEYS)}; missing {missing}")
        ids = batch["answer_input_ids"].clone()
        ids[:, 0] = model.config.text.bos_token_id  # [CLS] -> [DEC]
        return ids, batch["answer_attention_mask"]

    def losses(self, model: nn.Module, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        vqa = unwrap(model)
        _check_vqa_model(vqa)
        ids, mask = self.answer_inputs(vqa, batch)
        out = model(
            batch["pixel_values"],
            batch["question_input_ids"],
            batch["question_attention_mask"],
            decoder_input_ids=ids,
            decoder_attention_mask=mask,
        )  # through DDP
        return {"vqa_loss": lm_loss(out["lm_logits"], lm_labels(ids, mask), label_smoothing=self.label_smoothing)}

    def losses_from_image(
        self, vqa: nn.Module, batch: dict[str, Any], image_embeds: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """The same loss when the image tokens (B, 1 + N, Cv) were computed already (by a model
        sharing ``vqa``'s image encoder)."""
        _check_vqa_model(vqa)
        ids, mask = self.answer_inputs(vqa, batch)
        q_mask = batch["question_attention_mask"]
        question = vqa.fused_hidden(batch["question_input_ids"], q_mask, image_embeds)  # (B, Tq, H)
        logits = vqa.decoder_logits(ids, mask, question, q_mask)  # (B, Ta, V)
        return {"vqa_loss": lm_loss(logits, lm_labels(ids, mask), label_smoothing=self.label_smoothing)}

    def log_values(self, model: nn.Module) -> dict[str, float]:
        return {}


class BLIPVQATask:
    """Two BLIP models trained in one run on batches that carry captions and questions: the
    pre-training losses (:class:`BLIPTask`: ITC, ITM, captioning LM) on ``model.captioner`` and
    the VQA answer loss on ``model.vqa``, which shares the captioner's image encoder and text
    encoder (so the question is encoded by the same image-grounded encoder ITM trains, as BLIP's
    VQA model starts from the pre-trained one) and has its own answer decoder.

    ``model`` has ``captioner`` and ``vqa`` attributes and its ``forward`` is the captioner's (the
    first call goes through DDP); ``losses`` gives ``{"itc_loss", "itm_loss", "lm_loss",
    "vqa_loss"}`` (the first three as far as the captioner has the parts). The image is encoded
    once per step and both models read the same image tokens.
    """

    name = "blip-vqa"

    def __init__(self, blip: BLIPTask | None = None, vqa: VQATask | None = None, *, vqa_weight: float = 1.0) -> None:
        self.blip = blip or BLIPTask()
        self.vqa = vqa or VQATask()
        self.vqa_weight = vqa_weight

    def losses(self, model: nn.Module, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        pair = unwrap(model)
        out = self.blip.forward(model, batch, pair.captioner)  # through DDP: the captioner's forward
        if pair.vqa.vision is not pair.captioner.vision:
            raise ValueError(
                "BLIPVQATask reuses the captioner's image tokens: the VQA model must share its vision encoder"
            )
        losses = self.blip.losses_from(pair.captioner, batch, out)
        vqa = self.vqa.losses_from_image(pair.vqa, batch, out["image_embeds"])["vqa_loss"]
        losses["vqa_loss"] = vqa * self.vqa_weight if self.vqa_weight != 1.0 else vqa
        return losses

    def log_values(self, model: nn.Module) -> dict[str, float]:
        return self.blip.log_values(unwrap(model).captioner)
