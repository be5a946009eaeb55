"""Shared transformer layers. Every argument is explicit; no config objects here."""

from .attention import (
    Attention,
    KVCache,
    LayerCache,
    StaticKVCache,
    StaticLayerCache,
    build_attention_mask,
    decoder_mask,
)
from .block import Block, Transformer
from .embeddings import (
    LearnedPositionEmbedding,
    SegmentEmbedding,
    TokenEmbedding,
    sincos_2d_position_encoding,
    sinusoidal_position_encoding,
)
from .linear_layout import contiguous_linear_storage, transpose_linear_storage
from .mlp import GELU, Mlp, QuickGELU, SwiGLU, make_activation, make_mlp
from .norms import RMSNorm, make_norm
from .patch_embed import PatchEmbed, resize_position_embedding
from .rotary import RotaryEmbedding, apply_rotary, rope_inv_freq, rotate_half

__all__ = [
    "Attention",
    "KVCache",
    "LayerCache",
    "StaticKVCache",
    "StaticLayerCache",
    "decoder_mask",
    "build_attention_mask",
    "Block",
    "Transformer",
    "LearnedPositionEmbedding",
    "SegmentEmbedding",
    "TokenEmbedding",
    "sincos_2d_position_encoding",
    "sinusoidal_position_encoding",
    "GELU",
    "Mlp",
    "QuickGELU",
    "make_activation",
    "SwiGLU",
    "make_mlp",
    "RMSNorm",
    "make_norm",
    "RotaryEmbedding",
    "apply_rotary",
    "rope_inv_freq",
    "rotate_half",
    "PatchEmbed",
    "resize_position_embedding",
    "transpose_linear_storage",
    "contiguous_linear_storage",
]
