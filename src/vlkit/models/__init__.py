"""Model families: one file each, a frozen config dataclass, modules and presets."""

from . import albef, bert, blip, clip, gpt, vilt, vit  # noqa: F401  (register the families and presets)
from .albef import ALBEF, ALBEFConfig, ALBEFTextConfig
from .base import CheckpointError, Model
from .bert import BertConfig, BertModel
from .blip import Blip, BlipConfig, BlipTextConfig, itm_rerank
from .clip import CLIP, CLIPConfig, CLIPTextConfig
from .generation_config import GenerationConfig
from .gpt import GPT, GPTConfig
from .loading import from_pretrained
from .registry import create_model, list_models, register
from .vilt import Vilt, ViltConfig
from .vit import ViT, ViTConfig

__all__ = [
    "CheckpointError",
    "Model",
    "GenerationConfig",
    "BertConfig",
    "BertModel",
    "GPT",
    "GPTConfig",
    "ViT",
    "ViTConfig",
    "CLIP",
    "CLIPConfig",
    "CLIPTextConfig",
    "Blip",
    "BlipConfig",
    "BlipTextConfig",
    "itm_rerank",
    "ALBEF",
    "ALBEFConfig",
    "ALBEFTextConfig",
    "Vilt",
    "ViltConfig",
    "from_pretrained",
    "create_model",
    "list_models",
    "register",
]
