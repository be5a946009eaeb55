"""SigLIP: CLIP's two towers trained with a pairwise sigmoid loss (Zhai et al. 2023).

The image tower is a ViT without a [CLS] token: patch embeddings + learned positions, a pre-norm
encoder, a final LayerNorm, then multihead attention pooling (a learned probe attends over the
patches, :class:`~vlkit.layers.attention_pool.AttentionPool`); its output is the image feature,
with no projection. The text tower reads token + learned position embeddings through a
bidirectional (not causal) pre-norm encoder, takes the final-normed LAST position (SigLIP pads
every text to the full context, so that is a padding token that has attended to the text) and
projects it linearly (with a bias) to the image tower's width. The logits are
``exp(logit_scale) * cosine + logit_bias``.

From scratch, ``logit_scale`` starts at log 10 and ``logit_bias`` at -10 as the paper says
(transformers initialises both to 0); a loaded checkpoint brings its own values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ..layers import (
    LearnedPositionEmbedding,
    PatchEmbed,
    TokenEmbedding,
    Transformer,
    build_attention_mask,
    resize_position_embedding,
)
from ..layers.attention_pool import AttentionPool
from .base import Model, check_towers
from .registry import register, register_family

SIGLIP_MEAN = (0.5, 0.5, 0.5)
SIGLIP_STD = (0.5, 0.5, 0.5)


@dataclass(frozen=True)
class SiglipVisionConfig:
    image_size: int = 224
    patch_size: int = 16
    in_channels: int = 3
    width: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_dim: int = 3072
    act: str = "gelu_tanh"
    norm_eps: float = 1e-6
    dropout: float = 0.0
    # preprocessing the checkpoints expect (vlkit.image_transform): squashed bicubically to the square
    image_mean: tuple[float, float, float] = SIGLIP_MEAN
    image_std: tuple[float, float, float] = SIGLIP_STD
    resize_mode: str = "squash"
    interpolation: str = "bicubic"
    grid_size: int = field(init=False)
    num_patches: int = field(init=False)

    def __post_init__(self) -> None:
        if self.patch_size > self.image_size:
            raise ValueError(f"patch_size {self.patch_size} is larger than image_size {self.image_size}")
        if self.width % self.num_heads:
            raise ValueError(f"vision width {self.width} is not divisible by num_heads {self.num_heads}")
        # so400m/14 reads 384-pixel images as 27 x 27 patches: the last 6 pixels of each side are unused
        object.__setattr__(self, "grid_size", self.image_size // self.patch_size)
        object.__setattr__(self, "num_patches", self.grid_size**2)


@dataclass(frozen=True)
class SiglipTextConfig:
    vocab_size: int = 32000
    context_length: int = 64
    width: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_dim: int = 3072
    act: str = "gelu_tanh"
    norm_eps: float = 1e-6
    dropout: float = 0.0
    # Shorter inputs are padded with this id to context_length before encoding: SigLIP pools the last
    # position, so a text's feature must not depend on how its batch was padded. 1 is SigLIP's "</s>";
    # None: texts are read as given.
    pad_token_id: int | None = 1

    def __post_init__(self) -> None:
        if self.width % self.num_heads:
            raise ValueError(f"text width {self.width} is not divisible by num_heads {self.num_heads}")


@dataclass(frozen=True)
class SiglipConfig:
    model_type: ClassVar[str] = "siglip"
    vision: SiglipVisionConfig = field(default_factory=SiglipVisionConfig)
    text: SiglipTextConfig = field(default_factory=SiglipTextConfig)
    init_logit_scale: float = math.log(10.0)  # the paper's t' = log 10 (transformers: 0)
    init_logit_bias: float = -10.0  # the paper's b = -10 (transformers: 0)
    max_logit_scale: float | None = None  # clamp of scale() = exp(logit_scale); None: no clamp, as SigLIP
    embed_dim: int = field(init=False)  # the image tower's width: the text head projects to it

    def __post_init__(self) -> None:
        check_towers(self, SiglipVisionConfig, SiglipTextConfig)
        object.__setattr__(self, "embed_dim", self.vision.width)


def _encoder(c: SiglipVisionConfig | SiglipTextConfig) -> Transformer:
    return Transformer(
        c.width, c.depth, c.num_heads, c.mlp_dim, norm_first=True, act=c.act, norm_eps=c.norm_eps, drop=c.dropout
    )


class SiglipVisionTower(nn.Module):
    """Patches + positions (no [CLS]) -> pre-norm encoder -> LayerNorm -> attention pooling."""

    def __init__(self, config: SiglipVisionConfig):
        super().__init__()
        c = config
        self.config = c
        self.patch_embed = PatchEmbed(c.patch_size, c.in_channels, c.width, bias=True)
        self.pos_embed = nn.Parameter(torch.zeros(1, c.num_patches, c.width))
        self.drop = nn.Dropout(c.dropout)
        self.encoder = _encoder(c)
        self.norm = nn.LayerNorm(c.width, eps=c.norm_eps)
        self.head = AttentionPool(c.width, c.num_heads, c.mlp_dim, act=c.act, norm_eps=c.norm_eps)

    def encode(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> patch tokens after the final norm (B, N, C); positions resized
        bicubically when the image is not the size the model was built for."""
        p = self.config.patch_size
        grid = (pixel_values.shape[2] // p, pixel_values.shape[3] // p)
        x = self.patch_embed(pixel_values[:, :, : grid[0] * p, : grid[1] * p])  # (B, N, C); as a "valid" conv
        pos: torch.Tensor = self.pos_embed
        if x.shape[1] != self.config.num_patches:
            pos = resize_position_embedding(pos, grid, num_prefix=0)
        return self.norm(self.encoder(self.drop(x + pos)))

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> pooled image features (B, C)."""
        return self.head(self.encode(pixel_values))


class SiglipTextTower(nn.Module):
    """Token + positions -> bidirectional pre-norm encoder -> LayerNorm -> last position -> head."""

    def __init__(self, config: SiglipTextConfig, embed_dim: int):
        super().__init__()
        c = config
        self.config = c
        self.token_embed = TokenEmbedding(c.vocab_size, c.width)
        self.pos_embed = LearnedPositionEmbedding(c.context_length, c.width)
        self.drop = nn.Dropout(c.dropout)
        self.encoder = _encoder(c)
        self.norm = nn.LayerNorm(c.width, eps=c.norm_eps)
        self.head = nn.Linear(c.width, embed_dim)

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T) ids -> hidden states after the final norm (B, L, C), L = context_length: shorter
        inputs are first padded with ``pad_token_id`` (as SigLIP's tokenizer pads to the full length).
        ``attention_mask`` (B, T), 1 for real tokens, hides padding as a key (as transformers does
        when given one)."""
        if input_ids.dim() != 2:
            raise ValueError(f"expected input_ids of shape (B, T), got {tuple(input_ids.shape)}")
        L = self.config.context_length
        if input_ids.shape[1] < L and self.config.pad_token_id is not None:
            input_ids = F.pad(input_ids, (0, L - input_ids.shape[1]), value=self.config.pad_token_id)  # (B, L)
            if attention_mask is not None:
                attention_mask = F.pad(attention_mask, (0, L - attention_mask.shape[1]), value=0)
        T = input_ids.shape[1]
        x = self.drop(self.token_embed(input_ids) + self.pos_embed(T))  # (B, T, C)
        mask = None if attention_mask is None else build_attention_mask(attention_mask, T, T)
        return self.norm(self.encoder(x, attn_mask=mask))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T) ids -> the head of the last position (B, D)."""
        return self.head(self.encode(input_ids, attention_mask)[:, -1])


@register_family
class Siglip(Model[SiglipConfig]):
    """Two towers, a scale and a bias. ``encode_image`` / ``encode_text`` give (B, embed_dim)
    features (un-normalised unless ``normalize=True``); ``forward`` gives both, L2-normalised;
    ``similarity`` the logits ``scale() * cosine + logit_bias`` (sigmoid of them: match probabilities)."""

    config_class = SiglipConfig

    def __init__(self, config: SiglipConfig):
        super().__init__(config)
        self.visual = SiglipVisionTower(config.vision)
        self.text = SiglipTextTower(config.text, config.embed_dim)
        self.logit_scale = nn.Parameter(torch.tensor(float(config.init_logit_scale)))
        self.logit_bias = nn.Parameter(torch.tensor(float(config.init_logit_bias)))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """big_vision's initialisation as transformers writes it: Xavier-uniform attention and MLP
        weights, LeCun-normal patch projection and text head, zero biases, positions N(0, 1/width)."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        for weight in (self.visual.patch_embed.proj.weight, self.text.head.weight):
            std = weight[0].numel() ** -0.5 / 0.87962566103423978  # LeCun normal truncated at 2 std (fan_in)
            nn.init.trunc_normal_(weight, std=std, a=-2 * std, b=2 * std)
        assert self.visual.patch_embed.proj.bias is not None
        nn.init.zeros_(self.visual.patch_embed.proj.bias)
        nn.init.normal_(self.visual.pos_embed, std=self.config.vision.width**-0.5)
        nn.init.normal_(self.text.token_embed.weight, std=self.config.text.width**-0.5)
        nn.init.normal_(self.text.pos_embed.weight, std=self.config.text.width**-0.5)
        self.logit_scale.fill_(self.config.init_logit_scale)
        self.logit_bias.fill_(self.config.init_logit_bias)

    def encode_image(self, pixel_values: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        """(B, 3, H, W) normalised pixels -> image features (B, D)."""
        features = self.visual(pixel_values)  # (B, D)
        return F.normalize(features, dim=-1) if normalize else features

    def encode_text(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, normalize: bool = False
    ) -> torch.Tensor:
        """(B, T) token ids (T <= context_length; SigLIP's checkpoints expect T = context_length) -> (B, D)."""
        features = self.text(input_ids, attention_mask)  # (B, D)
        return F.normalize(features, dim=-1) if normalize else features

    def forward(
        self, pixel_values: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (image_features, text_features), both L2-normalised (B, D)."""
        return (
            self.encode_image(pixel_values, normalize=True),
            self.encode_text(input_ids, attention_mask, normalize=True),
        )

    def scale(self) -> torch.Tensor:
        """exp(logit_scale), clamped at ``max_logit_scale`` when the config sets one."""
        scale = self.logit_scale.exp()
        limit = self.config.max_logit_scale
        return scale if limit is None else scale.clamp(max=limit)

    def bias(self) -> torch.Tensor:
        return self.logit_bias

    def similarity(self, pixel_values: torch.Tensor, input_ids: torch.Tensor, attention_mask=None) -> torch.Tensor:
        """Logits images x texts (B_img, B_txt): scale * cosine + bias; sigmoid gives match probabilities."""
        image, text = self(pixel_values, input_ids, attention_mask)
        return self.scale() * image @ text.t() + self.logit_bias


def _siglip(vision: dict, text: dict) -> SiglipConfig:
    return SiglipConfig(vision=SiglipVisionConfig(**vision), text=SiglipTextConfig(**text))


@register("siglip-base-patch16-224")
def siglip_base_patch16_224() -> SiglipConfig:
    """google/siglip-base-patch16-224: ViT-B/16 and a 12-layer text tower, 32000-token vocabulary."""
    return _siglip(dict(image_size=224, patch_size=16), dict())


@register("siglip-base-patch16-256")
def siglip_base_patch16_256() -> SiglipConfig:
    """google/siglip-base-patch16-256: as the 224 one at 256 pixels (256 patches)."""
    return _siglip(dict(image_size=256, patch_size=16), dict())


@register("siglip-so400m-patch14-384")
def siglip_so400m_patch14_384() -> SiglipConfig:
    """google/siglip-so400m-patch14-384: the shape-optimised ViT (width 1152, 27 layers, MLP 4304)."""
    size = dict(width=1152, depth=27, num_heads=16, mlp_dim=4304)
    return _siglip(dict(size, image_size=384, patch_size=14), size)


@register("siglip-tiny")
def siglip_tiny() -> SiglipConfig:
    """For tests and CPU smoke runs: 32-pixel images, 8-pixel patches, width 64, 2 layers; CLIP's
    tokenizer's vocabulary (49408 tokens), padding id 0 and 77 positions (vlkit cannot read
    SigLIP's SentencePiece tokenizer)."""
    tower = dict(width=64, depth=2, num_heads=4, mlp_dim=256)
    text = dict(tower, vocab_size=49408, context_length=77, pad_token_id=0)
    return _siglip(dict(tower, image_size=32, patch_size=8), text)
