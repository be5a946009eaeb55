"""Training recipes: what the generic loop (:func:`vlkit.train.train`) needs beyond the task's
losses. Each recipe subclasses :class:`.base.Recipe` directly (one level), which gives the
methods below defaults for an image-caption model (``__init__``, the model's image size and
preprocessing, ImageTextCollator batches, the task's losses and log values, the contrastive
evaluation and its summary); a recipe sets its class attributes and ``default_preset``,
implements ``build_task()`` and ``build_model()`` and overrides only what differs. Other shared
pieces are functions in :mod:`.common` and :mod:`.blip`. Each recipe has:

    name: str                                 the config's task.name
    Options                                   a frozen dataclass: the config's task: section
    __init__(model_spec=None, options=None, *, loss=None, **fields)   the model section, the options (fields
                                              replace single ones), the loss section (LossConfig)
    options, tokenizer, task                  the options, the tokenizer (saved with the model), the vlkit.tasks object
    build_task() -> task                      called by __init__ once options and tokenizer are set
    validation_loss: str                      the loss evaluate() reports as "loss" (labels the plot)
    build_model() -> nn.Module
    image_size(model) -> int                  size the built-in data is rendered at
    transform(model, train) -> PIL image -> tensor
    collate() -> list of dataset items -> batch dict
    batch_size(batch) -> int                  samples in a collated batch
    losses(model, batch) -> {"name_loss": scalar tensor, ...}   (the task's; the loop sums them)
    log_values(model) -> {name: float}        extra values for the training log (may be empty)
    evaluate(model, dataset, *, batch_size, device, precision, zeroshot, retrieval) -> EvalOutput
    summary(metrics, num_images) -> [str]     headline lines for people

The config's ``task`` section names the recipe (``task: clip`` or ``task: {name: blip, prompt:
...}``). Register a new one by adding it to RECIPES.
"""

from __future__ import annotations

from typing import Any

from .albef import ALBEFOptions, ALBEFRecipe
from .base import Recipe
from .blip import BLIPOptions, BLIPRecipe
from .blip2 import Blip2Stage1Options, Blip2Stage1Recipe, Blip2Stage2Options, Blip2Stage2Recipe
from .blip_vqa import BLIPVQAOptions, BLIPVQARecipe
from .clip import CLIPOptions, CLIPRecipe
from .common import EvalOutput
from .lm import LMOptions, LMRecipe
from .siglip import SigLIPOptions, SigLIPRecipe
from .vilt import ViltOptions, ViltRecipe, ViltVQAOptions, ViltVQARecipe
from .vlm import VLMOptions, VLMStage1Recipe, VLMStage2Recipe

RECIPES = {
    "albef": ALBEFRecipe,
    "blip": BLIPRecipe,
    "blip-vqa": BLIPVQARecipe,
    "blip2-stage1": Blip2Stage1Recipe,
    "blip2-stage2": Blip2Stage2Recipe,
    "clip": CLIPRecipe,
    "lm": LMRecipe,
    "vlm-stage1": VLMStage1Recipe,
    "vlm-stage2": VLMStage2Recipe,
    "siglip": SigLIPRecipe,
    "vilt": ViltRecipe,
    "vilt-vqa": ViltVQARecipe,
}


def get_recipe(task: Any, model_spec: dict | None = None, loss: Any = None):
    """A recipe for a task: its name (default options) or a config's ``task`` section
    (:class:`vlkit.train.config.TaskConfig`: ``name`` and ``options``), for a ``model`` section
    and a ``loss`` section (:class:`vlkit.train.config.LossConfig`; None: its defaults)."""
    name, options = (task, None) if isinstance(task, str) else (task.name, task.options)
    if name not in RECIPES:
        raise ValueError(f"unknown task {name!r}; known tasks: {sorted(RECIPES)}")
    return RECIPES[name](model_spec, options, loss=loss)


__all__ = [
    "ALBEFOptions",
    "ALBEFRecipe",
    "BLIPOptions",
    "BLIPRecipe",
    "BLIPVQAOptions",
    "BLIPVQARecipe",
    "Blip2Stage1Options",
    "Blip2Stage1Recipe",
    "Blip2Stage2Options",
    "Blip2Stage2Recipe",
    "CLIPOptions",
    "CLIPRecipe",
    "EvalOutput",
    "LMOptions",
    "LMRecipe",
    "RECIPES",
    "SigLIPOptions",
    "SigLIPRecipe",
    "Recipe",
    "VLMOptions",
    "VLMStage1Recipe",
    "VLMStage2Recipe",
    "get_recipe",
    "ViltOptions",
    "ViltRecipe",
    "ViltVQAOptions",
    "ViltVQARecipe",
]
