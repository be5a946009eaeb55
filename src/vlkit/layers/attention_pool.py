"""Multihead attention pooling (MAP): a learned probe attends over a sequence of tokens.

SigLIP's image tower pools its patch tokens this way instead of reading a [CLS] token. The
attention's weights are laid out as ``torch.nn.MultiheadAttention``'s (``in_proj_weight`` holds
the query, key and value projections stacked, ``out_proj`` the output projection), which is how
the checkpoints store them; the attention itself runs through ``scaled_dot_product_attention``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .mlp import Mlp


class ProbeAttention(nn.Module):
    """Attention of queries (B, Q, C) over tokens (B, N, C), in ``nn.MultiheadAttention``'s layout."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * dim))
        self.out_proj = nn.Linear(dim, dim)
        nn.init.xavier_uniform_(self.in_proj_weight)

    def forward(self, query: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        B, Q, C = query.shape
        nh, hd = self.num_heads, C // self.num_heads
        w_q, w_kv = self.in_proj_weight.split([C, 2 * C])
        b_q, b_kv = self.in_proj_bias.split([C, 2 * C])
        q = F.linear(query, w_q, b_q).view(B, Q, nh, hd).transpose(1, 2)  # (B, nh, Q, hd)
        k, v = F.linear(x, w_kv, b_kv).view(B, -1, 2, nh, hd).permute(2, 0, 3, 1, 4)  # (B, nh, N, hd) each
        out = F.scaled_dot_product_attention(q, k, v)  # (B, nh, Q, hd)
        return self.out_proj(out.transpose(1, 2).reshape(B, Q, C))


class AttentionPool(nn.Module):
    """probe -> attention over the tokens -> + MLP(LayerNorm(.)) -> (B, C): SigLIP's MAP head."""

    def __init__(self, dim: int, num_heads: int, mlp_dim: int, *, act: str = "gelu_tanh", norm_eps: float = 1e-6):
        super().__init__()
        self.probe = nn.Parameter(torch.empty(1, 1, dim))
        self.attention = ProbeAttention(dim, num_heads)
        self.norm = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, mlp_dim, act=act)
        nn.init.xavier_uniform_(self.probe.view(1, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, N, C) tokens -> (B, C)."""
        h = self.attention(self.probe.expand(x.shape[0], -1, -1), x)  # (B, 1, C)
        h = h + self.mlp(self.norm(h))
        return h[:, 0]
