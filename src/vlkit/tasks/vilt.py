"""The ViLT tasks: pre-training with image-text matching and masked language modelling
(:class:`ViltTask`), and VQA fine-tuning as multi-label classification (:class:`ViltVQATask`).

Pre-training, per batch of B (image, caption) pairs (``losses`` -> ``{"itm_loss", "mlm_loss"}``):

- ITM with in-batch negatives, as ViLT draws them: every image is also paired with the caption
  of another sample of the batch, drawn uniformly among those whose caption differs from its own
  (equal captions, which the built-in shapes repeat, are never negatives); the ITM head on the
  pooled state classifies the B true and B false pairs (two-way cross-entropy, label 1 = matched);
- MLM with whole-word masking: 15% of the caption's words (all pieces of a word together; BERT's
  80/10/10 per piece) are corrupted and predicted from the text read with its image.

The three groups (masked caption + image, caption + image, other caption + image) run through
the joint encoder as ONE batch of 3B pairs: one forward, through the DDP wrapper.

VQA (``losses`` -> ``{"vqa_loss"}``): the question read with the image, the classifier over the
answer vocabulary trained with binary cross-entropy against soft scores (VQA v2's: an answer
given by ``n`` of the annotators scores ``min(1, n / 3)``; a single answer counts as ten agreeing
annotators), summed over answers and averaged over questions, as ViLT and transformers do.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..losses.itm import MATCHED, NOT_MATCHED, itm_loss, positive_mask, sample_negatives
from ..losses.lm import mlm_loss
from ..losses.mlm import IGNORE_INDEX, mask_tokens
from ..models.base import unwrap
from .albef import batch_caption_ids

SINGLE_ANSWER_ANNOTATORS = 10  # a question with one answer counts as ten agreeing annotators


def in_batch_negatives(pair_ids: torch.Tensor | None, batch_size: int, generator=None) -> torch.Tensor:
    """For each of B samples another sample (B,) drawn uniformly among those that are not its
    positives (itself and, with ``pair_ids`` (B,), every sample with the same id)."""
    pos = positive_mask(batch_size, batch_size, 0, pair_ids, pair_ids)  # (B, B)
    return sample_negatives(torch.zeros(batch_size, batch_size), pos, generator)


class ViltTask:
    """ViLT's pre-training: ITM with in-batch negatives and MLM with whole-word masking.
    ``mask_token_id``, ``special_ids`` and ``continuation`` ((V,) bool: ids that continue a word;
    None masks single tokens) come from the tokenizer the captions were encoded with."""

    name = "vilt"

    def __init__(
        self,
        mask_token_id: int,
        special_ids: Iterable[int],
        *,
        continuation: torch.Tensor | None = None,
        mlm_probability: float = 0.15,
        same_caption_is_positive: bool = True,
    ) -> None:
        if not 0.0 < mlm_probability < 1.0:
            raise ValueError(f"mlm_probability must be in (0, 1), got {mlm_probability}")
        self.mask_token_id = mask_token_id
        self.special_ids = sorted(set(special_ids))
        self.continuation = continuation
        self.mlm_probability = mlm_probability
        self.same_caption_is_positive = same_caption_is_positive

    def losses(self, model: nn.Module, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        vilt = unwrap(model)
        pixels, ids, mask = batch["pixel_values"], batch["input_ids"], batch["attention_mask"]
        B, T = ids.shape
        if B < 2:
            raise ValueError("ViLT's ITM draws its negatives from the batch: it needs at least 2 samples")
        mlm_ids, labels = mask_tokens(
            ids,
            vilt.config.vocab_size,
            self.mask_token_id,
            self.special_ids,
            self.mlm_probability,
            continuation=self.continuation,
        )
        labels = labels.masked_fill(mask == 0, IGNORE_INDEX)  # padding is never a target
        pair_ids = batch_caption_ids(batch) if self.same_caption_is_positive else None  # (B,) on the CPU
        other = in_batch_negatives(pair_ids, B).to(ids.device)  # (B,)
        hidden = model(
            torch.cat([pixels, pixels, pixels]),
            torch.cat([mlm_ids, ids, ids[other]]),
            torch.cat([mask, mask, mask[other]]),
        )  # (3B, T + 1 + N, H), through DDP
        mlm = mlm_loss(vilt.text_logits(hidden[:B], T), labels)
        itm_labels = torch.cat([ids.new_full((B,), MATCHED), ids.new_full((B,), NOT_MATCHED)])
        itm = itm_loss(vilt.match_logits(hidden[B:]), itm_labels)
        return {"itm_loss": itm, "mlm_loss": mlm}

    def log_values(self, model: nn.Module) -> dict[str, float]:
        return {}


def vqa_targets(answer_lists: Sequence[Sequence[str]], answers: Sequence[str]) -> torch.Tensor:
    """Soft scores (B, A): ``min(1, n / 3)`` for an answer ``n`` annotators gave (a single answer:
    ten annotators); answers outside the vocabulary score nothing, as in VQA v2 training."""
    index = {a: i for i, a in enumerate(answers)}
    out = torch.zeros(len(answer_lists), len(answers))
    for row, given in enumerate(answer_lists):
        counts = Counter(given) if len(given) > 1 else Counter({a: SINGLE_ANSWER_ANNOTATORS for a in given})
        for answer, n in counts.items():
            if answer in index:
                out[row, index[answer]] = min(1.0, n / 3)
    return out


def vqa_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of answer logits (B, A) against soft scores (B, A), summed over the
    answers and averaged over the questions (``mean * A``, as ViLT and transformers compute it)."""
    if logits.shape != targets.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and targets {tuple(targets.shape)} differ in shape")
    return F.binary_cross_entropy_with_logits(logits.float(), targets.float()) * targets.shape[1]


class ViltVQATask:
    """``losses(model, batch)`` -> ``{"vqa_loss"}`` for a ViLT with a VQA head, on question batches
    (:class:`vlkit.data.vqa.QuestionAnswerCollator`: ``question_input_ids``,
    ``question_attention_mask``, ``answer_lists``)."""

    name = "vilt-vqa"

    def losses(self, model: nn.Module, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        vilt = unwrap(model)
        answers = vilt.config.answers
        if not answers:
            raise ValueError("VQA needs a ViLT with an answer vocabulary (config.answers)")
        hidden = model(batch["pixel_values"], batch["question_input_ids"], batch["question_attention_mask"])
        logits = vilt.answer_logits(hidden)  # (B, A)
        targets = vqa_targets(batch["answer_lists"], answers).to(logits.device)
        return {"vqa_loss": vqa_loss(logits, targets)}

    def log_values(self, model: nn.Module) -> dict[str, float]:
        return {}
