"""The training loop: generic over recipes, one process or many (torchrun), resumable exactly.

    from vlkit.train import load_config, train
    result = train(load_config("configs/clip-shapes.yaml", ["optim.lr=1e-3"]))

The config's ``task`` names a recipe (:mod:`vlkit.train.recipes`): it builds the model, its
preprocessing and batches, and its task (:mod:`vlkit.tasks`) gives the losses.

Each step: the task maps (model, batch) to named losses, the loop sums them, backpropagates,
clips the gradient norm, steps AdamW and the warmup + cosine schedule. Every ``log_every`` steps
the mean losses, learning rate and samples/s go to the progress bar and ``metrics.jsonl``;
every ``eval_every`` steps the recipe evaluates on the validation data (main process) and the
plots are redrawn; every ``checkpoint_every`` steps a checkpoint is written atomically. At the
end the model is saved as a vlkit folder (``<output_dir>/model``) that ``vlkit.from_pretrained``,
``vlkit eval`` and ``vlkit embed`` read.

A resumed run (``resume=True``: the newest checkpoint of ``output_dir``) restores model,
optimizer, scheduler and RNG states and starts the data at the exact sample the checkpointed
run would have read next, so its losses equal those of an uninterrupted run.
"""
from __future__ import annotations

import random
import time
from collections import defaultdict
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from tqdm.auto import tqdm

from ..data.folder import SkipReport
from ..data.loader import StepLoader
from . import distributed as D
from .checkpoint import latest_checkpoint, list_checkpoints, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from .config import Config, config_diff
from .data import build_datasets
from .metrics import MetricsLog
from .optim import build_optimizer, build_scheduler
from .plots import plot_loss, plot_similarity

PRECISIONS = ("auto", "bf16", "fp32")


@dataclass
class TrainResult:
    output_dir: Path
    step: int  # optimizer steps done
    stopped_early: bool  # ended by stop_after before max_steps
    checkpoint: Path | None
    model_dir: Path | None  # vlkit folder of the final model (None when stopped early)
    metrics: dict[str, float] = field(default_factory=dict)  # the last validation metrics
    plots: list[Path] = field(default_factory=list)
    seconds: float = 0.0


