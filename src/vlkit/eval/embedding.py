"""Embedding a list of image files: the one loop behind ``vlkit embed``, ``vlkit index`` and
``vlkit classify``.

    result = embed_image_files(model, files, batch_size=64, num_workers=1, precision="auto")
    result.features     # (N_kept, D) float32 on the CPU, L2-normalised unless normalize=False
    result.kept         # positions in ``files`` of the rows of ``features``
    result.skipped      # SkipReport of the files that could not be decoded

``precision`` is one of :data:`vlkit.runtime.PRECISIONS`: "auto" runs bf16 autocast on CUDA,
and on a CPU with native bf16 for a model wide enough that it pays (docs/precision.md); the
features come back in float32 either way.

Files are decoded by ``num_workers`` processes (0: this one) and batched in order; an unreadable
file is skipped and reported, never fatal, unless no file at all could be read (a ValueError).
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..data.folder import SkipReport
from ..data.image_files import ImageFiles
from ..data.transforms import image_transform
from ..runtime import check_precision
from .harness import ImageBatches
from .retrieval import encode_images


@dataclass
class ImageEmbeddings:
    """Features of the readable files, their positions in the input list, and the skipped files."""

    features: torch.Tensor  # (N_kept, D)
    kept: list[int]
    skipped: SkipReport


def progress_default() -> bool:
    """Progress bars on a terminal only (a log file gets no bar updates)."""
    return sys.stderr.isatty()


def _counted(batches: Iterable[torch.Tensor], bar: tqdm) -> Iterator[torch.Tensor]:
    """``batches`` unchanged, advancing ``bar`` by the images of each (so it shows images/s)."""
    for pixels in batches:  # (B, 3, H, W)
        yield pixels
        bar.update(len(pixels))


def embed_image_files(
    model,
    files: Sequence[Path],
    *,
    batch_size: int = 64,
    num_workers: int = 0,
    device: torch.device | str = "cpu",
    precision: str = "auto",
    normalize: bool = True,
    progress: bool = False,
    require_any: bool = True,
) -> ImageEmbeddings:
    """Image features of ``files`` (see the module docstring). With ``require_any=False`` a list
    with no readable file gives empty features (0, 0) instead of a ValueError."""
    check_precision(precision)
    batches = ImageBatches(ImageFiles(files, image_transform(model)), batch_size, num_workers)
    with tqdm(total=len(files), desc="images", unit="img", disable=not progress, leave=False) as bar:
        try:
            feats = encode_images(
                model, _counted(batches, bar), device=device, precision=precision, normalize=normalize
            )  # (N, D)
        except ValueError:
            if batches.kept:
                raise
            if not require_any:
                return ImageEmbeddings(torch.empty(0, 0), [], SkipReport(batches.skipped))
            raise ValueError(f"no image could be read: {SkipReport(batches.skipped).summary(len(files))}") from None
    return ImageEmbeddings(feats, list(batches.kept), SkipReport(batches.skipped))
