"""The training loop: generic over recipes, one process or many (torchrun), resumable exactly.

    from vlkit.train import load_config, train
    result = train(load_config("configs/clip-shapes.yaml", ["optim.lr=1e-3"]))

The config's ``task`` names a recipe (:mod:`vlkit.train.recipes`): it builds the model, its
preprocessing and batches (and says how many samples a batch holds), and its task
(:mod:`vlkit.tasks`) gives the losses.

The loop is linear over an explicit :class:`TrainState`. Each step (:func:`train_step`): the task
maps (model, batch) to named losses (compiled with ``train.compile``: :mod:`vlkit.train.compile`),
the loop sums them, backpropagates, clips the gradient norm, steps AdamW (fused on a GPU) and the
warmup + cosine schedule. With ``train.accum_steps`` k > 1 the loader gives
batches of k x ``train.batch_size`` samples and the backward runs over k micro-batches
(:mod:`vlkit.train.accumulate`: the GradCache way for contrastive tasks, so the gradient is the
whole batch's). A batch whose samples were all unreadable is a step
without an update (the schedule still advances, so steps and data positions stay one to one);
under torchrun every process trims its batch to the smallest, so all take the same steps. Every
``log_every`` steps (:func:`log_window`) the mean losses, learning rate, samples/s and, for the
families :mod:`vlkit.train.flops` counts, the model FLOPs per step and MFU go to the progress
display and ``metrics.jsonl``; every ``eval_every`` steps (:func:`evaluate`) the recipe
evaluates on the validation data (main process) and the plots are redrawn; every
``checkpoint_every`` steps (:func:`save`) a checkpoint is written atomically. At the end the model
is saved as a vlkit folder (``<output_dir>/model``) that ``vlkit.from_pretrained``, ``vlkit eval``
and ``vlkit embed`` read.

A resumed run (``resume=True``: the newest readable checkpoint of ``output_dir``) restores model,
optimizer, scheduler and RNG states and starts the data at the exact sample the checkpointed
run would have read next, so its losses equal those of an uninterrupted run.
"""

from __future__ import annotations

import math
import random
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import nn
from tqdm.auto import tqdm

from ..data.folder import SkipReport
from ..data.loader import StepLoader
from . import accumulate
from . import distributed as D
from .checkpoint import (
    load_checkpoint,
    load_sharded_state,
    newest_usable_checkpoint,
    rng_state,
    save_checkpoint,
    save_sharded_checkpoint,
    set_rng_state,
)
from .compile import CompiledLosses
from .config import Config, config_diff
from .data import build_datasets
from .flops import peak_flops, train_step_flops
from .metrics import MetricsLog
from .optim import adamw_kernels, build_optimizer, build_scheduler, keep_kernels
from .plots import plot_loss, plot_similarity
from .progress import Progress
from .run_folder import MODEL_DIR, holds_run, remove_orphans, remove_run
from .strategy import checkpoint_blocks, full_model_state, is_sharded, local_value, shard_model


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


@dataclass
class Run:
    """What stays fixed during a run: config, recipe, processes, folder, data."""

    cfg: Config
    recipe: Any
    info: D.DistInfo
    out: Path
    log: MetricsLog
    stop_after: int | None
    train_ds: Any = None
    val_ds: Any = None
    loader: StepLoader | None = None
    static_skips: list = field(default_factory=list)  # samples the training data dropped when loading
    losses_fn: CompiledLosses | None = None  # train.compile: the compiled forward + losses
    peak_flops: float | None = None  # of this process's device, for MFU (None: not known)


@dataclass
class LogWindow:
    """Sums over the steps since the last training record."""

    sums: dict[str, torch.Tensor] = field(default_factory=dict)
    updates: int = 0  # steps with an optimizer update
    empty: int = 0  # steps whose batch had no readable sample
    samples: int = 0
    lr: float = 0.0  # of the newest step
    grad_norm: torch.Tensor | float = 0.0  # of the newest update (a tensor: read only when logging)
    flops: int | None = 0  # model FLOPs of the updates on this process (None: the family is not counted)
    start: float = field(default_factory=time.perf_counter)


