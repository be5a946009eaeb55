"""ViT: patch embedding, [CLS] token, learned position embeddings, pre-norm encoder, final norm.

The same tower is CLIP's and BLIP's image encoder: ``pre_norm`` adds CLIP's LayerNorm before the
encoder, ``patch_bias=False`` drops the patch projection's bias as CLIP does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

import torch
from torch import nn

from ..layers import PatchEmbed, Transformer, resize_position_embedding
from .base import Model
from .bert import init_weights
from .registry import register, register_family

if TYPE_CHECKING:
    from .clip import CLIPTextConfig

IMAGENET_INCEPTION_MEAN = (0.5, 0.5, 0.5)
IMAGENET_INCEPTION_STD = (0.5, 0.5, 0.5)


@dataclass(frozen=True)
class ViTConfig:
    model_type: ClassVar[str] = "vit"
    image_size: int = 224
    patch_size: int = 16
    in_channels: int = 3
    width: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_dim: int = 3072
    act: str = "gelu"
    norm_eps: float = 1e-12
    qkv_bias: bool = True
    patch_bias: bool = True
    pre_norm: bool = False  # LayerNorm on the embeddings before the encoder (CLIP's ln_pre)
    pooler: bool = False  # HF ViTModel's tanh(W h_[CLS]) pooler
    dropout: float = 0.0
    # preprocessing the checkpoint expects (used by vlkit.image_transform)
    image_mean: tuple[float, float, float] = IMAGENET_INCEPTION_MEAN
    image_std: tuple[float, float, float] = IMAGENET_INCEPTION_STD
    resize_mode: str = "squash"  # "squash": resize to image_size x image_size; "shortest": short side, then center crop
    interpolation: str = "bilinear"
    grid_size: int = field(init=False)
    num_patches: int = field(init=False)

    def __post_init__(self) -> None:
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")
        if self.width % self.num_heads:
            raise ValueError(f"width {self.width} is not divisible by num_heads {self.num_heads}")
        object.__setattr__(self, "grid_size", self.image_size // self.patch_size)
        object.__setattr__(self, "num_patches", self.grid_size**2)


def tower_encoder(c: ViTConfig | CLIPTextConfig, *, qkv_bias: bool = True) -> Transformer:
    """The pre-norm stack of a tower config (``width``, ``depth``, ``num_heads``, ``mlp_dim``,
    ``act``, ``norm_eps``, ``dropout``): the ViT's encoder and CLIP's text encoder."""
    return Transformer(
        c.width,
        c.depth,
        c.num_heads,
        c.mlp_dim,
        norm_first=True,
        act=c.act,
        norm_eps=c.norm_eps,
        qkv_bias=qkv_bias,
        drop=c.dropout,
    )


@register_family
class ViT(Model[ViTConfig]):
    config_class = ViTConfig

    def __init__(self, config: ViTConfig):
        super().__init__(config)
        c = config
        self.patch_embed = PatchEmbed(c.patch_size, c.in_channels, c.width, bias=c.patch_bias)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, c.width))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + c.num_patches, c.width))
        self.norm_pre = nn.LayerNorm(c.width, eps=c.norm_eps) if c.pre_norm else None
        self.drop = nn.Dropout(c.dropout)
        self.encoder = tower_encoder(c, qkv_bias=c.qkv_bias)
        self.norm = nn.LayerNorm(c.width, eps=c.norm_eps)
        self.pooler = nn.Linear(c.width, c.width) if c.pooler else None
        self.apply(init_weights)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)

    def embed(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> tokens with [CLS] and positions (B, 1 + N, C); positions are resized
        bicubically when the image is not the size the model was built for."""
        x = self.patch_embed(pixel_values)  # (B, N, C)
        B, N, _ = x.shape
        pos: torch.Tensor = self.pos_embed
        if self.config.num_patches != N:
            p = self.config.patch_size
            pos = resize_position_embedding(pos, (pixel_values.shape[2] // p, pixel_values.shape[3] // p))
        x = torch.cat([self.cls_token.expand(B, -1, -1), x], dim=1) + pos
        if self.norm_pre is not None:
            x = self.norm_pre(x)
        return self.drop(x)

    def encode(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> last hidden states after the final norm (B, 1 + N, C)."""
        return self.norm(self.encoder(self.embed(pixel_values)))

    forward = encode

    def hidden_states_at(self, pixel_values: torch.Tensor, layer: int) -> torch.Tensor:
        """(B, 3, H, W) -> the tower's hidden states (B, 1 + N, C) at ``layer``, numbered as HF's
        ``hidden_states[layer]``: 0 the embeddings (after CLIP's pre-norm), i the output of block i,
        negative counted from the end (-1: the last block); before the final norm. Only the blocks
        up to ``layer`` run (LLaVA reads -2, the second-to-last)."""
        depth = len(self.encoder)
        if not -(depth + 1) <= layer <= depth:
            raise ValueError(f"layer {layer} is outside this {depth}-block tower's [-{depth + 1}, {depth}]")
        x = self.embed(pixel_values)  # (B, 1 + N, C)
        for block in self.encoder.blocks[: layer % (depth + 1)]:
            x = block(x)
        return x

    def pool(self, hidden: torch.Tensor) -> torch.Tensor:
        """HF ViTModel's pooler_output: tanh(W h_[CLS]) (B, C)."""
        if self.pooler is None:
            raise ValueError("this ViT has no pooler (config.pooler=False)")
        return torch.tanh(self.pooler(hidden[:, 0]))


@register("vit-b-16")
def vit_b_16() -> ViTConfig:
    return ViTConfig()


@register("vit-b-32")
def vit_b_32() -> ViTConfig:
    return ViTConfig(patch_size=32)


@register("vit-l-14")
def vit_l_14() -> ViTConfig:
    return ViTConfig(patch_size=14, width=1024, depth=24, num_heads=16, mlp_dim=4096)


@register("vit-tiny")
def vit_tiny() -> ViTConfig:
    return ViTConfig(image_size=32, patch_size=8, width=32, depth=2, num_heads=2, mlp_dim=64)
