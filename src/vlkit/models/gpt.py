"""GPT: token + learned position embeddings, a pre-norm causal decoder, LM head tied to the
token embedding; generation on a KV cache."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from ..layers import KVCache, LearnedPositionEmbedding, TokenEmbedding, Transformer, build_attention_mask
from .base import Model
from .bert import init_weights
from .generation import beam_search, decode
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


class _GPTStep:
    """Feeds new tokens through the model's cache; keeps the padding mask and positions."""

    def __init__(self, model: "GPT", attention_mask: torch.Tensor | None):
        self.model = model
        self.cache = KVCache(model.config.num_layers)
        self.attention_mask = attention_mask  # (N, T_total so far) or None

    def __call__(self, new_ids: torch.Tensor) -> torch.Tensor:
        past = self.cache.length
        position_ids = None
        if self.attention_mask is not None:
            if past:  # the new tokens are real
                ones = self.attention_mask.new_ones(new_ids.shape[0], new_ids.shape[1])
                self.attention_mask = torch.cat([self.attention_mask, ones], dim=1)
            position_ids = (self.attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, past:]
        hidden = self.model.hidden_states(new_ids, attention_mask=self.attention_mask, cache=self.cache,
                                          position_ids=position_ids)
        return self.model.logits(hidden[:, -1])

    def reorder(self, index: torch.Tensor) -> None:
        self.cache.reorder(index)
        if self.attention_mask is not None:
            self.attention_mask = self.attention_mask.index_select(0, index)


@register_family
class GPT(Model):
    config_class = GPTConfig

    def __init__(self, config: GPTConfig):
        super().__init__(config)
        c = config
        self.tokens = TokenEmbedding(c.vocab_size, c.hidden_size)
        self.positions = LearnedPositionEmbedding(c.max_positions, c.hidden_size)
        self.drop = nn.Dropout(c.dropout)
        self.decoder = Transformer(
            c.hidden_size, c.num_layers, c.num_heads, c.intermediate_size,
            norm_first=True, act=c.act, norm_eps=c.norm_eps, drop=c.dropout, attn_drop=c.dropout,
        )
        self.norm = nn.LayerNorm(c.hidden_size, eps=c.norm_eps)
        self.apply(init_weights)
        # GPT-2 scales the residual output projections by 1/sqrt(2 * layers) at init
        for name, p in self.named_parameters():
            if name.endswith(("attn.proj.weight", "mlp.fc2.weight")):
                nn.init.normal_(p, std=0.02 / (2 * c.num_layers) ** 0.5)

    def hidden_states(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        cache: KVCache | None = None,
        position_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """input_ids (B, T) -> final-norm hidden states (B, T, H). ``attention_mask`` (B, past + T)."""
        B, T = input_ids.shape
        past = 0 if cache is None else cache.length
        x = self.drop(self.tokens(input_ids) + self.positions(T, past, position_ids))  # (B, T, C)
        if attention_mask is None and past == 0:
            x = self.decoder(x, is_causal=True, cache=cache)
        else:
            mask = build_attention_mask(attention_mask, T, past + T, causal=True, past=past, device=x.device)
            x = self.decoder(x, attn_mask=mask, cache=cache)
        return self.norm(x)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """(..., H) -> (..., V) with the tied token embedding."""
        return hidden @ self.tokens.weight.t()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """input_ids (B, T) -> next-token logits (B, T, V)."""
        return self.logits(self.hidden_states(input_ids, attention_mask))

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor,
        max_new_tokens: int = 20,
        *,
        attention_mask: torch.Tensor | None = None,
        num_beams: int = 1,
        do_sample: bool = False,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        repetition_penalty: float = 1.0,
        length_penalty: float = 1.0,
        eos_token_id: int | None = -1,
        pad_token_id: int | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Continue prompts (B, T) -> (B, T + new): greedy unless ``do_sample`` or ``num_beams > 1``.

        Left-padded batches pass ``attention_mask``. ``eos_token_id`` defaults to the config's;
        pass None to never stop early.
        """
        if input_ids.dim() != 2 or input_ids.shape[1] == 0:
            raise ValueError(f"input_ids must be a non-empty (B, T) tensor, got shape {tuple(input_ids.shape)}")
        if input_ids.shape[1] + max_new_tokens > self.config.max_positions:
            raise ValueError(
                f"{input_ids.shape[1]} prompt + {max_new_tokens} new tokens exceed the {self.config.max_positions} positions"
            )
        eos = self.config.eos_token_id if eos_token_id == -1 else eos_token_id
        was_training = self.training
        self.eval()
        try:
            if num_beams > 1:
                if do_sample:
                    raise ValueError("beam search with sampling is not supported; use num_beams=1 to sample")
                ids = input_ids.repeat_interleave(num_beams, dim=0)
                mask = None if attention_mask is None else attention_mask.repeat_interleave(num_beams, dim=0)
                return beam_search(_GPTStep(self, mask), ids, max_new_tokens, num_beams, eos_token_id=eos,
                                   pad_token_id=pad_token_id, length_penalty=length_penalty,
                                   repetition_penalty=repetition_penalty)
            return decode(_GPTStep(self, attention_mask), input_ids, max_new_tokens, eos_token_id=eos,
                          pad_token_id=pad_token_id, do_sample=do_sample, temperature=temperature, top_k=top_k,
                          top_p=top_p, repetition_penalty=repetition_penalty, generator=generator)
        finally:
            self.train(was_training)


@register("gpt2")
def gpt2() -> GPTConfig:
    return GPTConfig()


@register("gpt2-medium")
def gpt2_medium() -> GPTConfig:
    return GPTConfig(hidden_size=1024, num_layers=24, num_heads=16, intermediate_size=4096)


@register("gpt-tiny")
def gpt_tiny() -> GPTConfig:
    return GPTConfig(vocab_size=1000, hidden_size=32, num_layers=2, num_heads=2, intermediate_size=128,
                     max_positions=128, bos_token_id=0, eos_token_id=0)
