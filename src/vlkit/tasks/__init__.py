"""Tasks: a model and the losses it is trained with, combined.

A task maps ``(model, batch) -> {"name_loss": scalar tensor, ...}`` (the training loop sums
them) and ``log_values(model) -> {name: float}`` for extra values to log. Tasks import only
models/ and losses/; building models, batches and evaluation is the training recipes' job
(:mod:`vlkit.train.recipes`). ``model`` may be wrapped in DistributedDataParallel: the first
forward goes through the wrapper (that is what DDP hooks), later passes use the inner model.
A contrastive task also offers ``features`` / ``loss_from_features`` (:class:`FeatureTask`), so
gradient accumulation gives the gradient of the whole batch.
"""

from .albef import ALBEFTask, caption_ids
from .blip import BLIPTask
from .blip2 import Blip2Stage1Task, Blip2Stage2Task
from .clip import CLIPTask
from .features import FeatureTask
from .lm import LMTask
from .siglip import SigLIPTask
from .vilt import ViltTask, ViltVQATask
from .vlm import VLMTask
from .vqa import BLIPVQATask, VQATask

__all__ = [
    "ALBEFTask",
    "BLIPTask",
    "Blip2Stage1Task",
    "Blip2Stage2Task",
    "BLIPVQATask",
    "CLIPTask",
    "FeatureTask",
    "LMTask",
    "SigLIPTask",
    "VLMTask",
    "VQATask",
    "ViltTask",
    "ViltVQATask",
    "caption_ids",
]