@dataclass
class TrainState:
    """What changes during a run."""

    model: nn.Module
    ddp_model: nn.Module  # the model, or its DistributedDataParallel wrapper
    optimizer: torch.optim.Optimizer
    scheduler: Any
    step: int = 0
    epoch: int = 0
    checkpoint: Path | None = None  # the newest checkpoint written or resumed from
    checkpoint_step: int | None = None
    eval_step: int | None = None  # step of the newest validation record
    last_eval: dict[str, float] = field(default_factory=dict)
    plots: list[Path] = field(default_factory=list)
    epoch_skips: list = field(default_factory=list)  # this process's skipped samples of this epoch
    epoch_steps: int = 0  # steps of this epoch seen / with samples (every process alike)
    epoch_trained: int = 0
    window: LogWindow = field(default_factory=LogWindow)


# ----------------------------------------------------------------- entry point
def train(
    cfg: Config,
    *,
    recipe=None,
    resume: bool | str | Path = False,
    stop_after: int | None = None,
    overwrite: bool = False,
) -> TrainResult:
    """Train as ``cfg`` says; see the module docstring.

    ``recipe``: a recipe object to use instead of the one ``cfg.task`` names. ``resume``: True for
    the newest readable checkpoint in ``train.output_dir`` (a fresh start when there is none), or a
    checkpoint path. ``stop_after``: end after this many steps with a checkpoint, as if interrupted
    (the schedule still runs to ``max_steps``). ``overwrite``: start afresh in an ``output_dir`` that
    holds an earlier run (everything that run wrote there is deleted).
    """
    from .recipes import get_recipe

    started = time.perf_counter()
    cfg.check()
    if stop_after is not None and stop_after < 1:
        raise ValueError(f"stop_after must be at least 1, got {stop_after}")
    owns_group = not (torch.distributed.is_available() and torch.distributed.is_initialized())
    info = D.setup(cfg.train.device)
    finished = False
    try:
        run = Run(
            cfg,
            recipe or get_recipe(cfg.task, cfg.model, cfg.loss),
            info,
            Path(cfg.train.output_dir),
            MetricsLog(Path(cfg.train.output_dir) / "metrics.jsonl"),
            stop_after,
        )
        result = _train(run, resume=resume, overwrite=overwrite, started=started)
        finished = True
        return result
    finally:
        if owns_group:
            D.cleanup(synchronize=finished)


def _train(run: Run, *, resume, overwrite: bool, started: float) -> TrainResult:
    t = run.cfg.train
    if t.threads > 0:
        torch.set_num_threads(t.threads)
    ckpt_path, ckpt = start_point(run, resume=resume, overwrite=overwrite)
    state = build_state(run, ckpt_path, ckpt)
    run.peak_flops = peak_flops(run.info.device, t.peak_flops)
    if t.compile:
        run.losses_fn = CompiledLosses(run.recipe.losses, backend=t.compile_backend, on_note=lambda m: _say(run, m))
    if run.info.is_main:
        run.out.mkdir(parents=True, exist_ok=True)
        (run.out / "config.yaml").write_text(yaml.safe_dump(run.cfg.to_dict(), sort_keys=False))
    load_data(run, state)

    progress = Progress(total=t.max_steps, initial=state.step, enabled=run.info.is_main and t.progress)
    try:
        if state.step < t.max_steps and not _stop_due(run, state.step):
            _loop(run, state, progress)
    finally:
        progress.close()
    stopped = _stop_due(run, state.step) and state.step < t.max_steps
    model_dir = finish(run, state, stopped=stopped)
    seconds = time.perf_counter() - started
    report(run, state, model_dir, seconds)
    return TrainResult(run.out, state.step, stopped, state.checkpoint, model_dir, state.last_eval, state.plots, seconds)


