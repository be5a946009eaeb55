"""vlkit.data: built-in synthetic shapes, a user's image-caption folder, batching, the image decoder."""

from .folder import ImageTextFolder, Skipped, SkipReport
from .images import ImageError, load_image
from .loader import ImageTextCollator, ResumableSampler, StepLoader, eval_loader
from .synthetic import ShapeAttributes, ShapesDataset, ZeroShotTask

__all__ = [
    "ImageError",
    "ImageTextCollator",
    "ImageTextFolder",
    "ResumableSampler",
    "ShapeAttributes",
    "ShapesDataset",
    "SkipReport",
    "Skipped",
    "StepLoader",
    "ZeroShotTask",
    "eval_loader",
    "load_image",
]
