"""The ALBEF recipe: builds an ALBEF, its preprocessing and WordPiece batches; trains it with
:class:`vlkit.tasks.ALBEFTask` (ITC with momentum distillation, ITM with hard negatives, MLM);
evaluates ITC retrieval (and zero-shot on the built-in shapes) as for CLIP.

Options (the config's ``task:`` section): ``tokenizer`` (default ``bert-base-uncased``; ``shapes``
for the built-in shapes' WordPiece), ``alpha`` (distillation weight, 0.4), ``mlm_probability``
(0.15), ``negatives_all_ranks`` and ``same_caption_is_positive`` (see :class:`vlkit.tasks.ALBEFTask`).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from ...models.albef import ALBEF
from ...tasks import ALBEFTask
from .base import Recipe
from .common import check_vocabulary, model_from_spec


@dataclass(frozen=True)
class ALBEFOptions:
    tokenizer: str = "bert-base-uncased"
    alpha: float = 0.4  # weight of the momentum model's soft targets in ITC and MLM
    mlm_probability: float = 0.15  # share of caption tokens masked for MLM
    negatives_all_ranks: bool = True  # ITM hard negatives sampled from every process's batch
    same_caption_is_positive: bool = True  # equal captions are positives of each other

    def __post_init__(self) -> None:
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {self.alpha}")
        if not 0.0 < self.mlm_probability < 1.0:
            raise ValueError(f"mlm_probability must be in (0, 1), got {self.mlm_probability}")


class ALBEFRecipe(Recipe):
    """Builds an ALBEF, its preprocessing and batches, and computes its three pre-training losses.
    Evaluation is ITC retrieval (and zero-shot on the built-in shapes), as for CLIP: validation ITC
    loss (in-batch), Recall@1/5/10 of ITC retrieval and zero-shot accuracy."""

    name = "albef"
    validation_loss = "itc_loss"  # what the validation "loss" measures (the plots label it so)
    Options = ALBEFOptions
    default_preset = "albef-tiny"

    def build_task(self) -> ALBEFTask:
        o = self.options
        return ALBEFTask(
            self.tokenizer.mask_token_id,
            self.tokenizer.all_special_ids,
            alpha=o.alpha,
            mlm_probability=o.mlm_probability,
            negatives_all_ranks=o.negatives_all_ranks,
            same_caption_is_positive=o.same_caption_is_positive,
            chunk_size=self.loss.chunk_size,
        )

    def build_model(self) -> nn.Module:
        model = model_from_spec(self.model_spec, expected=ALBEF, task=self.name)
        check_vocabulary(self.tokenizer, self.options.tokenizer, model.config.text.vocab_size)
        return model
