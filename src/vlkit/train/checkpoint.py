"""Training checkpoints: written atomically, holding everything a resumed run needs.

A checkpoint is one file ``<output_dir>/checkpoints/step-0000100.pt`` with the model, optimizer
and scheduler states, the step, every process's RNG states and the config. It is written to a
temporary file in the same folder, flushed to disk, then renamed over the final name, so a
crash mid-write never leaves a truncated checkpoint behind.

A run sharded with FSDP (``train.strategy: fsdp``) writes a *sharded checkpoint* instead: a folder
``step-0000100.dcp/`` in which every process writes its own shard of the model and optimizer
states with ``torch.distributed.checkpoint`` and the main process writes ``meta.pt`` (everything
else, as above). The folder is written under a temporary name and renamed once every process has
finished, so it too is whole or absent. It loads into any number of processes (the shards are
re-split on load), and :func:`consolidate` turns it into one state dict (``vlkit convert``).
"""

from __future__ import annotations

import os
import random
import re
import shutil
import warnings
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..files import write_file

CHECKPOINT_DIR = "checkpoints"
_NAME = re.compile(r"^step-(\d+)\.(pt|dcp)$")
_TMP = re.compile(r"^\.step-\d+\.(pt\.tmp-\d+|dcp\.tmp)$")
META = "meta.pt"  # the non-tensor part of a sharded checkpoint


