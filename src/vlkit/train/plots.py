"""PNG plots of a run: the loss curve and an image-text similarity matrix.

matplotlib is an optional dependency (``pip install vlkit[plots]``); without it the plots are
skipped with one warning and training goes on.
"""
from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

_warned = False


def _pyplot():
    global _warned
    try:
        import matplotlib

        matplotlib.use("Agg", force=True)
        import matplotlib.pyplot as plt
    except ImportError:
        if not _warned:
            warnings.warn("matplotlib is not installed: plots are skipped (pip install 'vlkit[plots]')", stacklevel=3)
            _warned = True
        return None
    return plt


def plot_loss(records: Sequence[dict[str, Any]], path: str | os.PathLike) -> Path | None:
    """Training loss (and validation loss, where logged) against step."""
    plt = _pyplot()
    if plt is None:
        return None
    train = [(r["step"], r["loss"]) for r in records if r.get("split") == "train" and isinstance(r.get("loss"), float)]
    val = [(r["step"], r["loss"]) for r in records if r.get("split") == "validation" and isinstance(r.get("loss"), float)]
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    if train:
        ax.plot(*zip(*train), label="train")
    if val:
        ax.plot(*zip(*val), "o-", label="validation")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title("training loss")
    ax.grid(alpha=0.3)
    if train or val:
        ax.legend()
    return _save(fig, plt, path)


def plot_similarity(
    similarity, path: str | os.PathLike, texts: Sequence[str] | None = None, title: str = "image-text cosine similarity"
) -> Path | None:
    """A heat map of an (images x texts) similarity matrix, texts as column labels when few."""
    plt = _pyplot()
    if plt is None:
        return None
    import numpy as np

    sim = np.asarray(similarity.float().cpu() if hasattr(similarity, "cpu") else similarity, dtype=np.float32)
    n_img, n_txt = sim.shape
    fig, ax = plt.subplots(figsize=(min(14, 2 + 0.45 * n_txt), min(12, 1.5 + 0.4 * n_img)), dpi=100)
    im = ax.imshow(sim, cmap="viridis", vmin=-1 if sim.min() < 0 else 0, vmax=1)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    ax.set_xlabel("text")
    ax.set_ylabel("image")
    if texts is not None and n_txt <= 32:
        ax.set_xticks(range(n_txt))
        ax.set_xticklabels([t if len(t) <= 40 else t[:37] + "..." for t in texts], rotation=60, ha="right", fontsize=7)
    ax.set_title(title)
    return _save(fig, plt, path)


def _save(fig, plt, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)
    return path
