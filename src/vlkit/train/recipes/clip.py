"""The CLIP recipe: builds a two-tower model, its preprocessing and batches; trains it with
:class:`vlkit.tasks.CLIPTask` (symmetric contrastive loss, gathered over all processes under
torchrun); ``evaluate`` gives validation loss, Recall@K both ways and, on data with zero-shot
labels (the built-in shapes), zero-shot top-1/top-5 accuracy per label set.

Options (the config's ``task:`` section): ``tokenizer`` (a name or folder for
:func:`vlkit.get_tokenizer`; default ``clip``).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from ...models.clip import CLIP
from ...tasks import CLIPTask
from .base import Recipe
from .common import model_from_spec


@dataclass(frozen=True)
class CLIPOptions:
    tokenizer: str = "clip"  # a name or folder for vlkit.get_tokenizer


class CLIPRecipe(Recipe):
    """Builds the model and its task; preprocessing, batches, ``losses`` and ``log_values`` (the
    task's), evaluation and summary are the defaults of :class:`~vlkit.train.recipes.base.Recipe`."""

    name = "clip"
    validation_loss = "contrastive_loss"  # what the validation "loss" measures (the plots label it so)
    Options = CLIPOptions
    default_preset = "clip-tiny"

    def build_task(self) -> CLIPTask:
        return CLIPTask(chunk_size=self.loss.chunk_size)

    def build_model(self) -> nn.Module:
        return model_from_spec(self.model_spec, expected=CLIP, task=self.name)
