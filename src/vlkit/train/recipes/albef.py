"""The ALBEF recipe: builds an ALBEF, its preprocessing and WordPiece batches; trains it with
:class:`vlkit.tasks.ALBEFTask` (ITC with momentum distillation, ITM with hard negatives, MLM);
evaluates ITC retrieval (and zero-shot on the built-in shapes) as for CLIP.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ...tasks import ALBEFTask
from .clip import CLIPRecipe, EvalOutput


class ITCView(nn.Module):
    """Shows an ALBEF/BLIP model as a two-tower model for retrieval and zero-shot evaluation:
    ``forward`` -> normalised (image, text) ITC features, ``scale()`` -> inverse temperature."""

    def __init__(self, model: nn.Module, scale) -> None:
        super().__init__()
        self.model = model
        self._scale = scale

    def forward(self, pixel_values, input_ids, attention_mask=None):
        return (self.model.encode_image(pixel_values, normalize=True),
                self.model.encode_text(input_ids, attention_mask, normalize=True))

    def encode_image(self, pixel_values, normalize: bool = False):
        return self.model.encode_image(pixel_values, normalize=normalize)

    def encode_text(self, input_ids, attention_mask=None, normalize: bool = False):
        return self.model.encode_text(input_ids, attention_mask, normalize=normalize)

    def scale(self) -> torch.Tensor:
        return self._scale()


class ALBEFRecipe(CLIPRecipe):
    """Builds an ALBEF, its preprocessing and batches (captions tokenized with BERT's WordPiece),
    and computes its three pre-training losses. Evaluation is ITC retrieval (and zero-shot on
    the built-in shapes), as for CLIP."""

    name = "albef"
    validation_loss = "itc_loss"  # what evaluate()'s "loss" is (the loss plot's label)

    def __init__(
        self,
        model_spec: dict[str, Any] | None = None,
        tokenizer: str = "bert-base-uncased",
        *,
        alpha: float = 0.4,
        mlm_probability: float = 0.15,
        negatives_all_ranks: bool = True,
        same_caption_is_positive: bool = True,
    ) -> None:
        super().__init__(model_spec or {"preset": "albef-tiny"}, tokenizer)
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        self.alpha = alpha
        self.mlm_probability = mlm_probability
        self.negatives_all_ranks = negatives_all_ranks
        self.same_caption_is_positive = same_caption_is_positive

    def make_task(self) -> ALBEFTask:
        tok = self.tokenizer
        return ALBEFTask(tok.mask_token_id, tok.all_special_ids, alpha=self.alpha, mlm_probability=self.mlm_probability,
                         negatives_all_ranks=self.negatives_all_ranks,
                         same_caption_is_positive=self.same_caption_is_positive)

    def build_model(self) -> nn.Module:
        model = super().build_model()
        for name in ("momentum_features", "itm_logits", "enqueue"):
            if not callable(getattr(model, name, None)):
                raise TypeError(f"the albef task needs an ALBEF model (with {name}()); got {type(model).__name__}")
        vocab = model.config.text.vocab_size
        if self.tokenizer.vocab_size > vocab:
            raise ValueError(f"tokenizer {self.tokenizer_name!r} has {self.tokenizer.vocab_size} tokens but the model's "
                             f"vocabulary only {vocab}: set model.text.vocab_size >= {self.tokenizer.vocab_size}")
        return model

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def evaluate(self, model: nn.Module, dataset, **kwargs) -> EvalOutput:
        """Validation ITC loss (in-batch), Recall@1/5/10 of ITC retrieval and zero-shot accuracy."""
        return super().evaluate(ITCView(model, model.scale), dataset, **kwargs)
