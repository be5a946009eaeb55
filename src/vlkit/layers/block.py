"""The one transformer ``Block`` every family is built from, and the ``Transformer`` stack."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from .attention import Attention, KVCache
from .mlp import Mlp, SwiGLU, make_mlp
from .norms import make_norm


class Block(nn.Module):
    """Self-attention, optional cross-attention, feed-forward; each sub-layer residual.

    ``norm_first=True``: pre-norm (GPT-2, ViT, CLIP): ``x = x + f(norm(x))``.
    ``norm_first=False``: post-norm "Add & Norm" (BERT, the original Transformer):
    ``x = norm(x + f(x))``.
    ``cross_attention=True`` inserts attention to a ``context`` (image tokens, Q-Former input)
    between self-attention and feed-forward, as BLIP's MED and ALBEF's fusion layers do.
    ``query_mlp=True`` (BLIP-2's Q-Former) gives the first ``num_queries`` positions (the learned
    queries) a feed-forward of their own (``mlp_query``, ``norm2_query``); with ``num_queries`` set,
    only those positions cross-attend to the context, while self-attention spans all positions.

    The Llama family (Llama, Mistral, Qwen2, SmolLM) sets ``norm="rmsnorm"``, ``act="swiglu"`` (the
    gated feed-forward), ``rotary=True`` (``forward`` then needs ``rope``, the cos/sin of the
    positions from :class:`~vlkit.layers.RotaryEmbedding`), ``num_kv_heads`` for grouped-query
    attention and no biases (``qkv_bias=proj_bias=mlp_bias=False``; Qwen2 keeps ``qkv_bias``).
    The defaults are the LayerNorm/GELU/bias blocks of BERT, GPT-2, ViT and CLIP.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_dim: int | None = None,
        *,
        norm_first: bool = True,
        cross_attention: bool = False,
        context_dim: int | None = None,
        act: str = "gelu",
        norm_eps: float = 1e-5,
        qkv_bias: bool = True,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        query_mlp: bool = False,
        norm: str = "layernorm",
        num_kv_heads: int | None = None,
        rotary: bool = False,
        proj_bias: bool = True,
        mlp_bias: bool = True,
    ) -> None:
        super().__init__()
        self.norm_first = norm_first
        self.rotary = rotary
        self.attn = Attention(
            dim,
            num_heads,
            num_kv_heads=num_kv_heads,
            qkv_bias=qkv_bias,
            proj_bias=proj_bias,
            attn_drop=attn_drop,
            proj_drop=drop,
        )
        self.norm1 = make_norm(norm, dim, eps=norm_eps)
        self.cross_attn: Attention | None = None
        self.norm_cross: nn.Module | None = None
        if cross_attention:
            self.cross_attn = Attention(
                dim,
                num_heads,
                context_dim=context_dim or dim,
                qkv_bias=qkv_bias,
                proj_bias=proj_bias,
                attn_drop=attn_drop,
                proj_drop=drop,
            )
            self.norm_cross = make_norm(norm, dim, eps=norm_eps)
        self.mlp = make_mlp(dim, mlp_dim or 4 * dim, act=act, drop=drop, bias=mlp_bias)
        self.norm2 = make_norm(norm, dim, eps=norm_eps)
        self.mlp_query: Mlp | SwiGLU | None = None
        self.norm2_query: nn.Module | None = None
        if query_mlp:
            self.mlp_query = make_mlp(dim, mlp_dim or 4 * dim, act=act, drop=drop, bias=mlp_bias)
            self.norm2_query = make_norm(norm, dim, eps=norm_eps)

    def _residual(self, x: torch.Tensor, norm: nn.Module, f) -> torch.Tensor:
        return x + f(norm(x)) if self.norm_first else norm(x + f(x))

    def forward(
        self,
        x: torch.Tensor,
        *,
        attn_mask: torch.Tensor | None = None,
        is_causal: bool = False,
        context: torch.Tensor | None = None,
        context_mask: torch.Tensor | None = None,
        cache=None,
        num_queries: int = 0,
        rope: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """x: (B, T, C); context: (B, S, Cc); masks are boolean, True = attend. ``num_queries``:
        how many leading positions are Q-Former queries (0: none; see ``query_mlp``). ``rope``:
        (cos, sin), each (B, T, head_dim), of the positions of x; needed exactly when ``rotary``."""
        if (rope is not None) != self.rotary:
            raise ValueError(f"this block has rotary={self.rotary}; rope must be given exactly when it is True")
        x = self._residual(
            x, self.norm1, lambda h: self.attn(h, attn_mask=attn_mask, is_causal=is_causal, cache=cache, rope=rope)
        )
        if num_queries and self.mlp_query is not None:
            queries, text = x[:, :num_queries], x[:, num_queries:]  # (B, Q, C), (B, T - Q, C)
            queries = self._feed_forward(
                self._cross(queries, context, context_mask, cache), self.norm2_query, self.mlp_query
            )
            return torch.cat([queries, self._feed_forward(text, self.norm2, self.mlp)], dim=1)
        return self._feed_forward(self._cross(x, context, context_mask, cache), self.norm2, self.mlp)

    def _cross(self, x: torch.Tensor, context, context_mask, cache) -> torch.Tensor:
        cross_attn, norm_cross = self.cross_attn, self.norm_cross
        if cross_attn is None or norm_cross is None or context is None:
            return x
        return self._residual(
            x, norm_cross, lambda h: cross_attn(h, context=context, attn_mask=context_mask, cache=cache)
        )

    def _feed_forward(self, x: torch.Tensor, norm, mlp) -> torch.Tensor:
        return x if x.shape[1] == 0 else self._residual(x, norm, mlp)


class Transformer(nn.Module):
    """A stack of :class:`Block`. ``cross_attention_layers`` picks which blocks attend to the
    context (all when True, none when False, or a set of indices)."""

    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads: int,
        mlp_dim: int | None = None,
        *,
        cross_attention_layers: bool | Iterable[int] = False,
        **block_kwargs,
    ) -> None:
        super().__init__()
        if cross_attention_layers is True:
            cross = set(range(depth))
        elif cross_attention_layers is False:
            cross = set()
        else:
            cross = set(cross_attention_layers)
        self.blocks = nn.ModuleList(
            Block(dim, num_heads, mlp_dim, cross_attention=i in cross, **block_kwargs) for i in range(depth)
        )

    def __len__(self) -> int:
        return len(self.blocks)

    def forward(
        self,
        x: torch.Tensor,
        *,
        attn_mask: torch.Tensor | None = None,
        is_causal: bool = False,
        context: torch.Tensor | None = None,
        context_mask: torch.Tensor | None = None,
        cache: KVCache | None = None,
        num_queries: int = 0,
        rope: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        for i, block in enumerate(self.blocks):
            x = block(
                x,
                attn_mask=attn_mask,
                is_causal=is_causal,
                context=context,
                context_mask=context_mask,
                cache=None if cache is None else cache[i],
                num_queries=num_queries,
                rope=rope,
            )
        return x
