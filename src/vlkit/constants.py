"""Numbers that several families and converters share, defined once."""

from typing import Any

# Per-channel image normalisation of OpenAI's CLIP (also used by ALBEF and BLIP).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

# The image towers' fixed options (ViTConfig fields): the family's model file builds its vision
# config from these, and its HF converter reads a checkpoint's sizes on top of them.
CLIP_VISION: dict[str, Any] = dict(  # OpenAI's ViT-B/32 unless overridden: ln_pre, no patch bias, QuickGELU
    patch_size=32,
    act="quick_gelu",
    norm_eps=1e-5,
    patch_bias=False,
    pre_norm=True,
    image_mean=CLIP_MEAN,
    image_std=CLIP_STD,
    resize_mode="shortest",
    interpolation="bicubic",
)
BLIP_VISION: dict[str, Any] = dict(  # ViT-B/16 at 384 px: patch bias, no pre-norm, images squashed bicubically
    image_size=384, norm_eps=1e-5, image_mean=CLIP_MEAN, image_std=CLIP_STD, interpolation="bicubic"
)
BLIP2_VISION: dict[str, Any] = dict(  # EVA ViT-g/14 at 224 px as BLIP-2 uses it (39 layers): BLIP's tower otherwise
    BLIP_VISION, image_size=224, patch_size=14, width=1408, depth=39, num_heads=16, mlp_dim=6144, norm_eps=1e-6
)
