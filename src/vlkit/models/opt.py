"""OPT (Zhang et al. 2022): Meta's open GPT-3-style decoders, the frozen language models of the
published BLIP-2 checkpoints.

A pre-norm causal stack of the one ``Block`` with a ReLU feed-forward, learned positions stored
with OPT's offset of 2 (position p reads row p + 2; positions count the real tokens of the
attention mask, as HF does), a final LayerNorm, and an LM head tied to the token embedding
(untied when the checkpoint says so). No dropout on the embeddings.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from ..layers import KVCache, LearnedPositionEmbedding, TokenEmbedding, Transformer, decoder_mask
from .bert import init_weights
from .decoder import DecoderLM
from .registry import register, register_family

POSITION_OFFSET = 2  # OPT's position table has two rows before position 0


@dataclass(frozen=True)
class OPTConfig:
    model_type: ClassVar[str] = "opt"
    vocab_size: int = 50272
    hidden_size: int = 768
    num_layers: int = 12
    num_heads: int = 12
    intermediate_size: int = 3072
    max_positions: int = 2048
    norm_eps: float = 1e-5
    act: str = "relu"
    dropout: float = 0.1
    attention_dropout: float = 0.0
    tie_word_embeddings: bool = True
    pad_token_id: int | None = 1
    bos_token_id: int | None = 2
    eos_token_id: int | None = 2

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")
        if self.pad_token_id is not None and not 0 <= self.pad_token_id < self.vocab_size:
            raise ValueError(f"pad_token_id {self.pad_token_id} is outside the vocabulary of {self.vocab_size}")


def opt_position_ids(attention_mask: torch.Tensor, past: int) -> torch.Tensor:
    """HF OPT's positions from a (B, past + T) mask: real tokens counted from 0, padding at -1
    -> (B, T) for the new tokens."""
    mask = attention_mask.long()
    return (mask.cumsum(dim=1) * mask - 1)[:, past:]


@register_family
class OPT(DecoderLM[OPTConfig]):
    config_class = OPTConfig

    def __init__(self, config: OPTConfig):
        super().__init__(config)
        c = config
        self.tokens = TokenEmbedding(c.vocab_size, c.hidden_size, padding_idx=c.pad_token_id)
        self.positions = LearnedPositionEmbedding(c.max_positions + POSITION_OFFSET, c.hidden_size)
        self.decoder = Transformer(
            c.hidden_size,
            c.num_layers,
            c.num_heads,
            c.intermediate_size,
            norm_first=True,
            act=c.act,
            norm_eps=c.norm_eps,
            drop=c.dropout,
            attn_drop=c.attention_dropout,
        )
        self.norm = nn.LayerNorm(c.hidden_size, eps=c.norm_eps)
        self.lm_head = None if c.tie_word_embeddings else nn.Linear(c.hidden_size, c.vocab_size, bias=False)
        self.apply(init_weights)
        if c.pad_token_id is not None:
            with torch.no_grad():
                self.tokens.weight[c.pad_token_id].zero_()

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
        states (B, T, H). ``attention_mask`` (B, past + T); ``position_ids`` (B, T) count from 0
        (the offset is added here) and default to the mask's real-token count."""
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("give exactly one of input_ids and inputs_embeds")
        embeds = self.tokens(input_ids) if inputs_embeds is None else inputs_embeds  # (B, T, C)
        B, T = embeds.shape[:2]
        if position_ids is None:  # (a static cache's decoding step always gives them)
            past = 0 if cache is None else cache.length
            if past + T > self.config.max_positions:
                raise ValueError(
                    f"sequence of {past + T} positions is longer than the {self.config.max_positions} this model has"
                )
            if attention_mask is None:
                position_ids = torch.arange(past, past + T, device=embeds.device)[None].expand(B, T)
            else:
                position_ids = opt_position_ids(attention_mask, past)  # (B, T)
        x = embeds + self.positions(T, position_ids=position_ids + POSITION_OFFSET)  # (B, T, C)
        mask, is_causal = decoder_mask(attention_mask, T, cache, device=x.device)
        x = self.decoder(x, attn_mask=mask, is_causal=is_causal, cache=cache)
        return self.norm(x)


def _published(hidden: int, layers: int, heads: int) -> OPTConfig:
    """The facebook/opt-* configs: vocabulary 50272, 2048 positions, feed-forward 4x."""
    return OPTConfig(hidden_size=hidden, num_layers=layers, num_heads=heads, intermediate_size=4 * hidden)


@register("opt-125m")
def opt_125m() -> OPTConfig:
    return _published(768, 12, 12)


@register("opt-2.7b")
def opt_2_7b() -> OPTConfig:
    return _published(2560, 32, 32)


@register("opt-6.7b")
def opt_6_7b() -> OPTConfig:
    return _published(4096, 32, 32)


@register("opt-tiny")
def opt_tiny() -> OPTConfig:
    return OPTConfig(
        vocab_size=1000,
        hidden_size=32,
        num_layers=2,
        num_heads=2,
        intermediate_size=128,
        max_positions=128,
        pad_token_id=1,
        bos_token_id=2,
        eos_token_id=2,
    )
