"""BERT: token + segment + position embeddings, a post-norm encoder, pooler, MLM and NSP heads."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from ..layers import LearnedPositionEmbedding, TokenEmbedding, Transformer, build_attention_mask, make_activation
from .base import Model
from .registry import register, register_family


@dataclass(frozen=True)
class BertTextFields:
    """The fields every BERT-style text stack has: BERT itself, ALBEF's text + fusion encoder and
    BLIP's text models (each adds its own layer counts and token ids)."""

    vocab_size: int = 30522
    hidden_size: int = 768
    num_heads: int = 12
    intermediate_size: int = 3072
    max_positions: int = 512
    norm_eps: float = 1e-12
    act: str = "gelu"
    dropout: float = 0.1
    attn_dropout: float = 0.1

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")


@dataclass(frozen=True)
class BertConfig(BertTextFields):
    model_type: ClassVar[str] = "bert"
    num_layers: int = 12
    type_vocab_size: int = 2
    pad_token_id: int = 0
    pooler: bool = True  # tanh(W h_[CLS]) as HF BertModel has it
    mlm_head: bool = False  # masked-LM head, decoder tied to the token embedding
    nsp_head: bool = False  # next-sentence head on the pooled output (needs the pooler)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.nsp_head and not self.pooler:
            raise ValueError("the NSP head reads the pooled output: set pooler=True")


def bert_encoder(
    c: BertTextFields,
    depth: int,
    *,
    cross_attention_layers: bool | Iterable[int] = False,
    context_dim: int | None = None,
) -> Transformer:
    """The post-norm stack of a BERT-style text config, ``depth`` blocks deep: BERT's encoder, BLIP's
    text models and ALBEF's text + fusion encoder (the blocks in ``cross_attention_layers`` also
    attend to a context of width ``context_dim``)."""
    return Transformer(
        c.hidden_size,
        depth,
        c.num_heads,
        c.intermediate_size,
        cross_attention_layers=cross_attention_layers,
        context_dim=context_dim,
        norm_first=False,
        act=c.act,
        norm_eps=c.norm_eps,
        drop=c.dropout,
        attn_drop=c.attn_dropout,
    )


class BertEmbeddings(nn.Module):
    """Sum of token, segment and learned position embeddings, then LayerNorm and dropout."""

    def __init__(
        self, vocab_size: int, type_vocab_size: int, max_positions: int, dim: int, *, norm_eps: float, dropout: float
    ):
        super().__init__()
        self.tokens = TokenEmbedding(vocab_size, dim)
        self.segments = TokenEmbedding(type_vocab_size, dim) if type_vocab_size else None
        self.positions = LearnedPositionEmbedding(max_positions, dim)
        self.norm = nn.LayerNorm(dim, eps=norm_eps)
        self.drop = nn.Dropout(dropout)

    def forward(
        self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None, offset: int = 0
    ) -> torch.Tensor:
        B, T = input_ids.shape
        x = self.tokens(input_ids) + self.positions(T, offset)  # (B, T, C)
        if self.segments is not None:
            x = x + (self.segments.weight[0] if token_type_ids is None else self.segments(token_type_ids))
        return self.drop(self.norm(x))


class MLMHead(nn.Module):
    """dense -> activation -> LayerNorm -> logits over the vocabulary (decoder tied to embeddings)."""

    def __init__(self, dim: int, vocab_size: int, *, act: str, norm_eps: float):
        super().__init__()
        self.dense = nn.Linear(dim, dim)
        self.act = make_activation(act)
        self.norm = nn.LayerNorm(dim, eps=norm_eps)
        self.bias = nn.Parameter(torch.zeros(vocab_size))

    def forward(self, hidden: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        h = self.norm(self.act(self.dense(hidden)))
        return h @ embedding.t() + self.bias  # (B, T, V)


@register_family
class BertModel(Model[BertConfig]):
    config_class = BertConfig

    def __init__(self, config: BertConfig):
        super().__init__(config)
        c = config
        self.embeddings = BertEmbeddings(
            c.vocab_size, c.type_vocab_size, c.max_positions, c.hidden_size, norm_eps=c.norm_eps, dropout=c.dropout
        )
        self.encoder = bert_encoder(c, c.num_layers)
        self.pooler = nn.Linear(c.hidden_size, c.hidden_size) if c.pooler else None
        self.mlm_head = MLMHead(c.hidden_size, c.vocab_size, act=c.act, norm_eps=c.norm_eps) if c.mlm_head else None
        self.nsp_head = nn.Linear(c.hidden_size, 2) if c.nsp_head else None
        self.apply(init_weights)

    def encode(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """input_ids (B, T) -> last hidden states (B, T, H). ``attention_mask``: 1 for real tokens."""
        x = self.embeddings(input_ids, token_type_ids)
        mask = build_attention_mask(attention_mask, x.shape[1], x.shape[1]) if attention_mask is not None else None
        return self.encoder(x, attn_mask=mask)

    forward = encode

    def pool(self, hidden: torch.Tensor) -> torch.Tensor:
        """tanh(W h_[CLS]): (B, T, H) -> (B, H)."""
        if self.pooler is None:
            raise ValueError("this BERT has no pooler (config.pooler=False)")
        return torch.tanh(self.pooler(hidden[:, 0]))

    def mlm_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """(B, T, H) -> (B, T, V)."""
        if self.mlm_head is None:
            raise ValueError("this BERT has no MLM head (config.mlm_head=False)")
        return self.mlm_head(hidden, self.embeddings.tokens.weight)

    def nsp_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """(B, T, H) -> (B, 2): index 0 = "B follows A", as in the original BERT."""
        if self.nsp_head is None:
            raise ValueError("this BERT has no NSP head (config.nsp_head=False)")
        return self.nsp_head(self.pool(hidden))


def init_weights(module: nn.Module, std: float = 0.02) -> None:
    """BERT/GPT-2 initialisation: normal(0, 0.02) weights, zero biases, unit LayerNorm."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, std=std)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


@register("bert-base")
def bert_base() -> BertConfig:
    return BertConfig()


@register("bert-base-pretraining")
def bert_base_pretraining() -> BertConfig:
    return BertConfig(mlm_head=True, nsp_head=True)


@register("bert-large")
def bert_large() -> BertConfig:
    return BertConfig(hidden_size=1024, num_layers=24, num_heads=16, intermediate_size=4096)


@register("bert-tiny")
def bert_tiny() -> BertConfig:
    return BertConfig(
        vocab_size=1000,
        hidden_size=32,
        num_layers=2,
        num_heads=2,
        intermediate_size=64,
        max_positions=128,
        mlm_head=True,
        nsp_head=True,
    )
