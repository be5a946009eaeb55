"""The CLIP recipe: builds a two-tower model, its preprocessing and batches; trains it with
:class:`vlkit.tasks.CLIPTask` (symmetric contrastive loss, gathered over all processes under
torchrun); ``evaluate`` gives validation loss, Recall@K both ways and, on data with zero-shot
labels (the built-in shapes), zero-shot top-1/top-5 accuracy per label set.

Options (the config's ``task:`` section): ``tokenizer`` (a name or folder for
:func:`vlkit.get_tokenizer`; default ``clip``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ...data.loader import ImageTextCollator
from ...models.clip import CLIP
from ...tasks import CLIPTask
from .common import (
    EvalOutput,
    captions_in,
    check_model_spec,
    contrastive_evaluate,
    load_tokenizer,
    model_from_spec,
    retrieval_lines,
    zeroshot_lines,
)


@dataclass(frozen=True)
class CLIPOptions:
    tokenizer: str = "clip"  # a name or folder for vlkit.get_tokenizer


class CLIPRecipe:
    """Builds the model, its preprocessing and batches; ``losses`` and ``log_values`` are the task's.

    ``model_spec`` is the ``model`` section of a training config: ``{"preset": "clip-tiny",
    **create_model overrides}`` or ``{"pretrained": folder}``; ``options`` the ``task`` section's
    (keyword arguments replace single fields).
    """

    name = "clip"
    validation_loss = "contrastive_loss"  # what the validation "loss" measures (the plots label it so)
    Options = CLIPOptions

    def __init__(self, model_spec: dict[str, Any] | None = None, options: CLIPOptions | None = None, **fields) -> None:
        self.model_spec = dict(model_spec or {"preset": "clip-tiny"})
        self.options = dataclasses.replace(options or CLIPOptions(), **fields)
        check_model_spec(self.model_spec, self.options, self.name)
        self.tokenizer = load_tokenizer(self.options.tokenizer)
        self.task = CLIPTask()

    def build_model(self) -> nn.Module:
        return model_from_spec(self.model_spec, expected=CLIP, task=self.name)

    def image_size(self, model: nn.Module) -> int:
        return model.config.vision.image_size

    def transform(self, model: nn.Module, train: bool = False) -> Callable:
        import vlkit

        return vlkit.image_transform(model, train=train)

    def collate(self) -> Callable:
        return ImageTextCollator(self.tokenizer)

    def batch_size(self, batch: dict[str, Any]) -> int:
        return captions_in(batch)

    def losses(self, model: nn.Module, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        return self.task.losses(model, batch)

    def log_values(self, model: nn.Module) -> dict[str, float]:
        return self.task.log_values(model)

    def evaluate(self, model: nn.Module, dataset, **kwargs) -> EvalOutput:
        """Validation loss, Recall@1/5/10 and zero-shot accuracy (:func:`contrastive_evaluate`;
        keyword arguments: batch_size, device, precision, zeroshot, retrieval, plot_size)."""
        return contrastive_evaluate(model, dataset, self.collate(), self.tokenizer, **kwargs)

    def summary(self, metrics: dict[str, float], num_images: int | None = None) -> list[str]:
        """The headline numbers of an evaluation, as lines for people."""
        return zeroshot_lines(metrics, num_images) + retrieval_lines(metrics, num_images)
