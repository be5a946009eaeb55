"""CLIP: a ViT image tower and a causal text transformer, each projected linearly into a shared
embedding space where matching image-text pairs have high cosine similarity (Radford et al. 2021).

The image tower is :class:`~vlkit.models.vit.ViT` with CLIP's options (LayerNorm before the
encoder, no patch-projection bias); its feature is the final-normed [CLS] token. The text tower
reads token + learned position embeddings through a causal pre-norm encoder and pools at the
end-of-text token. A learnable ``logit_scale`` (log of the inverse temperature) scales the
cosine similarities in the contrastive loss.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import partial
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ..constants import CLIP_VISION
from ..layers import Block, LearnedPositionEmbedding, TokenEmbedding, Transformer, build_attention_mask
from .base import Model, check_towers
from .registry import register, register_family
from .vit import ViT, ViTConfig, tower_encoder

# CLIP's image tower (OpenAI's ViT-B/32 unless overridden): ln_pre, no patch bias, QuickGELU;
# the short side resized bicubically, then a center crop.
clip_vision_config = partial(ViTConfig, **CLIP_VISION)


@dataclass(frozen=True)
class CLIPTextConfig:
    vocab_size: int = 49408
    context_length: int = 77
    width: int = 512
    depth: int = 12
    num_heads: int = 8
    mlp_dim: int = 2048
    act: str = "quick_gelu"
    norm_eps: float = 1e-5
    # Pool at the first occurrence of this id; None pools at the largest id of each row (argmax),
    # which is end-of-text (49407) for OpenAI's tokenizer, the last entry of its vocabulary.
    eos_token_id: int | None = None
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if self.width % self.num_heads:
            raise ValueError(f"text width {self.width} is not divisible by num_heads {self.num_heads}")


@dataclass(frozen=True)
class CLIPConfig:
    model_type: ClassVar[str] = "clip"
    vision: ViTConfig = field(default_factory=clip_vision_config)
    text: CLIPTextConfig = field(default_factory=CLIPTextConfig)
    embed_dim: int = 512
    init_logit_scale: float = math.log(1 / 0.07)
    max_logit_scale: float = 100.0  # scale() = exp(logit_scale) clamped to this

    def __post_init__(self) -> None:
        check_towers(self, ViTConfig, CLIPTextConfig)


class CLIPTextTransformer(nn.Module):
    """Token + learned position embeddings -> causal pre-norm encoder -> final LayerNorm."""

    def __init__(self, config: CLIPTextConfig):
        super().__init__()
        c = config
        self.config = c
        self.token_embed = TokenEmbedding(c.vocab_size, c.width)
        self.pos_embed = LearnedPositionEmbedding(c.context_length, c.width)
        self.drop = nn.Dropout(c.dropout)
        self.encoder = tower_encoder(c)
        self.norm = nn.LayerNorm(c.width, eps=c.norm_eps)

    def _encoder_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        if input_ids.dim() != 2:
            raise ValueError(f"expected input_ids of shape (B, T), got {tuple(input_ids.shape)}")
        B, T = input_ids.shape
        x = self.drop(self.token_embed(input_ids) + self.pos_embed(T))  # (B, T, C)
        mask = None if attention_mask is None else build_attention_mask(attention_mask, T, T, causal=True)
        return self.encoder(x, attn_mask=mask, is_causal=mask is None)  # (B, T, C), before the final norm

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T) ids -> hidden states after the final norm (B, T, C). ``attention_mask`` (B, T),
        1 for real tokens, also hides padding from the causal attention (which matters only for
        left padding: right padding comes after every real token anyway)."""
        return self.norm(self._encoder_states(input_ids, attention_mask))

    def pool_index(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Position of the end-of-text token in each row (B,)."""
        if self.config.eos_token_id is None:
            return input_ids.argmax(dim=-1)
        return (input_ids == self.config.eos_token_id).int().argmax(dim=-1)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T) ids -> the end-of-text token's hidden state after the final norm (B, C)."""
        hidden = self._encoder_states(input_ids, attention_mask)  # (B, T, C)
        pooled = hidden[torch.arange(hidden.shape[0], device=hidden.device), self.pool_index(input_ids)]  # (B, C)
        return self.norm(pooled)  # LayerNorm is per token: norm only the one that is read


def _init_transformer(encoder: Transformer, width: int) -> None:
    """OpenAI CLIP's initialisation of a residual stack: projections into the residual stream
    shrink with depth so the stream's variance stays bounded."""
    depth = len(encoder)
    attn_std, proj_std, fc_std = width**-0.5, width**-0.5 * (2 * depth) ** -0.5, (2 * width) ** -0.5
    for block in encoder.blocks:
        assert isinstance(block, Block)
        nn.init.normal_(block.attn.qkv.weight, std=attn_std)
        nn.init.normal_(block.attn.proj.weight, std=proj_std)
        nn.init.normal_(block.mlp.fc1.weight, std=fc_std)
        nn.init.normal_(block.mlp.fc2.weight, std=proj_std)


@register_family
class CLIP(Model[CLIPConfig]):
    """Two towers and a temperature. ``encode_image`` / ``encode_text`` give (B, embed_dim)
    features (un-normalised unless ``normalize=True``); ``forward`` gives both, L2-normalised."""

    config_class = CLIPConfig

    def __init__(self, config: CLIPConfig):
        super().__init__(config)
        v, t = config.vision, config.text
        self.visual = ViT(v)
        self.text = CLIPTextTransformer(t)
        self.image_proj = nn.Linear(v.width, config.embed_dim, bias=False)
        self.text_proj = nn.Linear(t.width, config.embed_dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(float(config.init_logit_scale)))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        v, t = self.config.vision, self.config.text
        nn.init.normal_(self.text.token_embed.weight, std=0.02)
        nn.init.normal_(self.text.pos_embed.weight, std=0.01)
        nn.init.normal_(self.visual.cls_token, std=v.width**-0.5)
        nn.init.normal_(self.visual.pos_embed, std=v.width**-0.5)
        _init_transformer(self.text.encoder, t.width)
        _init_transformer(self.visual.encoder, v.width)
        nn.init.normal_(self.image_proj.weight, std=v.width**-0.5)
        nn.init.normal_(self.text_proj.weight, std=t.width**-0.5)
        self.logit_scale.fill_(self.config.init_logit_scale)

    def encode_image(self, pixel_values: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        """(B, 3, H, W) normalised pixels -> image features (B, D)."""
        hidden = self.visual.encoder(self.visual.embed(pixel_values))  # (B, 1 + N, Cv)
        features = self.image_proj(self.visual.norm(hidden[:, 0]))  # (B, D)
        return F.normalize(features, dim=-1) if normalize else features

    def encode_text(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, normalize: bool = False
    ) -> torch.Tensor:
        """(B, T) token ids (T <= context_length) -> text features (B, D)."""
        features = self.text_proj(self.text(input_ids, attention_mask))  # (B, D)
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
        """The inverse temperature exp(logit_scale), clamped at ``max_logit_scale`` (100)."""
        return self.logit_scale.exp().clamp(max=self.config.max_logit_scale)

    def similarity(self, pixel_values: torch.Tensor, input_ids: torch.Tensor, attention_mask=None) -> torch.Tensor:
        """Scaled cosine similarities, images x texts (B_img, B_txt): zero-shot logits."""
        image, text = self(pixel_values, input_ids, attention_mask)
        return self.scale() * image @ text.t()


def _clip(vision: dict, text: dict, embed_dim: int) -> CLIPConfig:
    return CLIPConfig(vision=clip_vision_config(**vision), text=CLIPTextConfig(**text), embed_dim=embed_dim)


@register("clip-vit-b-32")
def clip_vit_b_32() -> CLIPConfig:
    return _clip(dict(patch_size=32), dict(), 512)


@register("clip-vit-b-16")
def clip_vit_b_16() -> CLIPConfig:
    return _clip(dict(patch_size=16), dict(), 512)


@register("clip-vit-l-14")
def clip_vit_l_14() -> CLIPConfig:
    return _clip(
        dict(patch_size=14, width=1024, depth=24, num_heads=16, mlp_dim=4096),
        dict(width=768, num_heads=12, mlp_dim=3072),
        768,
    )


@register("clip-tiny")
def clip_tiny() -> CLIPConfig:
    """For tests and CPU smoke runs: 32-pixel images, 8-pixel patches, width 64, 2 layers."""
    return _clip(
        dict(image_size=32, patch_size=8, width=64, depth=2, num_heads=4, mlp_dim=256),
        dict(width=64, depth=2, num_heads=4, mlp_dim=256),
        64,
    )
