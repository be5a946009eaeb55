"""Position-wise feed-forward network and the activations the model families use."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn


class QuickGELU(nn.Module):
    """x * sigmoid(1.702 x): the GELU approximation OpenAI's CLIP was trained with."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class GELU(nn.Module):
    def __init__(self, approximate: str = "none") -> None:
        super().__init__()
        self.approximate = approximate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(x, approximate=self.approximate)


ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "gelu": lambda: GELU("none"),  # exact erf GELU (BERT, ViT)
    "gelu_tanh": lambda: GELU("tanh"),  # GPT-2's "gelu_new"
    "quick_gelu": QuickGELU,  # OpenAI CLIP
    "relu": nn.ReLU,
}


def make_activation(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; expected one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


class Mlp(nn.Module):
    """fc1 -> activation -> fc2, with dropout after the second projection."""

    def __init__(self, dim: int, hidden_dim: int, *, act: str = "gelu", drop: float = 0.0, bias: bool = True) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim, bias=bias)
        self.act = make_activation(act)
        self.fc2 = nn.Linear(hidden_dim, dim, bias=bias)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.act(self.fc1(x))))


class SwiGLU(nn.Module):
    """Gated feed-forward of Llama, Mistral and Qwen2: ``down(silu(gate(x)) * up(x))``.

    ``gate`` and ``up`` are one fused projection ``fc1`` (gate rows first, then up: (2 * hidden, dim));
    ``fc2`` is ``down``. The key names match :class:`Mlp`'s, so code that adapts an MLP by name
    (LoRA target modules) sees both alike."""

    def __init__(self, dim: int, hidden_dim: int, *, drop: float = 0.0, bias: bool = False) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, 2 * hidden_dim, bias=bias)
        self.fc2 = nn.Linear(hidden_dim, dim, bias=bias)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.fc1(x).chunk(2, dim=-1)  # (..., hidden) each
        return self.drop(self.fc2(F.silu(gate) * up))


def make_mlp(dim: int, hidden_dim: int, *, act: str, drop: float = 0.0, bias: bool = True) -> Mlp | SwiGLU:
    """``act="swiglu"``: the gated :class:`SwiGLU`; any other activation name: :class:`Mlp`."""
    if act == "swiglu":
        return SwiGLU(dim, hidden_dim, drop=drop, bias=bias)
    return Mlp(dim, hidden_dim, act=act, drop=drop, bias=bias)
