"""GPT: token + learned position embeddings, a pre-norm causal decoder, LM head tied to the
token embedding; generation on a KV cache."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from ..layers import KVCache, LearnedPositionEmbedding, TokenEmbedding, Transformer, build_attention_mask
from ..runtime import eval_mode
from .base import Model
from .bert import init_weights
from .generation import CachedStep, generate_tokens
from .generation_config import GenerationConfig, resolve_generation_config
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
class GPT(Model[GPTConfig]):
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
        self.apply(init_weights)
        # GPT-2 scales the residual output projections by 1/sqrt(2 * layers) at init
        for name, p in self.named_parameters():
            if name.endswith(("attn.proj.weight", "mlp.fc2.weight")):
                nn.init.normal_(p, std=0.02 / (2 * c.num_layers) ** 0.5)

    def embed_tokens(self, input_ids: torch.Tensor) -> torch.Tensor:
        """input_ids (B, T) -> token embeddings (B, T, H), positions not added: what a soft
        prompt (BLIP-2's queries, a VLM's image features) is concatenated with."""
        return self.tokens(input_ids)

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
        past = 0 if cache is None else cache.length
        x = self.drop(embeds + self.positions(T, past, position_ids))  # (B, T, C)
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

    def _next_logits(
        self,
        new_ids: torch.Tensor,
        *,
        attention_mask: torch.Tensor | None,
        position_ids: torch.Tensor | None,
        cache: KVCache,
    ) -> torch.Tensor:
        """The decoding step: new ids (N, t) on the cache -> logits of the last position (N, V)."""
        hidden = self.hidden_states(new_ids, attention_mask=attention_mask, cache=cache, position_ids=position_ids)
        return self.logits(hidden[:, -1])

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor,
        max_new_tokens: int | None = None,
        *,
        attention_mask: torch.Tensor | None = None,
        generation_config: GenerationConfig | None = None,
        generator: torch.Generator | None = None,
        **overrides,
    ) -> torch.Tensor:
        """Continue prompts (B, T) -> (B, T + new): greedy unless ``do_sample`` or ``num_beams > 1``.

        Options come from ``generation_config`` (default ``GenerationConfig()``: 20 new tokens,
        greedy) with keyword ``overrides`` on top (``num_beams=4``, ``top_p=0.9``, ...);
        ``max_new_tokens`` may also be given second. Left-padded batches pass ``attention_mask``.
        ``eos_token_id`` defaults to the config's; pass None to never stop early.
        """
        if max_new_tokens is not None:
            overrides["max_new_tokens"] = max_new_tokens
        config = resolve_generation_config(
            generation_config,
            overrides,
            default=GenerationConfig(),
            eos_token_id=self.config.eos_token_id,
            pad_token_id=None,
        )
        with eval_mode(self):
            step = CachedStep(self._next_logits, KVCache(self.config.num_layers), attention_mask=attention_mask)
            return generate_tokens(
                step, input_ids, config, generator=generator, max_positions=self.config.max_positions
            )


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
