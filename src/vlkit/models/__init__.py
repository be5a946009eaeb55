"""Model families: one file each, a frozen config dataclass, modules and presets."""

from . import albef, bert, blip, blip2, clip, gpt, llama, opt, siglip, vilt, vit, vlm  # noqa: F401  (register the families and presets)
from .albef import ALBEF, ALBEFConfig, ALBEFTextConfig
from .base import CheckpointError, Model, count_parameters
from .bert import BertConfig, BertModel
from .blip import Blip, BlipConfig, BlipTextConfig, itm_rerank
from .blip2 import Blip2, Blip2Config, itc_scores
from .clip import CLIP, CLIPConfig, CLIPTextConfig
from .generation_config import GenerationConfig
from .gpt import GPT, GPTConfig
from .llama import Llama, LlamaConfig
from .loading import from_pretrained
from .opt import OPT, OPTConfig
from .qformer import QFormerConfig
from .registry import create_model, list_models, register
from .siglip import Siglip, SiglipConfig, SiglipTextConfig, SiglipVisionConfig
from .vilt import Vilt, ViltConfig
from .vit import ViT, ViTConfig
from .vlm import VLM, VLMConfig

__all__ = [
    "CheckpointError",
    "Model",
    "GenerationConfig",
    "BertConfig",
    "BertModel",
    "GPT",
    "GPTConfig",
    "OPT",
    "OPTConfig",
    "Llama",
    "LlamaConfig",
    "ViT",
    "ViTConfig",
    "VLM",
    "VLMConfig",
    "CLIP",
    "CLIPConfig",
    "CLIPTextConfig",
    "Blip",
    "BlipConfig",
    "BlipTextConfig",
    "itm_rerank",
    "Blip2",
    "Blip2Config",
    "QFormerConfig",
    "itc_scores",
    "count_parameters",
    "ALBEF",
    "ALBEFConfig",
    "ALBEFTextConfig",
    "Siglip",
    "SiglipConfig",
    "SiglipTextConfig",
    "SiglipVisionConfig",
    "Vilt",
    "ViltConfig",
    "from_pretrained",
    "create_model",
    "list_models",
    "register",
]
