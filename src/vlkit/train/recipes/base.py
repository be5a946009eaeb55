"""The defaults every recipe shares: one small base class, each recipe overriding what differs."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ...data.loader import ImageTextCollator
from ..config import LossConfig
from .common import (
    EvalOutput,
    captions_in,
    check_model_spec,
    contrastive_evaluate,
    load_tokenizer,
    retrieval_lines,
    zeroshot_lines,
)


class Recipe:
    """Defaults of the recipe protocol (:mod:`vlkit.train.recipes`) for an image-caption model:
    image-caption batches of the recipe's tokenizer, the task's losses and log values, the
    contrastive evaluation and its summary lines.

    A recipe sets ``name``, ``Options``, ``validation_loss`` and ``default_preset`` (the ``model``
    section when none is given), implements ``build_task()`` (the :mod:`vlkit.tasks` object, made
    once the options and the tokenizer are set) and ``build_model()``, and overrides what differs.

    ``model_spec`` is the ``model`` section of a training config: ``{"preset": "clip-tiny",
    **create_model overrides}`` or ``{"pretrained": folder}``; ``options`` the ``task`` section's
    (keyword arguments replace single fields); ``loss`` the ``loss`` section
    (:class:`vlkit.train.config.LossConfig`: how ``build_task`` computes the losses, e.g. their
    ``chunk_size``).
    """

    name: str
    validation_loss: str  # what the validation "loss" measures (the plots label it so)
    Options: type
    default_preset: str

    def __init__(
        self, model_spec: dict[str, Any] | None = None, options: Any = None, *, loss: LossConfig | None = None, **fields
    ) -> None:
        self.model_spec = dict(model_spec or {"preset": self.default_preset})
        self.loss = loss or LossConfig()
        self.options = dataclasses.replace(options or self.Options(), **fields)
        check_model_spec(self.model_spec, self.options, self.name)
        self.tokenizer = load_tokenizer(self.options.tokenizer)
        self.task = self.build_task()

    def build_task(self) -> Any:
        raise NotImplementedError

    def build_model(self) -> nn.Module:
        raise NotImplementedError

    def image_model(self, model: nn.Module) -> nn.Module:
        """The model whose vision tower reads the images (its config sets the size and preprocessing)."""
        return model

    def image_size(self, model: nn.Module) -> int:
        return self.image_model(model).config.vision.image_size

    def transform(self, model: nn.Module, train: bool = False) -> Callable:
        import vlkit

        return vlkit.image_transform(self.image_model(model), train=train)

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
