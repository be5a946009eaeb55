"""Gradient accumulation: one optimizer step over ``k`` micro-batches (``train.accum_steps``) whose
gradient is that of the whole batch, with the activation memory of one micro-batch.

The loader gives the step's whole batch (``train.batch_size * accum_steps`` samples per process);
:func:`backward` splits it into ``k`` micro-batches (equal sizes, the first ones one larger when
it does not divide) and accumulates the gradient into the parameters' ``.grad``:

- a feature task (:class:`vlkit.tasks.features.FeatureTask`: the contrastive tasks), the
  GradCache way (Gao et al. 2021, "Scaling deep contrastive learning batch size under memory
  limited setup"), :func:`grad_cache_backward`: pass 1 computes every micro-batch's features
  without a graph; the loss is computed once on the features of the whole batch (gathered over
  processes as the loss always does) with the features as leaf tensors, and its gradient with
  respect to them (and to the loss's own parameters, the temperature) is kept; pass 2 runs each
  micro-batch again with a graph and back-propagates its slice of the cached feature gradients.
  The torch CPU and CUDA random states are saved before each micro-batch of pass 1 and restored
  before the same micro-batch of pass 2, so dropout draws the same masks and the features of both
  passes are bit-identical; afterwards the random state continues from where the loss left it.
  The logged losses are the loss of the whole batch.
- any other task, :func:`summed_backward`: each micro-batch's losses are back-propagated with the
  weight ``samples in it / samples in the batch``, so with equal micro-batches the gradient is
  that of the mean of their losses. For a per-sample mean loss this is the whole batch's gradient;
  a loss that averages over tokens (the LM losses) is weighted by samples, not tokens, and a loss
  that couples samples (BLIP's and ALBEF's ITC and ITM, which do not implement the feature
  protocol yet) sees each micro-batch alone. ALBEF's momentum encoders take a step per micro-batch.

Under DistributedDataParallel every micro-batch but the last runs under ``no_sync``, so the
gradients are all-reduced once per step, in the last backward.
"""

from __future__ import annotations

import contextlib
import functools
import operator
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ..models.base import unwrap
from ..runtime import autocast, resolve_precision
from ..tasks.features import FeatureTask

Batch = dict[str, Any]
Losses = dict[str, torch.Tensor]


