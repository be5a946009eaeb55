"""vlkit.data: built-in synthetic shapes, a user's image-caption folder, batching."""
from .folder import ImageTextFolder, SkipReport, Skipped
from .loader import ImageTextCollator, ResumableSampler, StepLoader, eval_loader
from .synthetic import ShapeAttributes, ShapesDataset, ZeroShotTask
