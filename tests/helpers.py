"""Builders of tiny random reference models (HF transformers) saved to folders, for parity tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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

# A CLIP small enough for training-loop tests: 16-pixel images in 8-pixel patches, width 32.
TINY_CLIP = [
    "model.vision.image_size=16", "model.vision.patch_size=8", "model.vision.width=32", "model.vision.mlp_dim=64",
    "model.vision.num_heads=2", "model.text.width=32", "model.text.mlp_dim=64", "model.text.num_heads=2",
    "model.embed_dim=16",
]  # fmt: skip


def as_flags(overrides: list[str]) -> list[str]:
    """``["a.b=1", ...]`` -> ``["--set", "a.b=1", ...]`` for the ``vlkit train`` command line."""
    return [arg for item in overrides for arg in ("--set", item)]


def torchrun_train(args: list[str]) -> subprocess.CompletedProcess:
    """``vlkit train ARGS`` under torchrun with 2 CPU processes (one thread each); output captured."""
    vlkit_script = Path(sys.executable).parent / "vlkit"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "--no-python",
           str(vlkit_script), "train", *args]  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, check=False)
