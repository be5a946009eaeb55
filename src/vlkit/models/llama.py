"""Llama: the decoder of Llama, Mistral, TinyLlama, SmolLM (and Qwen2, with ``qkv_bias``).

Token embedding, a stack of pre-norm :class:`~vlkit.layers.Block` with RMSNorm, rotary position
embeddings, grouped-query attention and the SwiGLU feed-forward, a final RMSNorm and an LM head
(its own matrix, or tied to the token embedding). Numerics follow transformers'
``LlamaForCausalLM``; generation runs on a KV cache through :mod:`vlkit.models.generation`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from ..layers import KVCache, RMSNorm, RotaryEmbedding, TokenEmbedding, Transformer, decoder_mask
from ..layers.rotary import ROPE_SCALINGS
from .bert import init_weights
from .decoder import DecoderLM
from .registry import register, register_family


@dataclass(frozen=True)
class LlamaConfig:
    """Sizes and options of a Llama-family decoder (HF names in brackets where they differ).

    ``num_kv_heads`` [num_key_value_heads] < ``num_heads``: grouped-query attention.
    ``qkv_bias``/``proj_bias`` [attention_bias]: biases of the query/key/value and output
    projections (Llama: none or both; Qwen2: q/k/v only). ``max_positions``
    [max_position_embeddings] bounds prompt + generated tokens. ``rope_scaling`` ["rope_type" of
    rope_parameters / rope_scaling]: "default", "linear" (``rope_factor``) or "llama3" (Llama 3.1/3.2:
    ``rope_factor``, ``rope_low_freq_factor``, ``rope_high_freq_factor``,
    ``rope_original_max_positions``); see :func:`vlkit.layers.rope_inv_freq`."""

    model_type: ClassVar[str] = "llama"
    vocab_size: int = 32000
    hidden_size: int = 4096
    intermediate_size: int = 11008
    num_layers: int = 32
    num_heads: int = 32
    num_kv_heads: int = 32
    rope_theta: float = 10000.0
    rope_scaling: str = "default"
    rope_factor: float = 1.0
    rope_low_freq_factor: float = 1.0
    rope_high_freq_factor: float = 4.0
    rope_original_max_positions: int = 8192
    rms_norm_eps: float = 1e-6
    max_positions: int = 2048
    tie_word_embeddings: bool = False
    qkv_bias: bool = False
    proj_bias: bool = False
    mlp_bias: bool = False
    attention_dropout: float = 0.0
    initializer_range: float = 0.02
    bos_token_id: int | None = 1
    eos_token_id: int | None = 2
    pad_token_id: int | None = None

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")
        if self.num_kv_heads < 1 or self.num_heads % self.num_kv_heads:
            raise ValueError(f"num_heads {self.num_heads} is not a multiple of num_kv_heads {self.num_kv_heads}")
        if self.rope_scaling not in ROPE_SCALINGS:
            raise ValueError(f"{self.rope_scaling} rope scaling is not supported; expected one of {ROPE_SCALINGS}")
        if (self.hidden_size // self.num_heads) % 2:
            raise ValueError(f"head size {self.hidden_size // self.num_heads} must be even for rotary embeddings")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads


@register_family
class Llama(DecoderLM[LlamaConfig]):
    """``model(input_ids) -> logits (B, T, V)``; ``generate`` continues prompts; the decoder
    protocol (``embed_tokens``, ``hidden_states(..., inputs_embeds=)``, ``logits``) lets BLIP-2 and
    the VLM put image features before the text."""

    config_class = LlamaConfig

    def __init__(self, config: LlamaConfig):
        super().__init__(config)
        c = config
        self.tokens = TokenEmbedding(c.vocab_size, c.hidden_size)
        self.rotary = RotaryEmbedding(
            c.head_dim,
            theta=c.rope_theta,
            scaling=c.rope_scaling,
            factor=c.rope_factor,
            low_freq_factor=c.rope_low_freq_factor,
            high_freq_factor=c.rope_high_freq_factor,
            original_max_positions=c.rope_original_max_positions,
        )
        self.decoder = Transformer(
            c.hidden_size,
            c.num_layers,
            c.num_heads,
            c.intermediate_size,
            norm_first=True,
            norm="rmsnorm",
            act="swiglu",
            rotary=True,
            num_kv_heads=c.num_kv_heads,
            norm_eps=c.rms_norm_eps,
            qkv_bias=c.qkv_bias,
            proj_bias=c.proj_bias,
            mlp_bias=c.mlp_bias,
            attn_drop=c.attention_dropout,
        )
        self.norm = RMSNorm(c.hidden_size, eps=c.rms_norm_eps)
        self.lm_head: nn.Linear | None = None
        if not c.tie_word_embeddings:
            self.lm_head = nn.Linear(c.hidden_size, c.vocab_size, bias=False)
        self.apply(lambda m: init_weights(m, std=c.initializer_range))

    def hidden_states(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        cache: KVCache | None = None,
        position_ids: torch.Tensor | None = None,
        *,
        inputs_embeds: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """input_ids (B, T), or ``inputs_embeds`` (B, T, H) in their place -> final-norm hidden
        states (B, T, H). ``attention_mask`` (B, past + T), 1 for real tokens; ``position_ids``
        (B, T) default to past, ..., past + T - 1 (as transformers without position ids)."""
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("give exactly one of input_ids and inputs_embeds")
        x = self.tokens(input_ids) if inputs_embeds is None else inputs_embeds  # (B, T, C)
        B, T = x.shape[:2]
        if position_ids is None:
            past = 0 if cache is None else cache.length
            position_ids = torch.arange(past, past + T, device=x.device).expand(B, T)  # (B, T)
        rope = self.rotary(position_ids, dtype=x.dtype)  # (cos, sin), each (B, T, hd)
        mask, is_causal = decoder_mask(attention_mask, T, cache, device=x.device)
        x = self.decoder(x, attn_mask=mask, is_causal=is_causal, cache=cache, rope=rope)
        return self.norm(x)


@register("llama-tiny")
def llama_tiny() -> LlamaConfig:
    """For tests: 2 layers of width 32, 4 query heads sharing 2 key/value heads."""
    return LlamaConfig(
        vocab_size=1000,
        hidden_size=32,
        intermediate_size=64,
        num_layers=2,
        num_heads=4,
        num_kv_heads=2,
        max_positions=128,
        bos_token_id=1,
        eos_token_id=2,
    )


@register("tinyllama-1.1b")
def tinyllama_1_1b() -> LlamaConfig:
    """TinyLlama/TinyLlama-1.1B-Chat-v1.0's config.json (hidden_size 2048, intermediate_size 5632,
    22 layers, 32 heads, 4 key/value heads, rope_theta 10000, rms_norm_eps 1e-5, 2048 positions,
    vocabulary 32000, untied LM head, bos 1, eos 2), as published on the HF hub."""
    return LlamaConfig(
        vocab_size=32000,
        hidden_size=2048,
        intermediate_size=5632,
        num_layers=22,
        num_heads=32,
        num_kv_heads=4,
        rope_theta=10000.0,
        rms_norm_eps=1e-5,
        max_positions=2048,
        tie_word_embeddings=False,
        bos_token_id=1,
        eos_token_id=2,
    )


@register("smollm-135m")
def smollm_135m() -> LlamaConfig:
    """HuggingFaceTB/SmolLM-135M's config.json (hidden_size 576, intermediate_size 1536, 30
    layers, 9 heads, 3 key/value heads, rope_theta 10000, rms_norm_eps 1e-5, 2048 positions,
    vocabulary 49152, tied embeddings, bos = eos = 0), as published on the HF hub."""
    return LlamaConfig(
        vocab_size=49152,
        hidden_size=576,
        intermediate_size=1536,
        num_layers=30,
        num_heads=9,
        num_kv_heads=3,
        rope_theta=10000.0,
        rms_norm_eps=1e-5,
        max_positions=2048,
        tie_word_embeddings=True,
        bos_token_id=0,
        eos_token_id=0,
    )
