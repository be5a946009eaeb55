"""The feature-task protocol: a task whose loss couples the samples of a batch only through
per-sample features (contrastive losses: CLIP's, SigLIP's, the ITC of BLIP and ALBEF).

Such a task splits ``losses(model, batch)`` into two steps:

    features(model, batch) -> {"image_features": (B, D), ...}     every tensor batch-first, one row per sample
    loss_from_features(model, features) -> {"name_loss": scalar}  on features of any number of samples

so that ``losses(model, batch) == loss_from_features(model, features(model, batch))``. Integer
features (pair ids of equal captions) are allowed and get no gradient. The training
loop accumulates gradients over micro-batches of such a task the GradCache way
(:mod:`vlkit.train.accumulate`): the loss sees the features of the whole batch, so the gradient
equals that of the whole batch. ``model`` may be wrapped in DistributedDataParallel in both calls;
``features`` goes through the wrapper (that is what DDP hooks), ``loss_from_features`` reads
parameters of the loss (the temperature) from the model unwrapped and gathers the features over
processes as the loss always does. A task opts in by having both methods (a structural protocol:
``isinstance(task, FeatureTask)``); others are accumulated as a weighted sum of micro-batch losses.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn


@runtime_checkable
class FeatureTask(Protocol):
    """A task whose losses are a function of per-sample features (see the module docstring)."""

    def features(self, model: nn.Module, batch: dict[str, Any]) -> dict[str, torch.Tensor]: ...

    def loss_from_features(self, model: nn.Module, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]: ...