def _loop(run: Run, state: TrainState, progress: Progress) -> None:
    t = run.cfg.train
    for step, epoch, batch in run.loader.batches(state.step):
        if epoch != state.epoch:
            end_epoch(run, state)
            state.epoch = epoch
        state.step = step
        state.epoch_skips.extend(batch["skipped"])
        train_step(run, state, batch)
        progress.update()
        last = step >= t.max_steps or _stop_due(run, step)
        if step % t.log_every == 0 or last:
            progress.show(step, log_window(run, state))
        if last:
            break
        if t.eval_every and step % t.eval_every == 0:
            evaluate(run, state)
        if t.checkpoint_every and step % t.checkpoint_every == 0:
            save(run, state)


def _stop_due(run: Run, step: int) -> bool:
    return run.stop_after is not None and step >= run.stop_after


def _say(run: Run, message: str) -> None:
    if run.info.is_main:
        tqdm.write(str(message))


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# ----------------------------------------------------------------- set-up
def start_point(run: Run, *, resume, overwrite: bool) -> tuple[Path | None, dict | None]:
    """Prepare the run folder (rank 0) and load the checkpoint to resume from (every process):
    (path, checkpoint), or (None, None) for a fresh start."""
    error = None
    if run.info.is_main:
        try:
            _prepare_folder(run, resume=resume, overwrite=overwrite)
        except (OSError, ValueError) as e:
            error = e
    D.raise_if_any(error)
    if not resume:
        return None, None
    if resume is True:
        path, ckpt, problems = newest_usable_checkpoint(run.out)
        for problem in problems:
            _say(run, f"warning: {problem}; resuming from the one before it")
        if path is None:
            _say(run, f"no checkpoint in {run.out / 'checkpoints'}: starting from step 0")
            if run.info.is_main:
                run.log.reset()  # a fresh start: no records of steps that will be run again
            return None, None
    else:
        path = Path(resume)
        ckpt = load_checkpoint(path)
    _check_resumable(run, path, ckpt)
    return path, ckpt


def _prepare_folder(run: Run, *, resume, overwrite: bool) -> None:
    out = run.out
    if resume:
        for p in remove_orphans(out):
            _say(run, f"removed {p} (left by an interrupted write)")
        return
    if holds_run(out):
        if not overwrite:
            raise FileExistsError(
                f"{out} holds an earlier run; resume it (--resume) or start over (--overwrite), "
                "or pick another train.output_dir"
            )
        removed = remove_run(out)
        _say(run, f"--overwrite: removed the earlier run in {out} ({len(removed)} files and folders)")


def _check_resumable(run: Run, path: Path, ckpt: dict) -> None:
    changed = config_diff(ckpt["config"], run.cfg.to_dict())
    fatal = [k for k in changed if k == "task" or k.startswith(("task.", "model."))]
    if fatal:
        raise ValueError(
            f"cannot resume from {path}: the config differs from the checkpoint's in {', '.join(fatal)}; "
            "resume with the checkpoint's model and task, or start a new run (--overwrite or another "
            "train.output_dir)"
        )
    if changed:
        _say(run, f"note: the config differs from the checkpoint's in {changed}")


