"""Rotary position embedding (RoFormer; Llama's "rotate half" layout).

Channel ``i`` and ``i + hd/2`` of every query and key head form a pair rotated by the angle
``position * theta ** (-2i / hd)``. The angles come from ``position_ids``, so a left-padded row
(positions counted from its first real token) and a KV cache (positions past the cached ones)
rotate exactly as the same tokens alone would. The scores ``q_m . k_n`` then depend on the
positions only through ``m - n``.
"""

from __future__ import annotations

import torch
from torch import nn


class RotaryEmbedding(nn.Module):
    """Positions (B, T) -> (cos, sin), each (B, T, head_dim), in the dtype asked for.

    The angles are computed in float32 (as transformers does, outside autocast)."""

    inv_freq: torch.Tensor  # (hd/2,) the angle per position of each channel pair

    def __init__(self, head_dim: int, *, theta: float = 10000.0) -> None:
        super().__init__()
        if head_dim % 2:
            raise ValueError(f"rotary embedding needs an even head_dim, got {head_dim}")
        self.head_dim, self.theta = head_dim, theta
        inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim)  # (hd/2,)
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def forward(
        self, position_ids: torch.Tensor, dtype: torch.dtype = torch.float32
    ) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.autocast(device_type=position_ids.device.type, enabled=False):
            angles = position_ids.float()[..., None] * self.inv_freq.float()  # (B, T, hd/2)
            angles = torch.cat([angles, angles], dim=-1)  # (B, T, hd)
            return angles.cos().to(dtype), angles.sin().to(dtype)

    def extra_repr(self) -> str:
        return f"head_dim={self.head_dim}, theta={self.theta}"


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """(..., hd) -> (..., hd): [x1, x2] -> [-x2, x1] with x1, x2 the two halves."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate heads x (B, nh, T, hd) by cos, sin (B, T, hd) of their positions."""
    cos, sin = cos[:, None], sin[:, None]  # (B, 1, T, hd)
    return x * cos + rotate_half(x) * sin
