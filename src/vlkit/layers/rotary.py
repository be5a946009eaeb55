"""Rotary position embedding (RoFormer; Llama's "rotate half" layout).

Channel ``i`` and ``i + hd/2`` of every query and key head form a pair rotated by the angle
``position * theta ** (-2i / hd)``. The angles come from ``position_ids``, so a left-padded row
(positions counted from its first real token) and a KV cache (positions past the cached ones)
rotate exactly as the same tokens alone would. The scores ``q_m . k_n`` then depend on the
positions only through ``m - n``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

ROPE_SCALINGS = ("default", "linear", "llama3")


def rope_inv_freq(
    head_dim: int,
    *,
    theta: float,
    scaling: str = "default",
    factor: float = 1.0,
    low_freq_factor: float = 1.0,
    high_freq_factor: float = 4.0,
    original_max_positions: int = 8192,
) -> torch.Tensor:
    """The angle per position of each channel pair, (hd/2,) float32: ``theta ** (-2i / hd)``.

    ``scaling="linear"`` divides every frequency by ``factor`` (positions interpolated);
    ``"llama3"`` (Llama 3.1/3.2) divides the low frequencies (wavelength above
    ``original_max_positions / low_freq_factor``) by ``factor``, keeps the high ones (wavelength
    below ``original_max_positions / high_freq_factor``) and blends linearly in between, as
    transformers' ``_compute_llama3_parameters``."""
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim)  # (hd/2,)
    if scaling == "default":
        return inv_freq
    if scaling == "linear":
        return inv_freq / factor
    if scaling != "llama3":
        raise ValueError(f"{scaling} rope scaling is not supported; expected one of {ROPE_SCALINGS}")
    wavelen = 2 * math.pi / inv_freq
    low_wavelen, high_wavelen = original_max_positions / low_freq_factor, original_max_positions / high_freq_factor
    scaled = torch.where(wavelen > low_wavelen, inv_freq / factor, inv_freq)
    smooth = (original_max_positions / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
    blended = (1 - smooth) * scaled / factor + smooth * scaled
    medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
    return torch.where(medium, blended, scaled)


class RotaryEmbedding(nn.Module):
    """Positions (B, T) -> (cos, sin), each (B, T, head_dim), in the dtype asked for.

    The angles are computed in float32 (as transformers does, outside autocast)."""

    inv_freq: torch.Tensor  # (hd/2,) the angle per position of each channel pair

    def __init__(self, head_dim: int, *, theta: float = 10000.0, scaling: str = "default", **scaling_args) -> None:
        """``scaling`` and its ``scaling_args`` (factor, low/high_freq_factor, original_max_positions):
        see :func:`rope_inv_freq`."""
        super().__init__()
        if head_dim % 2:
            raise ValueError(f"rotary embedding needs an even head_dim, got {head_dim}")
        self.head_dim, self.theta, self.scaling = head_dim, theta, scaling
        inv_freq = rope_inv_freq(head_dim, theta=theta, scaling=scaling, **scaling_args)  # (hd/2,)
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def forward(
        self, position_ids: torch.Tensor, dtype: torch.dtype = torch.float32
    ) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.autocast(device_type=position_ids.device.type, enabled=False):
            angles = position_ids.float()[..., None] * self.inv_freq.float()  # (B, T, hd/2)
            angles = torch.cat([angles, angles], dim=-1)  # (B, T, hd)
            return angles.cos().to(dtype), angles.sin().to(dtype)

    def extra_repr(self) -> str:
        return f"head_dim={self.head_dim}, theta={self.theta}, scaling={self.scaling}"


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """(..., hd) -> (..., hd): [x1, x2] -> [-x2, x1] with x1, x2 the two halves."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate heads x (B, nh, T, hd) by cos, sin (B, T, hd) of their positions."""
    cos, sin = cos[:, None], sin[:, None]  # (B, 1, T, hd)
    return x * cos + rotate_half(x) * sin