def build_state(run: Run, ckpt_path: Path | None, ckpt: dict | None) -> TrainState:
    """Model, optimizer and schedule, restored from ``ckpt`` when resuming."""
    cfg, info = run.cfg, run.info
    _seed_everything(cfg.train.seed)
    model = run.recipe.build_model().to(info.device)
    if cfg.train.activation_checkpointing:
        _say(run, f"activation checkpointing: {checkpoint_blocks(model)} blocks recompute their activations")
    if cfg.train.strategy == "fsdp" and info.distributed:
        bf16 = info.device.type == "cuda" and cfg.train.precision in ("auto", "bf16")
        shard_model(model, device=info.device, world_size=info.world_size, bf16=bf16)
    o = cfg.optim
    optimizer = build_optimizer(model, o.lr, o.weight_decay, o.betas, o.eps)
    scheduler = build_scheduler(
        optimizer,
        lr=o.lr,
        max_steps=cfg.train.max_steps,
        warmup_steps=o.warmup_steps,
        schedule=o.schedule,
        min_lr=o.min_lr,
    )
    _seed_everything(cfg.train.seed + info.rank)  # per-process streams (dropout, augmentation)
    state = TrainState(model, model, optimizer, scheduler, checkpoint=ckpt_path)
    if ckpt is not None:
        _restore(run, state, ckpt)
        _say(run, f"resumed from {ckpt_path} at step {state.step}")
    D.barrier()
    if info.distributed and not is_sharded(model):
        state.ddp_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[info.device.index] if info.device.type == "cuda" else None
        )
    return state


def _restore(run: Run, state: TrainState, ckpt: dict) -> None:
    info = run.info
    kernels = adamw_kernels(state.optimizer)
    if ckpt.get("sharded"):  # re-split for any number of processes, sharded or not
        load_sharded_state(state.checkpoint, state.model, state.optimizer)
    elif is_sharded(state.model):
        raise ValueError(
            f"cannot resume from {state.checkpoint}: a DDP run wrote it and this run shards the model "
            "(train.strategy fsdp); resume it with train.strategy ddp"
        )
    else:
        state.model.load_state_dict(ckpt["model"])
        state.optimizer.load_state_dict(ckpt["optimizer"])
    keep_kernels(state.optimizer, kernels)  # a checkpoint from another device keeps this device's AdamW kernels
    state.scheduler.load_state_dict(ckpt["scheduler"])
    state.step = state.checkpoint_step = int(ckpt["step"])
    rngs = ckpt["rng"]
    if len(rngs) == info.world_size:
        set_rng_state(rngs[info.rank])
    else:
        _say(
            run,
            f"note: checkpoint was written by {len(rngs)} processes, now {info.world_size}: RNG streams are reseeded",
        )
    error = None
    if info.is_main:
        try:
            if run.log.truncate_after(state.step):
                _say(run, f"warning: dropped the torn last line of {run.log.path} (a run killed while writing it)")
        except ValueError as e:
            error = e
    D.raise_if_any(error)
    last = run.log.last_validation(state.step) if info.is_main else None
    state.eval_step = D.gather_objects(state.step if last is not None else None)[0]
    state.last_eval = last or {}


def load_data(run: Run, state: TrainState) -> None:
    """The datasets and the step loader, positioned at the state's step."""
    cfg, recipe, info, model = run.cfg, run.recipe, run.info, state.model
    run.train_ds, run.val_ds = build_datasets(
        cfg.data,
        image_size=recipe.image_size(model),
        train_transform=recipe.transform(model, train=cfg.data.augment),
        eval_transform=recipe.transform(model, train=False),
        batch_size=cfg.train.batch_size * cfg.train.accum_steps,  # a step's whole batch
        seed=cfg.train.seed,
        rank=info.rank,
        world_size=info.world_size,
    )
    run.loader = StepLoader(
        run.train_ds,
        recipe.collate(),
        cfg.train.batch_size * cfg.train.accum_steps,  # the step's whole batch; train_step splits it
        seed=cfg.train.seed,
        rank=info.rank,
        world_size=info.world_size,
        num_workers=cfg.data.num_workers,
        pin_memory=info.device.type == "cuda",
        group_by_length=cfg.data.group_by_length,
    )
    state.epoch = state.step // run.loader.steps_per_epoch
    state.epoch_steps = state.step % run.loader.steps_per_epoch
    state.epoch_trained = state.epoch_steps  # a resumed epoch is not judged on its first part
    run.static_skips = list(getattr(run.train_ds, "skipped_at_load", []))
    if run.static_skips:
        _say(run, f"training data: {SkipReport(run.static_skips).summary(getattr(run.train_ds, 'rows_read', None))}")
    n_params = sum(p.numel() for p in model.parameters())
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    trainable = f" ({n_trainable:,} of {n_params:,} trainable)" if n_trainable < n_params else ""
    _say(
        run,
        f"{recipe.name}: {n_params / 1e6:.2f}M parameters{trainable}, {run.loader.samples_per_epoch} training samples "
        f"({run.loader.steps_per_epoch} steps per epoch), batch {_batch_text(cfg.train)} x {info.world_size} "
        f"process(es) on {info.device}",
    )


