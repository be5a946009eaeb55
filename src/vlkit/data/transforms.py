"""Image preprocessing: PIL image -> the normalised (3, H, W) float tensor a model expects.

The image is first made RGB by :func:`vlkit.data.images.to_rgb`, the conversion every image file
goes through when vlkit reads it (EXIF orientation, transparency composited onto white, 16-bit
scaled to 8-bit), so a PIL image given here and the same file read by a dataset or the CLI give
the same tensor. Evaluation then follows the reference preprocessing of CLIP-style checkpoints
(HF ``CLIPImageProcessor``'s PIL path, OpenAI's ``preprocess``): resize the short side to
``image_size`` with PIL's resampler (bicubic for CLIP), center-crop a square (offset
``(size - crop) // 2``, as HF does), scale to [0, 1], subtract the mean and divide by the std
per channel. ``resize_mode="squash"`` resizes straight to a square instead.
Training adds a light random-resized crop (90-100% of the area). Only Pillow, numpy and torch.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image

from .images import to_rgb

__all__ = ["ImageTransform", "image_transform", "shortest_side_size", "to_rgb"]

_RESAMPLE = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR, "nearest": Image.NEAREST, "lanczos": Image.LANCZOS}
_RESIZE_MODES = ("shortest", "squash")


def shortest_side_size(height: int, width: int, size: int) -> tuple[int, int]:
    """(H, W) with the short side resized to ``size`` and the long side ``int(size * long / short)``
    (the rounding of HF's get_resize_output_image_size and torchvision's Resize)."""
    short, long = (height, width) if height <= width else (width, height)
    new_long = int(size * long / short)
    return (size, new_long) if height <= width else (new_long, size)


class ImageTransform:
    """Callable PIL image -> (3, image_size, image_size) float32 tensor."""

    def __init__(
        self,
        image_size: int,
        mean: tuple[float, float, float],
        std: tuple[float, float, float],
        *,
        resize_mode: str = "shortest",
        interpolation: str = "bicubic",
        train: bool = False,
        scale: tuple[float, float] = (0.9, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        generator: torch.Generator | None = None,
    ) -> None:
        if resize_mode not in _RESIZE_MODES:
            raise ValueError(f"resize_mode {resize_mode!r} is not one of {_RESIZE_MODES}")
        if interpolation not in _RESAMPLE:
            raise ValueError(f"interpolation {interpolation!r} is not one of {sorted(_RESAMPLE)}")
        self.image_size, self.resize_mode, self.train = int(image_size), resize_mode, train
        self.resample = _RESAMPLE[interpolation]
        self.scale, self.ratio, self.generator = scale, ratio, generator
        self.mean = torch.tensor(mean, dtype=torch.float64).view(3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float64).view(3, 1, 1)
        levels = torch.arange(256, dtype=torch.float64).view(1, 256) / 255.0  # (1, 256)
        # every byte's normalised value per channel, computed as before in float64: a lookup is bit-identical
        self.table = ((levels - self.mean.view(3, 1)) / self.std.view(3, 1)).to(torch.float32)  # (3, 256)

    def __repr__(self) -> str:
        return (
            f"ImageTransform(image_size={self.image_size}, resize_mode={self.resize_mode!r}, "
            f"train={self.train}, mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()})"
        )

    def _uniform(self, low: float, high: float) -> float:
        return low + (high - low) * torch.rand((), generator=self.generator, dtype=torch.float64).item()

    def random_crop_box(self, width: int, height: int) -> tuple[int, int, int, int]:
        """A box covering ``scale`` of the area at an aspect ratio in ``ratio`` (log-uniform), as
        torchvision's RandomResizedCrop samples it; the central square-ish crop after 10 misses."""
        area = width * height
        log_ratio = (math.log(self.ratio[0]), math.log(self.ratio[1]))
        for _ in range(10):
            target = area * self._uniform(*self.scale)
            aspect = math.exp(self._uniform(*log_ratio))
            w, h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
            if 0 < w <= width and 0 < h <= height:
                left = int(torch.randint(0, width - w + 1, (), generator=self.generator))
                top = int(torch.randint(0, height - h + 1, (), generator=self.generator))
                return left, top, left + w, top + h
        aspect = width / height
        if aspect < self.ratio[0]:
            w, h = width, round(width / self.ratio[0])
        elif aspect > self.ratio[1]:
            w, h = round(height * self.ratio[1]), height
        else:
            w, h = width, height
        left, top = (width - w) // 2, (height - h) // 2
        return left, top, left + w, top + h

    def resize_and_crop(self, image: Image.Image) -> Image.Image:
        """The geometric part: PIL RGB image -> PIL RGB image of image_size x image_size."""
        S = self.image_size
        if self.train:
            return image.resize((S, S), self.resample, box=self.random_crop_box(*image.size))
        if self.resize_mode == "squash":
            return image.resize((S, S), self.resample)
        W, H = image.size
        h, w = shortest_side_size(H, W, S)
        if (h, w) != (H, W):
            image = image.resize((w, h), self.resample)
        top, left = (h - S) // 2, (w - S) // 2
        return image.crop((left, top, left + S, top + S))

    def __call__(self, image) -> torch.Tensor:
        image = self.resize_and_crop(to_rgb(image))
        pixels = torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1)  # (3, S, S) uint8
        return torch.gather(self.table, 1, pixels.reshape(3, -1).long()).view(pixels.shape)  # (3, S, S)


def image_transform(model_or_config, train: bool = False, **kwargs) -> ImageTransform:
    """The preprocessing a model (or its config) expects: reads ``image_size``, ``image_mean``,
    ``image_std``, ``resize_mode`` and ``interpolation`` from the config's ``vision`` part, or from
    the config itself for a bare image model. ``kwargs`` go to :class:`ImageTransform` (``scale``,
    ``ratio``, ``generator``)."""
    config = getattr(model_or_config, "config", model_or_config)
    vision = getattr(config, "vision", config)
    needed = ("image_size", "image_mean", "image_std")
    missing = [name for name in needed if not hasattr(vision, name)]
    if missing:
        raise TypeError(
            f"image_transform needs a model or config with image fields {needed}; "
            f"{type(vision).__name__} lacks {missing}"
        )
    return ImageTransform(
        vision.image_size,
        vision.image_mean,
        vision.image_std,
        resize_mode=getattr(vision, "resize_mode", "shortest"),
        interpolation=getattr(vision, "interpolation", "bicubic"),
        train=train,
        **kwargs,
    )
