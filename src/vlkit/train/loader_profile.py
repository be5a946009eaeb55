"""How fast the training data comes, without the model: does the loader keep the device fed?

    vlkit train --config configs/clip-shapes.yaml --profile-loader 50

reads 50 step batches exactly as training would (the config's data, recipe, batch size and
``data.num_workers``; pinned memory and non-blocking copies to a CUDA device), but runs no model,
and reports batches/s and samples/s after the first batch (whose time, the workers' start-up, is
reported apart). A training step that takes less than ``1 / batches_per_s`` waits for data: raise
``data.num_workers`` (or make the data cheaper) until the loader is faster than the step.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from ..data.loader import StepLoader
from ..runtime import resolve_device
from .config import Config
from .data import build_datasets


@dataclass(frozen=True)
class LoaderProfile:
    batches: int  # timed batches (after the first)
    samples: int  # in the timed batches
    seconds: float  # for the timed batches
    first_batch_seconds: float  # until the first batch was on the device (workers starting)
    batch_size: int
    num_workers: int
    device: str

    @property
    def batches_per_s(self) -> float:
        return self.batches / max(self.seconds, 1e-9)

    @property
    def samples_per_s(self) -> float:
        return self.samples / max(self.seconds, 1e-9)

    def summary(self) -> str:
        step_ms = 1000 / max(self.batches_per_s, 1e-9)
        return (
            f"loader: {self.batches_per_s:.2f} batches/s ({self.samples_per_s:.0f} samples/s) of {self.batch_size} "
            f"samples with {self.num_workers} worker(s) onto {self.device}, timed over {self.batches} batches after "
            f"the first ({self.first_batch_seconds:.2f} s); a training step faster than {step_ms:.0f} ms waits "
            "for data (raise data.num_workers)"
        )


def profile_loader(cfg: Config, *, batches: int = 50, recipe=None) -> LoaderProfile:
    """Read ``batches`` + 1 training batches as ``cfg`` says (one process) and time all but the first."""
    from .recipes import get_recipe

    if batches < 1:
        raise ValueError(f"the loader profile needs at least 1 batch, got {batches}")
    cfg.check()
    recipe = recipe or get_recipe(cfg.task, cfg.model, cfg.loss)
    device = resolve_device(cfg.train.device)
    model = recipe.build_model()  # its image size and preprocessing; it never runs
    size = cfg.train.batch_size * cfg.train.accum_steps
    train_ds, _ = build_datasets(
        cfg.data,
        image_size=recipe.image_size(model),
        train_transform=recipe.transform(model, train=cfg.data.augment),
        eval_transform=recipe.transform(model, train=False),
        batch_size=size,
        seed=cfg.train.seed,
    )
    del model
    loader = StepLoader(
        train_ds,
        recipe.collate(),
        size,
        seed=cfg.train.seed,
        num_workers=cfg.data.num_workers,
        pin_memory=device.type == "cuda",
        group_by_length=cfg.data.group_by_length,
    )
    nb = device.type == "cuda"
    start = time.perf_counter()
    first = timed_from = 0.0
    samples = 0
    for i, (_, _, batch) in enumerate(loader.batches(0)):
        for v in batch.values():
            if isinstance(v, torch.Tensor):
                v.to(device, non_blocking=nb)
        if nb:
            torch.cuda.synchronize(device)
        if i == 0:
            timed_from = time.perf_counter()
            first = timed_from - start
            continue
        samples += recipe.batch_size(batch)
        if i == batches:
            break
    seconds = time.perf_counter() - timed_from
    return LoaderProfile(batches, samples, seconds, first, size, cfg.data.num_workers, str(device))
