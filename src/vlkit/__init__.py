"""vlkit: vision-language models in PyTorch.

import vlkit
model = vlkit.from_pretrained(folder_or_hub_id)
model = vlkit.create_model("clip-vit-b-16")
tok = vlkit.get_tokenizer("clip")
"""

from .models import CheckpointError, GenerationConfig, create_model, from_pretrained, list_models

__version__ = "0.1.0"


def get_tokenizer(source, **kwargs):
    """The tokenizer for a registered name, a vlkit/HF folder or a standard vocabulary file."""
    from .tokenizers import get_tokenizer as _get

    return _get(source, **kwargs)


def image_transform(model_or_config, train: bool = False, **kwargs):
    """PIL image -> the (3, H, W) tensor the model expects (see vlkit.data.transforms)."""
    from .data.transforms import image_transform as _transform

    return _transform(model_or_config, train=train, **kwargs)


__all__ = [
    "CheckpointError",
    "GenerationConfig",
    "create_model",
    "from_pretrained",
    "list_models",
    "get_tokenizer",
    "image_transform",
    "__version__",
]
