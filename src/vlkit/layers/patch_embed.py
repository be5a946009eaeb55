"""Image to patch tokens, and resizing of learned patch position embeddings."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class PatchEmbed(nn.Module):
    """Cut an image into non-overlapping patches and project each: (B, 3, H, W) -> (B, N, C).

    A 224x224x3 image with 16x16 patches gives N = 14 * 14 = 196 tokens.

    The weights are a ``Conv2d``'s (``proj.weight`` (C, 3, p, p), the checkpoints' layout), but
    since the patches do not overlap the projection is computed as one matrix product of the
    flattened patches (B, N, 3*p*p) with the flattened kernel: the same result (up to float
    rounding), and on the CPU 2x faster in float32 and 30x faster backward under bf16 autocast,
    where oneDNN's strided convolution is slow (docs/precision.md).
    """

    def __init__(self, patch_size: int, in_channels: int, dim: int, bias: bool = True) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_channels, dim, kernel_size=patch_size, stride=patch_size, bias=bias)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        if pixel_values.dim() != 4:
            raise ValueError(f"expected pixel_values of shape (B, C, H, W), got {tuple(pixel_values.shape)}")
        _, _, H, W = pixel_values.shape
        if H % self.patch_size or W % self.patch_size:
            raise ValueError(f"image size {H}x{W} is not a multiple of the patch size {self.patch_size}")
        B, c, p = pixel_values.shape[0], pixel_values.shape[1], self.patch_size
        patches = pixel_values.reshape(B, c, H // p, p, W // p, p).permute(0, 2, 4, 1, 3, 5)  # (B, H/p, W/p, 3, p, p)
        patches = patches.reshape(B, (H // p) * (W // p), c * p * p)  # (B, N, 3*p*p), the kernel's order
        return F.linear(patches, self.proj.weight.flatten(1), self.proj.bias)  # (B, N, C)


def resize_position_embedding(
    pos: torch.Tensor,
    new_grid: tuple[int, int],
    num_prefix: int = 1,
    *,
    mode: str = "bicubic",
    align_corners: bool = False,
) -> torch.Tensor:
    """Resample the grid part of learned position embeddings (1, P + N, C) to a new patch grid
    (bicubically by default, as ViT and CLIP; ViLT: ``mode="bilinear", align_corners=True``),
    keeping the ``num_prefix`` leading ([CLS]) vectors. Used when an image size differs from the
    one the model was trained on."""
    prefix, grid = pos[:, :num_prefix], pos[:, num_prefix:]
    n = grid.shape[1]
    side = int(math.sqrt(n))
    if side * side != n:
        raise ValueError(f"{n} position embeddings do not form a square grid")
    if (side, side) == tuple(new_grid):
        return pos
    C = grid.shape[-1]
    grid = grid.reshape(1, side, side, C).permute(0, 3, 1, 2)  # (1, C, s, s)
    grid = F.interpolate(grid.float(), size=new_grid, mode=mode, align_corners=align_corners).to(pos.dtype)
    grid = grid.permute(0, 2, 3, 1).reshape(1, new_grid[0] * new_grid[1], C)
    return torch.cat([prefix, grid], dim=1)