def split_batch(batch: Batch, size: int, parts: int) -> list[tuple[Batch, int]]:
    """``batch`` of ``size`` samples -> up to ``parts`` micro-batches ``(batch, samples)`` in order:
    tensors and lists of ``size`` rows are sliced, other values kept (``skipped``: empty lists)."""
    parts = max(1, min(parts, size))
    sizes = [size // parts + (1 if i < size % parts else 0) for i in range(parts)]
    out, start = [], 0
    for m in sizes:
        micro = {
            k: v[start : start + m] if isinstance(v, (torch.Tensor, list)) and len(v) == size else v
            for k, v in batch.items()
            if k != "skipped"
        }
        if "skipped" in batch:
            micro["skipped"] = []
        out.append((micro, m))
        start += m
    return out


def rng_state(device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The torch random state the forward draws from: CPU, and the device's when it is a GPU."""
    return torch.get_rng_state(), torch.cuda.get_rng_state(device) if device.type == "cuda" else None


def set_rng_state(state: tuple[torch.Tensor, torch.Tensor | None], device: torch.device) -> None:
    cpu, cuda = state
    torch.set_rng_state(cpu)
    if cuda is not None:
        torch.cuda.set_rng_state(cuda, device)


def no_sync(model: nn.Module, skip: bool = True) -> contextlib.AbstractContextManager:
    """DDP's ``no_sync`` (gradients accumulate locally, no all-reduce) unless ``skip`` is False; a
    no-op for a model that is not wrapped."""
    if skip and isinstance(model, nn.parallel.DistributedDataParallel):
        return model.no_sync()
    return contextlib.nullcontext()


def _checked(losses: Losses, name: str) -> Losses:
    if not losses:
        raise ValueError(f"task {name!r} returned no losses")
    return losses


def _total(losses: Losses) -> torch.Tensor:
    """The sum of the named losses (the loss the loop back-propagates)."""
    return functools.reduce(operator.add, losses.values())


def backward(
    model: nn.Module,
    recipe: Any,
    batch: Batch,
    size: int,
    *,
    accum_steps: int,
    device: torch.device,
    precision: str,
    losses_fn: Callable[[nn.Module, Batch], Losses] | None = None,
) -> tuple[torch.Tensor, Losses]:
    """Accumulate into ``.grad`` the gradient of the recipe's losses on ``batch`` (``size``
    samples) over ``accum_steps`` micro-batches (module docstring); -> (summed loss, named losses),
    detached. ``recipe``: ``name``, ``losses(model, batch)`` and, for the GradCache path, ``task``.
    ``losses_fn``: what computes the losses instead of ``recipe.losses`` (the compiled step,
    :mod:`vlkit.train.compile`; the GradCache passes call the task's own methods). ``precision``
    "auto" is resolved for this model's training (:func:`vlkit.runtime.resolve_precision`)."""
    losses_fn = recipe.losses if losses_fn is None else losses_fn
    precision = resolve_precision(precision, device, model, training=True)
    if accum_steps == 1:
        with autocast(device, precision):
            losses = _checked(losses_fn(model, batch), recipe.name)
        loss = _total(losses)
        loss.backward()
        return loss.detach(), {k: v.detach() for k, v in losses.items()}
    micro = split_batch(batch, size, accum_steps)
    task = getattr(recipe, "task", None)
    if isinstance(task, FeatureTask):
        return grad_cache_backward(model, task, micro, device=device, precision=precision, name=recipe.name)
    return summed_backward(model, losses_fn, micro, device=device, precision=precision, name=recipe.name)


def summed_backward(
    model: nn.Module,
    losses_fn: Callable[[nn.Module, Batch], Losses],
    micro: list[tuple[Batch, int]],
    *,
    device: torch.device,
    precision: str,
    name: str = "task",
) -> tuple[torch.Tensor, Losses]:
    """Back-propagate each micro-batch's losses weighted by its share of the samples; -> the
    weighted sums (detached)."""
    size = sum(m for _, m in micro)
    total: torch.Tensor = torch.zeros((), device=device)
    totals: dict[str, torch.Tensor] = {}
    for i, (batch, m) in enumerate(micro):
        weight = m / size
        with no_sync(model, skip=i < len(micro) - 1):
            with autocast(device, precision):
                losses = _checked(losses_fn(model, batch), name)
            loss = _total(losses) * weight
            loss.backward()
        total = total + loss.detach().float()
        for k, v in losses.items():
            totals[k] = totals[k] + v.detach().float() * weight if k in totals else v.detach().float() * weight
    return total, totals


def _features_pass_one(
    model: nn.Module, task: FeatureTask, micro: list[tuple[Batch, int]], device: torch.device, precision: str
) -> tuple[list[dict[str, torch.Tensor]], list]:
    """Every micro-batch's features without a graph, and the random state before each."""
    parts, states = [], []
    with torch.no_grad(), no_sync(model):
        for batch, _ in micro:
            states.append(rng_state(device))
            with autocast(device, precision):
                parts.append(task.features(model, batch))
    return parts, states


def _loss_and_gradients(
    model: nn.Module,
    task: FeatureTask,
    parts: list[dict[str, torch.Tensor]],
    device: torch.device,
    precision: str,
    name: str,
) -> tuple[Losses, dict[str, torch.Tensor], list[tuple[nn.Parameter, torch.Tensor]]]:
    """The loss on the features of the whole batch; its gradient with respect to the features
    (whole batch; floating-point ones: integer entries such as pair ids have none) and to the
    parameters the loss reads itself (the temperature)."""
    leaves = {k: torch.cat([p[k] for p in parts]) for k in parts[0]}  # (B, ...) each
    keys = [k for k, v in leaves.items() if v.is_floating_point()]
    for k in keys:
        leaves[k].requires_grad_()
    with autocast(device, precision):
        losses = task.loss_from_features(model, leaves)
    params = [p for p in unwrap(model).parameters() if p.requires_grad]
    grads = torch.autograd.grad(
        _total(_checked(losses, name)), [*(leaves[k] for k in keys), *params], allow_unused=True
    )
    feature_grads = {k: torch.zeros_like(leaves[k]) if g is None else g for k, g in zip(keys, grads)}
    own = [(p, g) for p, g in zip(params, grads[len(keys) :]) if g is not None]
    return losses, feature_grads, own


def grad_cache_backward(
    model: nn.Module,
    task: FeatureTask,
    micro: list[tuple[Batch, int]],
    *,
    device: torch.device,
    precision: str,
    name: str = "task",
) -> tuple[torch.Tensor, Losses]:
    """The GradCache backward of a feature task over micro-batches (module docstring); -> the loss
    of the whole batch (summed, named; detached)."""
    parts, states = _features_pass_one(model, task, micro, device, precision)
    losses, feature_grads, own = _loss_and_gradients(model, task, parts, device, precision, name)
    after = rng_state(device)
    sizes = [m for _, m in micro]
    slices = {k: g.split(sizes) for k, g in feature_grads.items()}  # per micro-batch (m, ...) each
    for i, (batch, _) in enumerate(micro):
        last = i == len(micro) - 1
        set_rng_state(states[i], device)
        with no_sync(model, skip=not last):
            with autocast(device, precision):
                features = task.features(model, batch)
            used = [k for k in feature_grads if features[k].requires_grad]  # features of the parameters
            roots, grads = [features[k] for k in used], [slices[k][i] for k in used]
            if last:  # the loss's own parameters (leaves) join the synchronised backward, so DDP reduces them
                roots += [p for p, _ in own]
                grads += [g for _, g in own]
            torch.autograd.backward(roots, grads)
    set_rng_state(after, device)
    return _total(losses).detach(), {k: v.detach() for k, v in losses.items()}
