"""Normalisation layers: LayerNorm (BERT, GPT-2, ViT, CLIP) and RMSNorm (Llama, Mistral, Qwen2)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class RMSNorm(nn.Module):
    """Root-mean-square norm: ``weight * x / sqrt(mean(x^2) + eps)``, no centring and no bias.

    Computed in float32 and cast back before the weight is applied, as HF's ``LlamaRMSNorm`` does,
    so that bf16 models match the reference. A float32 input takes torch's fused ``F.rms_norm``
    (one kernel instead of five, the same arithmetic: a decoding step runs two per block)."""

    def __init__(self, dim: int, *, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        if dtype == torch.float32 and self.weight.dtype == torch.float32:
            return F.rms_norm(x, self.weight.shape, self.weight, self.eps)  # (..., C)
        h = x.float()  # (..., C)
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(dtype)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"


NORMS = ("layernorm", "rmsnorm")


def make_norm(kind: str, dim: int, *, eps: float) -> nn.Module:
    """``"layernorm"`` (with bias) or ``"rmsnorm"`` over the last dimension ``dim``."""
    if kind == "layernorm":
        return nn.LayerNorm(dim, eps=eps)
    if kind == "rmsnorm":
        return RMSNorm(dim, eps=eps)
    raise ValueError(f"unknown norm {kind!r}; expected one of {NORMS}")
