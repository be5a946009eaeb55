"""BLIP-2's Q-Former (Li et al. 2023): a BERT-style post-norm stack of :class:`~vlkit.layers.Block`
whose ``num_query_tokens`` learned queries cross-attend to frozen image features every
``cross_attention_frequency`` layers and share self-attention with the text.

The sequence is ``[queries ; text]``: the queries alone cross-attend to the image and have a
feed-forward of their own (``Block(query_mlp=True)``, HF's ``intermediate_query``/``output_query``);
the text has BERT's feed-forward and BERT's word + position embeddings (positions count from 0 at
the first text token; the queries have none). One LayerNorm (HF's ``qformer.layernorm``) normalises
the embedded sequence, queries and text alike.

What the queries and the text may see of each other is the stage-1 objective's mask
(:func:`qformer_mask`): ITC is unimodal, ITM bidirectional, ITG causal for the text.

A Q-Former built with ``text_input=False`` (HF's ``use_qformer_text_input=False``, the published
captioning checkpoints) has queries only: no text embeddings and no text feed-forward; its
blocks keep the queries' feed-forward as their only one (``mlp``/``norm2``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..layers import LearnedPositionEmbedding, TokenEmbedding, Transformer
from .bert import BertTextFields, init_weights

QFORMER_MODES = ("itc", "itm", "itg")


@dataclass(frozen=True)
class QFormerConfig(BertTextFields):
    """BERT-base sizes, 32 queries cross-attending every second layer, as in the paper."""

    num_layers: int = 12
    num_query_tokens: int = 32
    cross_attention_frequency: int = 2  # layers 0, f, 2f, ... cross-attend to the image
    text_input: bool = True  # text embeddings and the text feed-forward (stage 1, retrieval)
    pad_token_id: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.num_query_tokens < 1:
            raise ValueError(f"num_query_tokens must be >= 1, got {self.num_query_tokens}")
        if self.cross_attention_frequency < 1:
            raise ValueError(f"cross_attention_frequency must be >= 1, got {self.cross_attention_frequency}")

    @property
    def cross_attention_layers(self) -> list[int]:
        return list(range(0, self.num_layers, self.cross_attention_frequency))


# --- the three stage-1 masks: (Q + T, Q + T) boolean, True = row may attend to column ----------
def itc_mask(num_queries: int, num_text: int, device: torch.device | None = None) -> torch.Tensor:
    """ITC (unimodal): queries see the queries, text sees the text, never each other."""
    is_query = torch.arange(num_queries + num_text, device=device) < num_queries  # (L,)
    return is_query[:, None] == is_query[None, :]  # (L, L)


def itm_mask(num_queries: int, num_text: int, device: torch.device | None = None) -> torch.Tensor:
    """ITM (bidirectional): every position sees every position."""
    L = num_queries + num_text
    return torch.ones(L, L, dtype=torch.bool, device=device)


def itg_mask(num_queries: int, num_text: int, device: torch.device | None = None) -> torch.Tensor:
    """ITG (multimodal causal): queries see the queries only; text token i sees every query and
    the text tokens 0..i."""
    pos = torch.arange(num_queries + num_text, device=device)
    is_query = pos < num_queries
    causal = pos[None, :] <= pos[:, None]  # (L, L)
    return torch.where(is_query[:, None], is_query[None, :], causal)


_MASKS = {"itc": itc_mask, "itm": itm_mask, "itg": itg_mask}


def qformer_mask(
    mode: str, num_queries: int, text_mask: torch.Tensor | None, num_text: int, device: torch.device | None = None
) -> torch.Tensor:
    """The stage-1 ``mode`` mask ("itc", "itm" or "itg") with the text's padding: (B or 1, 1, L, L),
    L = num_queries + num_text. ``text_mask`` (B, T): 1 for real text tokens. A row that would see
    nothing (a padding row) sees everything instead; its output is never read."""
    if mode not in _MASKS:
        raise ValueError(f"Q-Former mask mode must be one of {QFORMER_MODES}, got {mode!r}")
    mask = _MASKS[mode](num_queries, num_text, device)[None, None]  # (1, 1, L, L)
    if text_mask is None:
        return mask
    queries = text_mask.new_ones(text_mask.shape[0], num_queries)
    keys = torch.cat([queries, text_mask], dim=1).bool()[:, None, None, :]  # (B, 1, 1, L)
    mask = mask & keys
    return mask | ~mask.any(dim=-1, keepdim=True)


class QFormer(nn.Module):
    """Queries (``query_tokens``), text embeddings (``tokens``, ``positions``; with ``text_input``),
    the embedding LayerNorm ``norm`` and the post-norm ``transformer``. ``context_dim``: the image
    features' width."""

    tokens: TokenEmbedding | None
    positions: LearnedPositionEmbedding | None

    def __init__(self, config: QFormerConfig, context_dim: int) -> None:
        super().__init__()
        c = config
        self.config = c
        self.query_tokens = nn.Parameter(torch.zeros(1, c.num_query_tokens, c.hidden_size))
        if c.text_input:
            self.tokens = TokenEmbedding(c.vocab_size, c.hidden_size)
            self.positions = LearnedPositionEmbedding(c.max_positions, c.hidden_size)
        else:
            self.tokens = self.positions = None
        self.norm = nn.LayerNorm(c.hidden_size, eps=c.norm_eps)
        self.drop = nn.Dropout(c.dropout)
        self.transformer = Transformer(
            c.hidden_size,
            c.num_layers,
            c.num_heads,
            c.intermediate_size,
            cross_attention_layers=c.cross_attention_layers,
            context_dim=context_dim,
            norm_first=False,
            act=c.act,
            norm_eps=c.norm_eps,
            drop=c.dropout,
            attn_drop=c.attn_dropout,
            query_mlp=c.text_input,  # the queries' own feed-forward beside the text's
        )
        self.apply(init_weights)
        nn.init.normal_(self.query_tokens, std=0.02)

    def embed_text(self, input_ids: torch.Tensor) -> torch.Tensor:
        """(B, T) ids -> word + position embeddings (B, T, H), not normalised."""
        if self.tokens is None or self.positions is None:
            raise ValueError("this Q-Former has no text input (config.text_input=False): it runs queries only")
        return self.tokens(input_ids) + self.positions(input_ids.shape[1])

    def forward(
        self,
        image_embeds: torch.Tensor | None = None,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        *,
        mode: str = "itm",
    ) -> torch.Tensor:
        """Queries attending to ``image_embeds`` (B, S, Cv) and/or text ``input_ids`` (B, T) ->
        hidden states (B, Q + T, H), queries first. With both, ``mode`` picks the stage-1 mask
        (:func:`qformer_mask`); ``attention_mask`` (B, T): 1 for real text tokens."""
        if image_embeds is None and input_ids is None:
            raise ValueError("the Q-Former needs image_embeds (for the queries) or input_ids (text), or both")
        parts, Q = [], 0
        if image_embeds is not None:
            Q = self.query_tokens.shape[1]
            parts.append(self.query_tokens.expand(image_embeds.shape[0], -1, -1))  # (B, Q, H)
        if input_ids is not None:
            if input_ids.dim() != 2:
                raise ValueError(f"expected input_ids of shape (B, T), got {tuple(input_ids.shape)}")
            parts.append(self.embed_text(input_ids))  # (B, T, H)
        x = self.drop(self.norm(torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]))  # (B, L, H)
        T = x.shape[1] - Q
        mask = None
        if Q and T:
            mask = qformer_mask(mode, Q, attention_mask, T, device=x.device)
        elif T and attention_mask is not None:
            mask = qformer_mask("itm", 0, attention_mask, T, device=x.device)
        return self.transformer(x, attn_mask=mask, context=image_embeds, num_queries=Q)