def _autocast(device: torch.device, precision: str):
    if precision not in PRECISIONS:
        raise ValueError(f"train.precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "bf16" or (precision == "auto" and device.type == "cuda"):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext()


def _to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    nb = device.type == "cuda"
    return {k: v.to(device, non_blocking=nb) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def _trim(batch: dict[str, Any], n: int) -> dict[str, Any]:
    """The first ``n`` samples of a batch (tensors and per-sample lists; ``skipped`` is kept)."""
    size = len(batch["captions"])
    if n >= size:
        return batch
    return {k: v[:n] if k != "skipped" and isinstance(v, (torch.Tensor, list)) and len(v) == size else v
            for k, v in batch.items()}


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _fmt(metrics: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items())


def _check_config(cfg: Config) -> None:
    t = cfg.train
    for name in ("batch_size", "max_steps", "log_every"):
        if getattr(t, name) < 1:
            raise ValueError(f"train.{name} must be at least 1, got {getattr(t, name)}")
    for name in ("eval_every", "checkpoint_every"):
        if getattr(t, name) < 0:
            raise ValueError(f"train.{name} must be 0 (only at the end) or positive, got {getattr(t, name)}")
    if t.precision not in PRECISIONS:
        raise ValueError(f"train.precision must be one of {PRECISIONS}, got {t.precision!r}")
    if cfg.optim.lr <= 0:
        raise ValueError(f"optim.lr must be positive, got {cfg.optim.lr}")


def train(
    cfg: Config, *, recipe=None, resume: bool | str | Path = False, stop_after: int | None = None,
    overwrite: bool = False,
) -> TrainResult:
    """Train as ``cfg`` says; see the module docstring.

    ``recipe``: a recipe object to use instead of the one ``cfg.task`` names. ``resume``: True for the newest checkpoint in ``train.output_dir`` (a fresh start when there is
    none), or a checkpoint path. ``stop_after``: end after this many steps with a checkpoint, as
    if interrupted (the schedule still runs to ``max_steps``). ``overwrite``: start afresh in an
    ``output_dir`` that holds an earlier run (its checkpoints and metrics are deleted).
    """
    from .recipes import get_recipe

    started = time.perf_counter()
    _check_config(cfg)
    owns_group = not (torch.distributed.is_available() and torch.distributed.is_initialized())
    info = D.setup(cfg.train.device)
    try:
        return _train(cfg, info, recipe or get_recipe(cfg.task, cfg.model), resume, stop_after, overwrite, started)
    finally:
        if owns_group:
            D.cleanup()


def _train(cfg: Config, info: D.DistInfo, recipe, resume, stop_after, overwrite, started) -> TrainResult:
    t, main, device = cfg.train, info.is_main, info.device
    out = Path(t.output_dir)
    say = (lambda msg: tqdm.write(str(msg))) if main else (lambda msg: None)
    if t.threads > 0:
        torch.set_num_threads(t.threads)
    metrics_log = MetricsLog(out / "metrics.jsonl")

    # ------------------------------------------------------------- where to start
    ckpt_path = None
    if resume:
        ckpt_path = latest_checkpoint(out) if resume is True else Path(resume)
        if ckpt_path is None:
            say(f"no checkpoint in {out / 'checkpoints'}: starting from step 0")
            if main:
                metrics_log.reset()
    elif list_checkpoints(out) or metrics_log.path.exists():
        if not overwrite:
            raise FileExistsError(
                f"{out} holds an earlier run; resume it (--resume) or start over (--overwrite), or pick another train.output_dir"
            )
        if main:
            for _, p in list_checkpoints(out):
                p.unlink()
            metrics_log.reset()
    state = load_checkpoint(ckpt_path) if ckpt_path is not None else None
    if state is not None:
        changed = config_diff(state["config"], cfg.to_dict())
        if changed:
            say(f"note: the config differs from the checkpoint's in {changed}")
    D.barrier()

    # ------------------------------------------------------------- model, optimizer, data
    _seed_everything(t.seed)
    model = recipe.build_model().to(device)
    optimizer = build_optimizer(model, cfg.optim.lr, cfg.optim.weight_decay, cfg.optim.betas, cfg.optim.eps)
    scheduler = build_scheduler(
        optimizer, lr=cfg.optim.lr, max_steps=t.max_steps, warmup_steps=cfg.optim.warmup_steps,
        schedule=cfg.optim.schedule, min_lr=cfg.optim.min_lr,
    )
    _seed_everything(t.seed + info.rank)  # per-process streams (dropout, augmentation)
    start_step = 0
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start_step = int(state["step"])
        rngs = state["rng"]
        if len(rngs) == info.world_size:
            set_rng_state(rngs[info.rank])
        else:
            say(f"note: checkpoint was written by {len(rngs)} processes, now {info.world_size}: RNG streams are reseeded")
        if main:
            metrics_log.truncate_after(start_step)
        say(f"resumed from {ckpt_path} at step {start_step}")
    if main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))

    train_ds, val_ds = build_datasets(
        cfg.data, image_size=recipe.image_size(model), train_transform=recipe.transform(model, train=cfg.data.augment),
        eval_transform=recipe.transform(model, train=False),
    )
    loader = StepLoader(
        train_ds, recipe.collate(), t.batch_size, seed=t.seed, rank=info.rank, world_size=info.world_size,
        num_workers=cfg.data.num_workers, pin_memory=device.type == "cuda",
    )
    static_skips = list(getattr(train_ds, "skipped_at_load", []))
    if static_skips:
        say(f"training data: {SkipReport(static_skips).summary(getattr(train_ds, 'rows_read', None))}")
    n_params = sum(p.numel() for p in model.parameters())
    say(
        f"{recipe.name}: {n_params / 1e6:.2f}M parameters, {len(train_ds)} training samples "
        f"({loader.steps_per_epoch} steps per epoch), batch {t.batch_size} x {info.world_size} process(es) on {device}"
    )

    ddp_model = model
    if info.distributed:
        ddp_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    params = [p for p in model.parameters() if p.requires_grad]

    # ------------------------------------------------------------- helpers
    plots: list[Path] = []
    last_eval: dict[str, float] = {}
    last_ckpt: list[Path | None] = [ckpt_path]

    def evaluate(step: int) -> None:
        nonlocal last_eval
        if val_ds is not None and main:
            res = recipe.evaluate(
                model, val_ds, batch_size=cfg.eval.batch_size, device=device, precision=t.precision,
                zeroshot=cfg.eval.zeroshot, retrieval=cfg.eval.retrieval,
            )
            last_eval = res.metrics
            metrics_log.append({"split": "validation", "step": step, **res.metrics})
            say(f"step {step} validation: {_fmt(res.metrics)}")
            if t.plots and res.similarity is not None:
                p = plot_similarity(res.similarity, out / "plots" / "similarity.png", res.texts,
                                    title=f"validation image-text cosine similarity, step {step}")
                if p is not None and p not in plots:
                    plots.append(p)
        if t.plots and main:
            p = plot_loss(metrics_log.read(), out / "plots" / "loss.png")
            if p is not None and p not in plots:
                plots.append(p)
        D.barrier()

    def checkpoint(step: int) -> None:
        rngs = D.gather_objects(rng_state())
        if main:
            last_ckpt[0] = save_checkpoint(
                out, step=step, model=model, optimizer=optimizer, scheduler=scheduler, config=cfg.to_dict(),
                rng_states=rngs, keep=t.keep_checkpoints,
            )
        D.barrier()

    epoch_skips: list = []

    def report_skips(epoch: int, step: int, partial: bool = False) -> None:
        nonlocal epoch_skips
        gathered = [s for part in D.gather_objects(epoch_skips) for s in part]
        epoch_skips = []
        report = SkipReport(static_skips + gathered)
        if main and len(report):
            when = f"epoch {epoch} (so far, at step {step})" if partial else f"epoch {epoch}"
            say(f"{when}: {report.summary(getattr(train_ds, 'rows_read', None))}")
            metrics_log.append({
                "event": "data_skipped", "step": step, "epoch": epoch, "count": len(report),
                "reasons": report.counts(), "examples": [s.source for s in report.skipped[:10]],
            })

    # ------------------------------------------------------------- the loop
    step, epoch = start_step, start_step // loader.steps_per_epoch
    stopped = False
    pbar = tqdm(total=t.max_steps, initial=start_step, desc="train", dynamic_ncols=True,
                disable=not (main and t.progress))
    window: dict[str, torch.Tensor] = defaultdict(lambda: torch.zeros((), device=device))
    window_steps, window_samples, window_start = 0, 0, time.perf_counter()
    grad_norm = torch.zeros((), device=device)
    if start_step < t.max_steps and not (stop_after is not None and start_step >= stop_after):
        for step, epoch, batch in loader.batches(start_step, on_epoch_end=lambda e: report_skips(e, step)):
            epoch_skips.extend(batch["skipped"])
            if info.distributed:  # equal batches on every process (the loss gathers them): trim to the shortest
                batch = _trim(batch, D.min_across(len(batch["captions"]), device))
            if not batch["captions"]:
                raise ValueError(f"step {step}: every sample of the batch was skipped ({SkipReport(batch['skipped']).summary()})")
            batch = _to_device(batch, device)
            ddp_model.train()
            with _autocast(device, t.precision):
                losses = recipe.losses(ddp_model, batch)
            if not losses:
                raise ValueError(f"task {recipe.name!r} returned no losses")
            loss = sum(losses.values())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.optim.grad_clip > 0:
                grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.optim.grad_clip)
            lr = optimizer.param_groups[0]["lr"]
            optimizer.step()
            scheduler.step()

            window["loss"] += loss.detach().float()
            for k, v in losses.items():
                window[k] += v.detach().float()
            window_steps += 1
            window_samples += len(batch["captions"])
            pbar.update(1)

            last = step >= t.max_steps or (stop_after is not None and step >= stop_after)
            if step % t.log_every == 0 or last:
                values = {k: (v / window_steps).item() for k, v in window.items()}
                values["grad_norm"] = float(grad_norm)
                values = D.mean_across(values, device)
                if not np.isfinite(values["loss"]):
                    raise FloatingPointError(f"the loss is {values['loss']} at step {step}; try a lower optim.lr")
                elapsed = time.perf_counter() - window_start
                samples_per_s = window_samples * info.world_size / max(elapsed, 1e-9)
                record = {"split": "train", "step": step, "epoch": epoch, **values, "lr": lr,
                          "samples_per_s": samples_per_s, **recipe.log_values(model)}
                if main:
                    metrics_log.append(record)
                pbar.set_postfix(loss=f"{values['loss']:.4f}", lr=f"{lr:.2e}", samples_s=f"{samples_per_s:.0f}")
                window.clear()
                window_steps, window_samples, window_start = 0, 0, time.perf_counter()

            if last:
                break
            if t.eval_every and step % t.eval_every == 0:
                evaluate(step)
            if t.checkpoint_every and step % t.checkpoint_every == 0:
                checkpoint(step)
    pbar.close()

    # ------------------------------------------------------------- the end
    report_skips(epoch, step, partial=True)  # a collective under torchrun: every process calls it
    model_dir = None
    if stop_after is not None and step >= stop_after and step < t.max_steps:
        stopped = True
        if t.eval_every and step % t.eval_every == 0:
            evaluate(step)
        if last_ckpt[0] is None or not str(last_ckpt[0]).endswith(f"step-{step:07d}.pt"):
            checkpoint(step)
        say(f"stopped after step {step} (stop_after); resume with --resume")
    else:
        evaluate(step)
        if last_ckpt[0] is None or not str(last_ckpt[0]).endswith(f"step-{step:07d}.pt"):
            checkpoint(step)
        if main and callable(getattr(model, "save_pretrained", None)):
            model_dir = model.save_pretrained(out / "model")
        D.barrier()
    seconds = time.perf_counter() - started
    if main:
        say(f"done: step {step} in {seconds:.0f} s; run folder {out}")
        if last_eval and callable(getattr(recipe, "summary", None)):
            for line in recipe.summary(last_eval, len(val_ds) if val_ds is not None else None):
                say(f"  {line}")
        say(f"  checkpoint: {last_ckpt[0]}")
        if model_dir is not None:
            say(f"  model:      {model_dir} (vlkit.from_pretrained / vlkit eval --model)")
        for p in plots:
            say(f"  plot:       {p}")
    return TrainResult(out, step, stopped, last_ckpt[0], model_dir, last_eval, plots, seconds)