def rng_state() -> dict[str, Any]:
    """The RNG states of this process: Python, NumPy, torch CPU and (if present) CUDA, as plain
    types and tensors (so checkpoints load with ``weights_only=True``)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to a temporary file beside ``path``, fsync, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_file(path, partial(_save_to, obj))


def _save_to(obj: Any, tmp: Path) -> None:
    with open(tmp, "wb") as f:
        torch.save(obj, f)


def checkpoint_path(output_dir: str | os.PathLike, step: int) -> Path:
    return Path(output_dir) / CHECKPOINT_DIR / f"step-{step:07d}.pt"


def list_checkpoints(output_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """(step, path) of the complete checkpoints in a run folder, oldest first."""
    folder = Path(output_dir) / CHECKPOINT_DIR
    if not folder.is_dir():
        return []
    found = []
    for p in folder.iterdir():
        m = _NAME.match(p.name)
        if m:
            found.append((int(m.group(1)), p))
    return sorted(found)


def latest_checkpoint(output_dir: str | os.PathLike) -> Path | None:
    found = list_checkpoints(output_dir)
    return found[-1][1] if found else None


def prune_checkpoints(output_dir: str | os.PathLike, keep: int) -> None:
    """Delete all but the ``keep`` newest checkpoints (``keep <= 0`` keeps all)."""
    if keep <= 0:
        return
    for _, p in list_checkpoints(output_dir)[:-keep]:
        remove_checkpoint(p)


def remove_checkpoint(path: Path) -> None:
    """Delete a checkpoint file or sharded checkpoint folder."""
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def save_checkpoint(
    output_dir: str | os.PathLike,
    *,
    step: int,
    model: torch.nn.Module,
    optimizer,
    scheduler,
    config: dict,
    rng_states: list[dict[str, Any]],
    keep: int = 0,
    extra: dict | None = None,
) -> Path:
    """Write the checkpoint of ``step`` (call on the main process only)."""
    state = {
        "format": "vlkit-train-checkpoint",
        "version": 1,
        "step": step,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": rng_states,  # one entry per process, by rank
        "config": config,
        **(extra or {}),
    }
    path = checkpoint_path(output_dir, step)
    try:
        atomic_save(state, path)
    except OSError as e:  # a full disk, a read-only folder: the temporary file is gone, older checkpoints stay
        error = OSError(f"cannot write checkpoint {path}: {e.strerror or e} (the earlier checkpoints are kept)")
        error.errno = e.errno
        raise error from None
    prune_checkpoints(output_dir, keep)
    return path


def orphaned_files(output_dir: str | os.PathLike) -> list[Path]:
    """Temporary checkpoint files (``.step-NNNNNNN.pt.tmp-PID``) a process killed mid-write left."""
    folder = Path(output_dir) / CHECKPOINT_DIR
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if _TMP.match(p.name))


def newest_usable_checkpoint(output_dir: str | os.PathLike) -> tuple[Path | None, dict | None, list[str]]:
    """(path, state) of the newest checkpoint of a run folder that loads, and why each newer one
    does not (one line each). (None, None, []) when there is none; a ValueError naming the files
    when there are checkpoints but none loads."""
    found = list_checkpoints(output_dir)
    problems: list[str] = []
    for _, path in reversed(found):
        try:
            return path, load_checkpoint(path), problems
        except ValueError as e:
            problems.append(str(e))
    if problems:
        raise ValueError(f"no usable checkpoint in {Path(output_dir) / CHECKPOINT_DIR}: " + "; ".join(problems))
    return None, None, []


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """A checkpoint written by :func:`save_checkpoint`, on the CPU; of a sharded checkpoint, its
    ``meta.pt`` with ``"sharded": True`` (the tensors load with :func:`load_sharded_state`)."""
    path = Path(path)
    if path.is_dir() and path.suffix == ".dcp":
        state = _read(path / META)
        if not isinstance(state, dict) or state.get("format") != "vlkit-train-checkpoint" or not state.get("sharded"):
            raise ValueError(f"{path} is not a vlkit sharded training checkpoint (no valid {META})")
        return state
    return _read(path, check=True)


def _read(path: Path, check: bool = False) -> Any:
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for damaged files
        reason = (str(e).strip().splitlines() or [""])[0]
        raise ValueError(f"checkpoint {path} cannot be read ({type(e).__name__}: {reason})") from None
    if check and (not isinstance(state, dict) or state.get("format") != "vlkit-train-checkpoint"):
        raise ValueError(f"{path} is not a vlkit training checkpoint (expected a file written by `vlkit train`)")
    return state


def save_sharded_checkpoint(
    output_dir: str | os.PathLike,
    *,
    step: int,
    model: torch.nn.Module,
    optimizer,
    scheduler,
    config: dict,
    rng_states: list[dict[str, Any]],
    is_main: bool,
    keep: int = 0,
) -> Path:
    """Write the sharded checkpoint of ``step`` (a collective: every process calls it)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    from .distributed import barrier

    path = Path(output_dir) / CHECKPOINT_DIR / f"step-{step:07d}.dcp"
    tmp = path.with_name(f".{path.name}.tmp")
    if is_main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    barrier()
    model_state, optim_state = get_state_dict(model, optimizer)
    with _single_process_ok():
        dcp.save({"model": model_state, "optimizer": optim_state}, checkpoint_id=str(tmp))
    if is_main:
        meta = {"format": "vlkit-train-checkpoint", "version": 1, "sharded": True, "step": step}
        meta.update(scheduler=scheduler.state_dict(), rng=rng_states, config=config)
        atomic_save(meta, tmp / META)
    barrier()  # every shard is on disk
    if is_main:
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
        prune_checkpoints(output_dir, keep)
    barrier()
    return path


def load_sharded_state(path: str | os.PathLike, model: torch.nn.Module, optimizer) -> None:
    """Load a sharded checkpoint's model and optimizer states into a sharded model (a collective;
    any number of processes)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    model_state, optim_state = get_state_dict(model, optimizer)
    state = {"model": model_state, "optimizer": optim_state}
    with _single_process_ok():
        dcp.load(state, checkpoint_id=str(path))
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"])


@contextmanager
def _single_process_ok():
    """Without torch.distributed, DCP reads and writes as one process and warns that it does: expected here."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        yield


def consolidate(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(meta, whole model state dict) of a sharded checkpoint, in one process without
    torch.distributed."""
    import tempfile

    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    meta = load_checkpoint(path)
    with tempfile.TemporaryDirectory() as tmp:
        dcp_to_torch_save(str(path), str(Path(tmp) / "full.pt"))
        full = torch.load(Path(tmp) / "full.pt", map_location="cpu", weights_only=True)
    return meta, full["model"]