def _batch_text(t) -> str:
    """``8``, or with accumulation ``8 (2 micro-batches of 4)``."""
    if t.accum_steps == 1:
        return str(t.batch_size)
    return f"{t.batch_size * t.accum_steps} ({t.accum_steps} micro-batches of {t.batch_size})"


# ----------------------------------------------------------------- one step
def train_step(run: Run, state: TrainState, batch: dict[str, Any]) -> None:
    """One optimizer step on ``batch`` (a step without an update when no sample of it was readable
    on some process; the backward over ``train.accum_steps`` micro-batches); the losses go to the
    log window."""
    recipe, info, o = run.recipe, run.info, run.cfg.optim
    n = recipe.batch_size(batch)
    if info.distributed:  # equal batches on every process (the loss gathers them): trim to the shortest
        shortest = D.min_across(n, info.device)
        batch, n = _trim(batch, shortest, n), shortest
    w = state.window
    w.lr = state.optimizer.param_groups[0]["lr"]
    state.epoch_steps += 1
    if n == 0:
        w.empty += 1
        with warnings.catch_warnings():  # "scheduler.step() before optimizer.step()" when the first batch is empty
            warnings.simplefilter("ignore", UserWarning)
            state.scheduler.step()
        return
    batch = _to_device(batch, info.device)
    state.ddp_model.train()
    state.optimizer.zero_grad(set_to_none=True)
    t = run.cfg.train
    loss, losses = accumulate.backward(
        state.ddp_model,
        recipe,
        batch,
        n,
        accum_steps=t.accum_steps,
        device=info.device,
        precision=t.precision,
        losses_fn=run.losses_fn,
    )
    if o.grad_clip > 0:
        params = [p for p in state.model.parameters() if p.requires_grad]
        w.grad_norm = nn.utils.clip_grad_norm_(params, o.grad_clip)
    state.optimizer.step()
    state.scheduler.step()
    for k, v in {"loss": loss, **losses}.items():
        w.sums[k] = w.sums.get(k, 0.0) + v.float()
    w.updates += 1
    w.samples += n
    flops = train_step_flops(state.model, batch, n)
    w.flops = None if flops is None or w.flops is None else w.flops + flops
    state.epoch_trained += 1


