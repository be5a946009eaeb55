"""Builders of tiny random reference models (HF transformers) saved to folders, for parity tests."""

from __future__ import annotations

import torch


def save_hf(model, folder) -> str:
    model.save_pretrained(str(folder))
    return str(folder)


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.float() - b.float()).abs().max().item()


# A small WordPiece vocabulary that covers the built-in shapes' captions (the ALBEF and BLIP task tests).
SHAPES_WORDS = (
    "a an the of photo picture image small large red green blue yellow purple white circle square triangle star "
    "cross on in at left right top bottom middle"
).split()
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
