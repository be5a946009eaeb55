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


def loss_curves(records: Sequence[dict[str, Any]], validation_loss: str = "loss") -> dict[str, list[tuple[int, float]]]:
    """The curves of the loss plot, by label: ``[(step, value), ...]``.

    Training: each named loss (``*_loss``) and, when there are several, their sum (the record's
    ``loss``) as "train: total"; with one named loss, that one. Validation: the record's ``loss``
    under the name of what it measures (``validation_loss``, e.g. ``itc_loss``), and any named
    losses it logs.
    """
    curves: dict[str, list[tuple[int, float]]] = {}
    for r in records:
        split, step = r.get("split"), r.get("step")
        if split not in ("train", "validation") or not isinstance(step, int):
            continue
        named = sorted(k for k in r if k.endswith("_loss"))
        if split == "train":
            if len(named) != 1:
                _add(curves, "train: total (sum of the losses)" if named else "train: loss", step, r.get("loss"))
            for k in named:
                _add(curves, f"train: {k}", step, r[k])
        else:
            _add(curves, f"validation: {validation_loss}", step, r.get("loss"))
            for k in named:
                _add(curves, f"validation: {k}", step, r[k])
    return curves


def _add(curves: dict[str, list[tuple[int, float]]], label: str, step: int, value: Any) -> None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        curves.setdefault(label, []).append((step, float(value)))


def plot_loss(records: Sequence[dict[str, Any]], path: str | os.PathLike, validation_loss: str = "loss") -> Path | None:
    """The curves of :func:`loss_curves` against step, each labelled for what it is."""
    plt = _pyplot()
    if plt is None:
        return None
    curves = loss_curves(records, validation_loss)
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    for label, points in curves.items():
        ax.plot(*zip(*points), "o-" if label.startswith("validation") else "-", label=label)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title("losses (validation: over batches of eval.batch_size)")
    ax.grid(alpha=0.3)
    if curves:
        ax.legend(fontsize=8)
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
