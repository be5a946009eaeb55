"""Token, segment and position embeddings: learned, 1-D sinusoidal and 2-D sin-cos."""

from __future__ import annotations

import math

import torch
from torch import nn


class TokenEmbedding(nn.Embedding):
    """Token ids (B, T) -> vectors (B, T, C). Also used for segment (token type) ids."""


SegmentEmbedding = TokenEmbedding


class LearnedPositionEmbedding(nn.Module):
    """A trained vector per position: (B, T) positions or an offset -> (B or 1, T, C)."""

    def __init__(self, max_positions: int, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(max_positions, dim))
        nn.init.normal_(self.weight, std=0.02)

    @property
    def max_positions(self) -> int:
        return self.weight.shape[0]

    def forward(self, length: int, offset: int = 0, position_ids: torch.Tensor | None = None) -> torch.Tensor:
        if position_ids is None:
            if offset + length > self.max_positions:
                raise ValueError(
                    f"sequence of {offset + length} positions is longer than the {self.max_positions} this model has"
                )
            return self.weight[offset : offset + length].unsqueeze(0)  # (1, T, C)
        return self.weight[position_ids]  # (B, T, C)


def sinusoidal_position_encoding(num_positions: int, dim: int, base: float = 10000.0) -> torch.Tensor:
    """ "Attention Is All You Need": PE[pos, 2i] = sin(pos / base^(2i/d)), PE[pos, 2i+1] = cos(...).

    Returns (num_positions, dim) in float32.
    """
    if dim % 2:
        raise ValueError(f"sinusoidal encoding needs an even dimension, got {dim}")
    pos = torch.arange(num_positions, dtype=torch.float64)[:, None]  # (P, 1)
    inv_freq = torch.exp(-math.log(base) * torch.arange(0, dim, 2, dtype=torch.float64) / dim)  # (d/2,)
    angles = pos * inv_freq  # (P, d/2)
    pe = torch.empty(num_positions, dim, dtype=torch.float64)
    pe[:, 0::2] = torch.sin(angles)
    pe[:, 1::2] = torch.cos(angles)
    return pe.float()


def sincos_2d_position_encoding(grid_h: int, grid_w: int, dim: int, base: float = 10000.0) -> torch.Tensor:
    """2-D sin-cos encoding for a grid of image patches (MAE / ViT-style).

    Half of the channels encode the row, half the column, each with the 1-D sinusoidal scheme
    laid out as [sin | cos]. Returns (grid_h * grid_w, dim), row-major over patches.
    """
    if dim % 4:
        raise ValueError(f"2-D sin-cos encoding needs a dimension divisible by 4, got {dim}")
    quarter = dim // 4
    omega = 1.0 / base ** (torch.arange(quarter, dtype=torch.float64) / quarter)  # (d/4,)
    ys, xs = torch.meshgrid(
        torch.arange(grid_h, dtype=torch.float64), torch.arange(grid_w, dtype=torch.float64), indexing="ij"
    )
    out_y = ys.reshape(-1, 1) * omega  # (N, d/4)
    out_x = xs.reshape(-1, 1) * omega
    pe = torch.cat([out_y.sin(), out_y.cos(), out_x.sin(), out_x.cos()], dim=1)
    return pe.float()  # (N, d)
