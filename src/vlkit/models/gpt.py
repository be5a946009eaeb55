"""GPT: token + learned position embeddings, a pre-norm causal decoder, LM head tied to the
token embedding; generation on a KV cache."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from ..layers import KVCache, LearnedPositionEmbedding, TokenEmbedding, Transformer, decoder_mask
from .bert import init_weights
from .decoder import DecoderLM
from .registry import register, register_family


@dataclass(frozen=True)
class GPTConfig:
    model_type: ClassVar[str] = "gpt"
    vocab_size: int = 50257
    hidden_size: int = 768
    num_layers: int = 12
    num_heads: int = 12
    intermediate_size: int = 3072
    max_positions: int = 1024
    norm_eps: float = 1e-5
    act: str = "gelu_tanh"
    dropout: float = 0.1
    bos_token_id: int | None = 50256
    eos_token_id: int | None = 50256

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")


@register_family
class GPT(DecoderLM[GPTConfig]):
    config_class = GPTConfig

    def __init__(self, config: GPTConfig):
        super().__init__(config)
        c = config
        self.tokens = TokenEmbedding(c.vocab_size, c.hidden_size)
        self.positions = LearnedPositionEmbedding(c.max_positions, c.hidden_size)
        self.drop = nn.Dropout(c.dropout)
        self.decoder = Transformer(
            c.hidden_size,
            c.num_layers,
            c.num_heads,
            c.intermediate_size,
            norm_first=True,
            act=c.act,
            norm_eps=c.norm_eps,
            drop=c.dropout,
            attn_drop=c.dropout,
        )
        self.norm = nn.LayerNorm(c.hidden_size, eps=c.norm_eps)
        self.lm_head = None  # tied to the token embedding
        self.apply(init_weights)
        # GPT-2 scales the residual output projections by 1/sqrt(2 * layers) at init
        for name, p in self.named_parameters():
            if name.endswith(("attn.proj.weight", "mlp.fc2.weight")):
                nn.init.normal_(p, std=0.02 / (2 * c.num_layers) ** 0.5)

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
        states (B, T, H). ``attention_mask`` (B, past + T)."""
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("give exactly one of input_ids and inputs_embeds")
        embeds = self.tokens(input_ids) if inputs_embeds is None else inputs_embeds  # (B, T, C)
        T = embeds.shape[1]
        if position_ids is None:  # positions after the cached ones
            positions = self.positions(T, 0 if cache is None else cache.length)  # (1, T, C)
        else:
            positions = self.positions(T, position_ids=position_ids)  # (B, T, C)
        x = self.drop(embeds + positions)  # (B, T, C)
        mask, is_causal = decoder_mask(attention_mask, T, cache, device=x.device)
        x = self.decoder(x, attn_mask=mask, is_causal=is_causal, cache=cache)
        return self.norm(x)


@register("gpt2")
def gpt2() -> GPTConfig:
    return GPTConfig()


@register("gpt2-medium")
def gpt2_medium() -> GPTConfig:
    return GPTConfig(hidden_size=1024, num_layers=24, num_heads=16, intermediate_size=4096)


@register("gpt-tiny")
def gpt_tiny() -> GPTConfig:
    return GPTConfig(
        vocab_size=1000,
        hidden_size=32,
        num_layers=2,
        num_heads=2,
        intermediate_size=128,
        max_positions=128,
        bos_token_id=0,
        eos_token_id=0,
    )
