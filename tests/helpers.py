"""Builders of tiny random reference models (HF transformers) saved to folders, for parity tests."""

from __future__ import annotations

import torch


def save_hf(model, folder) -> str:
    model.save_pretrained(str(folder))
    return str(folder)


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.float() - b.float()).abs().max().item()