def _to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    nb = device.type == "cuda"
    return {k: v.to(device, non_blocking=nb) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def _trim(batch: dict[str, Any], n: int, size: int) -> dict[str, Any]:
    """The first ``n`` of a batch's ``size`` samples (tensors and per-sample lists; ``skipped`` is kept)."""
    if n >= size:
        return batch
    return {
        k: v[:n] if k != "skipped" and isinstance(v, (torch.Tensor, list)) and len(v) == size else v
        for k, v in batch.items()
    }


# ----------------------------------------------------------------- log, evaluate, checkpoint, skips
def log_window(run: Run, state: TrainState) -> dict[str, str]:
    """Write the training record of the steps since the last one; the values for the progress display."""
    w, info = state.window, run.info
    values = {k: (v / w.updates).item() for k, v in w.sums.items()} if w.updates else {}
    if w.updates:
        values["grad_norm"] = float(local_value(w.grad_norm)) if isinstance(w.grad_norm, torch.Tensor) else w.grad_norm
    values = D.mean_across(values, info.device)
    if "loss" in values and not math.isfinite(values["loss"]):
        raise FloatingPointError(f"the loss is {values['loss']} at step {state.step}; try a lower optim.lr")
    seconds = max(time.perf_counter() - w.start, 1e-9)  # the values above were read: the device is done
    samples_per_s = w.samples * info.world_size / seconds
    speed = _flops_values(w, seconds, run.peak_flops, info.world_size)
    record = {
        "split": "train",
        "step": state.step,
        "epoch": state.epoch,
        **values,
        "lr": w.lr,
        "samples_per_s": samples_per_s,
        **speed,
        **run.recipe.log_values(state.model),
    }
    if w.empty:
        record["empty_batches"] = w.empty
    if info.is_main:
        run.log.append(record)
    shown = {"loss": f"{values['loss']:.4f}"} if "loss" in values else {}
    shown.update(lr=f"{w.lr:.2e}", samples_s=f"{samples_per_s:.0f}")
    if "mfu" in speed:
        shown["mfu"] = f"{speed['mfu']:.1%}"
    if w.empty:
        shown["empty_batches"] = str(w.empty)
    state.window = LogWindow()
    return shown


def _flops_values(w: LogWindow, seconds: float, peak: float | None, world_size: int) -> dict[str, float]:
    """``flops_per_step`` (model FLOPs of one optimizer step, all processes) and, when the device's
    peak is known, ``mfu`` (this process's model FLOP/s over its peak; every process has the same
    batch size, so this is also the run's)."""
    if not w.updates or w.flops is None:
        return {}
    out = {"flops_per_step": w.flops * world_size / w.updates}
    if peak is not None:
        out["mfu"] = w.flops / seconds / peak
    return out


def evaluate(run: Run, state: TrainState) -> None:
    """Validation metrics and plots at the state's step (main process; once per step). A sharded
    model is gathered (every process takes part) into a whole copy the main process evaluates."""
    if state.eval_step == state.step:
        return
    error = None
    model = whole_model(run, state) if run.val_ds is not None else state.model
    if run.info.is_main:
        try:
            _evaluate_main(run, state, model)
        except Exception as e:
            error = e
    D.raise_if_any(error)
    state.eval_step = state.step


def whole_model(run: Run, state: TrainState) -> nn.Module:
    """The model itself, or for a sharded one a whole copy on the main process (a collective)."""
    if not is_sharded(state.model):
        return state.model
    full = full_model_state(state.model)
    if not run.info.is_main:
        return state.model
    copy = run.recipe.build_model().to(run.info.device)
    copy.load_state_dict(full)
    return copy


def _evaluate_main(run: Run, state: TrainState, model: nn.Module) -> None:
    cfg, step, out = run.cfg, state.step, run.out
    if run.val_ds is not None:
        res = run.recipe.evaluate(
            model,
            run.val_ds,
            batch_size=cfg.eval.batch_size,
            device=run.info.device,
            precision=cfg.train.precision,
            zeroshot=cfg.eval.zeroshot,
            retrieval=cfg.eval.retrieval,
        )
        state.last_eval = res.metrics
        run.log.append({"split": "validation", "step": step, **res.metrics})
        _say(run, f"step {step} validation: {_fmt(res.metrics)}")
        if cfg.train.plots and res.similarity is not None:
            _add_plot(
                state,
                plot_similarity(
                    res.similarity,
                    out / "plots" / "similarity.png",
                    res.texts,
                    title=f"validation image-text cosine similarity, step {step}",
                ),
            )
    if cfg.train.plots:
        _add_plot(
            state, plot_loss(run.log.read(), out / "plots" / "loss.png", validation_loss=run.recipe.validation_loss)
        )


def _add_plot(state: TrainState, path: Path | None) -> None:
    if path is not None and path not in state.plots:
        state.plots.append(path)


def _fmt(metrics: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items())


def save(run: Run, state: TrainState) -> None:
    """A checkpoint of the state's step (rank 0 writes it; every process's RNG states go in)."""
    rngs = D.gather_objects(rng_state())
    if run.cfg.train.strategy == "fsdp":  # sharded checkpoints, also from one process
        state.checkpoint = save_sharded_checkpoint(
            run.out,
            step=state.step,
            model=state.model,
            optimizer=state.optimizer,
            scheduler=state.scheduler,
            config=run.cfg.to_dict(),
            rng_states=rngs,
            is_main=run.info.is_main,
            keep=run.cfg.train.keep_checkpoints,
        )
        state.checkpoint_step = state.step
        return
    error = None
    if run.info.is_main:
        try:
            state.checkpoint = save_checkpoint(
                run.out,
                step=state.step,
                model=state.model,
                optimizer=state.optimizer,
                scheduler=state.scheduler,
                config=run.cfg.to_dict(),
                rng_states=rngs,
                keep=run.cfg.train.keep_checkpoints,
            )
        except OSError as e:
            error = e
    D.raise_if_any(error)
    state.checkpoint_step = state.step


def end_epoch(run: Run, state: TrainState) -> None:
    """Report the epoch's skipped samples; an epoch without one readable sample is an error."""
    report_skips(run, state)
    if state.epoch_steps >= run.loader.steps_per_epoch and state.epoch_trained == 0:
        raise ValueError(f"no sample of training epoch {state.epoch} could be read; check the training data")
    state.epoch_steps = state.epoch_trained = 0


def report_skips(run: Run, state: TrainState, partial: bool = False) -> None:
    """Every process's skipped samples of this epoch, printed and logged by rank 0 (a collective)."""
    gathered = [s for part in D.gather_objects(state.epoch_skips) for s in part]
    state.epoch_skips = []
    found = SkipReport(run.static_skips + gathered)
    if not run.info.is_main or not len(found):
        return
    when = f"epoch {state.epoch} (so far, at step {state.step})" if partial else f"epoch {state.epoch}"
    _say(run, f"{when}: {found.summary(getattr(run.train_ds, 'rows_read', None))}")
    run.log.append(
        {
            "event": "data_skipped",
            "step": state.step,
            "epoch": state.epoch,
            "count": len(found),
            "reasons": found.counts(),
            "examples": [s.source for s in found.skipped[:10]],
        }
    )


# ----------------------------------------------------------------- the end
def finish(run: Run, state: TrainState, *, stopped: bool) -> Path | None:
    """Evaluate, checkpoint and (unless stopped early) save the final model; its folder."""
    t = run.cfg.train
    report_skips(run, state, partial=True)  # a collective under torchrun: every process calls it
    if not stopped or (t.eval_every and state.step % t.eval_every == 0):
        evaluate(run, state)
    if state.checkpoint_step != state.step:
        save(run, state)
    if stopped:
        _say(run, f"stopped after step {state.step} (stop_after); resume with --resume")
        return None
    model_dir = None
    model = whole_model(run, state)
    if run.info.is_main and callable(getattr(model, "save_pretrained", None)):  # a plain module gets none
        model_dir = model.save_pretrained(run.out / MODEL_DIR, tokenizer=run.recipe.tokenizer)
    D.barrier()
    return model_dir


def report(run: Run, state: TrainState, model_dir: Path | None, seconds: float) -> None:
    """The closing lines: where everything is, and the headline numbers."""
    if not run.info.is_main:
        return
    _say(run, f"done: step {state.step} in {seconds:.0f} s; run folder {run.out}")
    if state.last_eval:
        for line in run.recipe.summary(state.last_eval, len(run.val_ds) if run.val_ds is not None else None):
            _say(run, f"  {line}")
    _say(run, f"  checkpoint: {state.checkpoint}")
    if model_dir is not None:
        _say(run, f"  model:      {model_dir} (vlkit.from_pretrained / vlkit eval --model)")
    for p in state.plots:
        _say(run, f"  plot:       {p}")
