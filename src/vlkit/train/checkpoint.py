"""Training checkpoints: written atomically, holding everything a resumed run needs.

A checkpoint is one file ``<output_dir>/checkpoints/step-0000100.pt`` with the model, optimizer
and scheduler states, the step, every process's RNG states and the config. It is written to a
temporary file in the same folder, flushed to disk, then renamed over the final name, so a
crash mid-write never leaves a truncated checkpoint behind.
"""

from __future__ import annotations

import os
import random
import re
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..files import write_file

CHECKPOINT_DIR = "checkpoints"
_NAME = re.compile(r"^step-(\d+)\.pt$")
_TMP = re.compile(r"^\.step-\d+\.pt\.tmp-\d+$")


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
        p.unlink(missing_ok=True)


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
    """A checkpoint written by :func:`save_checkpoint`, on the CPU."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for damaged files
        reason = (str(e).strip().splitlines() or [""])[0]
        raise ValueError(f"checkpoint {path} cannot be read ({type(e).__name__}: {reason})") from None
    if not isinstance(state, dict) or state.get("format") != "vlkit-train-checkpoint":
        raise ValueError(f"{path} is not a vlkit training checkpoint (expected a file written by `vlkit train`)")
    return state
