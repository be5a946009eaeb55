"""A run folder (``train.output_dir``): what vlkit writes there, found and removed.

A run writes ``config.yaml``, ``metrics.jsonl``, ``checkpoints/step-NNNNNNN.pt``, ``plots/loss.png``
and ``plots/similarity.png``, and the final model into ``model/``. ``--overwrite`` removes exactly
these (and the temporary files of writes a kill interrupted), never anything else a user keeps
in the folder; ``--resume`` removes the interrupted writes only.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from .checkpoint import CHECKPOINT_DIR, list_checkpoints, orphaned_files, remove_checkpoint

MODEL_DIR = "model"
PLOT_DIR = "plots"
_RUN_FILES = ("config.yaml", "metrics.jsonl", "metrics.jsonl.tmp")
_PLOT_FILES = ("loss.png", "similarity.png", ".loss.tmp.png", ".similarity.tmp.png")


def holds_run(output_dir: str | os.PathLike) -> bool:
    """Whether the folder holds an earlier run: checkpoints, a metrics log or a final model."""
    out = Path(output_dir)
    return bool(list_checkpoints(out)) or (out / "metrics.jsonl").exists() or (out / MODEL_DIR / "config.json").exists()


def remove_orphans(output_dir: str | os.PathLike) -> list[Path]:
    """Delete the temporary files of interrupted writes (checkpoints, metrics, plots); the paths."""
    out = Path(output_dir)
    found = orphaned_files(out) + [
        p
        for p in (out / "metrics.jsonl.tmp", out / PLOT_DIR / ".loss.tmp.png", out / PLOT_DIR / ".similarity.tmp.png")
        if p.exists()
    ]
    for p in found:
        remove_checkpoint(p)
    return found


def remove_run(output_dir: str | os.PathLike) -> list[Path]:
    """Delete everything an earlier run wrote into the folder; the paths removed."""
    out = Path(output_dir)
    removed = remove_orphans(out)
    for _, p in list_checkpoints(out):
        remove_checkpoint(p)
        removed.append(p)
    for p in [out / name for name in _RUN_FILES] + [out / PLOT_DIR / name for name in _PLOT_FILES]:
        if p.is_file():
            p.unlink()
            removed.append(p)
    model = out / MODEL_DIR
    if (model / "config.json").is_file():  # a vlkit model folder the run saved
        shutil.rmtree(model)
        removed.append(model)
    for folder in (out / CHECKPOINT_DIR, out / PLOT_DIR):
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
    return removed
