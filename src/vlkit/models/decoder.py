"""What every decoder-only language model shares (GPT-2, OPT, Llama): the LM head, the decoding
step on a KV cache, and ``generate``.

A family subclasses :class:`DecoderLM` and supplies ``tokens`` (its token embedding),
``lm_head`` (an ``nn.Linear``, or None when the head is tied to ``tokens``) and
``hidden_states(input_ids=None, attention_mask=None, cache=None, position_ids=None, *,
inputs_embeds=None)``; its config has ``num_layers``, ``max_positions``, ``eos_token_id`` and, where
the family has one, ``pad_token_id``. This is the decoder protocol through which BLIP-2 and the
LLaVA-style VLM drive any of them: ``embed_tokens`` gives the embeddings a soft prompt is
concatenated with, and ``hidden_states(inputs_embeds=...)`` runs them.
"""

from __future__ import annotations

from typing import Protocol, TypeVar

import torch
from torch import nn

from ..layers import KVCache
from ..runtime import eval_mode
from .base import Model
from .generation import decoding_step, generate_tokens
from .generation_config import GenerationConfig, resolve_generation_config


class DecoderConfig(Protocol):
    """The config fields decoding reads (``pad_token_id`` where the family has one)."""

    @property
    def num_layers(self) -> int: ...
    @property
    def max_positions(self) -> int: ...
    @property
    def eos_token_id(self) -> int | None: ...


DecoderConfigT = TypeVar("DecoderConfigT", bound=DecoderConfig)


class DecoderLM(Model[DecoderConfigT]):
    """A causal language model: ``model(input_ids) -> logits`` and ``generate``."""

    tokens: nn.Embedding
    lm_head: nn.Linear | None

    def embed_tokens(self, input_ids: torch.Tensor) -> torch.Tensor:
        """input_ids (B, T) -> token embeddings (B, T, H), positions not added: what a soft prompt
        (BLIP-2's queries, a VLM's image features) is concatenated with."""
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
        raise NotImplementedError

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """(..., H) -> (..., V): the LM head, or the token embedding when tied."""
        if self.lm_head is None:
            return hidden @ self.tokens.weight.t()
        return self.lm_head(hidden)

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
        ``eos_token_id`` (and ``pad_token_id``) default to the config's; pass None to never stop early,
        or a list of ids to stop at any. ``static_cache=True`` / ``compile=True``: a preallocated
        cache / a compiled decoding step (same tokens; see docs/generation.md).
        """
        if max_new_tokens is not None:
            overrides["max_new_tokens"] = max_new_tokens
        c = self.config
        config = resolve_generation_config(
            generation_config,
            overrides,
            default=GenerationConfig(),
            eos_token_id=c.eos_token_id,
            pad_token_id=getattr(c, "pad_token_id", None),
        )
        with eval_mode(self):
            step = decoding_step(self._next_logits, c.num_layers, config, attention_mask=attention_mask)
            return generate_tokens(step, input_ids, config, generator=generator, max_positions=c.max_positions)
