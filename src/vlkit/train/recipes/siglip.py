"""The SigLIP recipe: builds a SigLIP model, its preprocessing and batches; trains it with
:class:`vlkit.tasks.SigLIPTask` (the pairwise sigmoid loss; under torchrun every process scores its
images against the texts of all processes); ``evaluate`` gives the validation sigmoid loss,
Recall@K both ways and, on data with zero-shot labels (the built-in shapes), zero-shot top-1/top-5
accuracy per label set. Retrieval and zero-shot rank by cosine similarity, as CLIP's do: the
sigmoid scores ``scale * cosine + bias`` (scale > 0) rank every candidate in the same order.

Options (the config's ``task:`` section): ``tokenizer`` (a name or folder for
:func:`vlkit.get_tokenizer`; default ``clip``: vlkit cannot read SigLIP's own SentencePiece
tokenizer, so a model trained here uses CLIP's, as the ``siglip-tiny`` preset expects).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ...losses.sigmoid import sigmoid_loss
from ...models.siglip import Siglip
from ...tasks import SigLIPTask
from .base import Recipe
from .common import EvalOutput, contrastive_evaluate, model_from_spec


@dataclass(frozen=True)
class SigLIPOptions:
    tokenizer: str = "clip"  # a name or folder for vlkit.get_tokenizer


def sigmoid_validation_loss(model: nn.Module, image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """The sigmoid loss of one validation batch (normalised features), on this process alone."""
    return sigmoid_loss(image, text, model.scale(), model.bias(), gather=False)["sigmoid_loss"]


class SigLIPRecipe(Recipe):
    """Builds the model and its task; the validation loss is the sigmoid loss. Preprocessing,
    batches, ``losses``, ``log_values`` and summary are the defaults of
    :class:`~vlkit.train.recipes.base.Recipe`."""

    name = "siglip"
    validation_loss = "sigmoid_loss"
    Options = SigLIPOptions
    default_preset = "siglip-tiny"

    def build_task(self) -> SigLIPTask:
        return SigLIPTask(chunk_size=self.loss.chunk_size)

    def build_model(self) -> nn.Module:
        return model_from_spec(self.model_spec, expected=Siglip, task=self.name)

    def evaluate(self, model: nn.Module, dataset, **kwargs) -> EvalOutput:
        """Validation sigmoid loss, Recall@1/5/10 and zero-shot accuracy (:func:`contrastive_evaluate`)."""
        return contrastive_evaluate(
            model, dataset, self.collate(), self.tokenizer, validation_loss=sigmoid_validation_loss, **kwargs
        )
