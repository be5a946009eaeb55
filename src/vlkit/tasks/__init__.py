"""Tasks: a model and the losses it is trained with, combined.

A task maps ``(model, batch) -> {"name_loss": scalar tensor, ...}`` (the training loop sums
them) and ``log_values(model) -> {name: float}`` for extra values to log. Tasks import only
models/ and losses/; building models, batches and evaluation is the training recipes' job
(:mod:`vlkit.train.recipes`). ``model`` may be wrapped in DistributedDataParallel: the first
forward goes through the wrapper (that is what DDP hooks), later passes use the inner model.
"""

from .albef import ALBEFTask, caption_ids
from .blip import BLIPTask
from .clip import CLIPTask
from .vilt import ViltTask, ViltVQATask
from .vqa import BLIPVQATask, VQATask

__all__ = ["ALBEFTask", "BLIPTask", "BLIPVQATask", "CLIPTask", "VQATask", "ViltTask", "ViltVQATask", "caption_ids"]
