"""Where and how a model runs: the device, the numeric precision, the train/eval mode.

One definition each, shared by the models (generation runs in eval mode), evaluation and
training:

    device = resolve_device("auto")          # cuda if available, else cpu; clear errors otherwise
    with autocast(device, "auto"):           # bf16 autocast on CUDA, float32 on the CPU
        ...
    with eval_mode(model):                   # model.eval() inside, the earlier mode restored after
        ...
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext

import torch
from torch import nn

PRECISIONS = ("auto", "bf16", "fp32")


def autocast(device: torch.device | str, precision: str = "auto") -> AbstractContextManager:
    """bf16 autocast for ``precision="bf16"``, or ``"auto"`` on CUDA; nothing (float32) otherwise."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    device = torch.device(device)
    if precision == "bf16" or (precision == "auto" and device.type == "cuda"):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext()


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """``"auto"`` (cuda when available, else cpu), ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``.

    A name torch does not know, or an accelerator this machine does not have, is a ValueError
    that says which devices there are."""
    if isinstance(name, torch.device):
        name = str(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise ValueError(f"unknown device {name!r}; expected auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"device {name!r}: this machine has no CUDA GPU (torch {torch.__version__}); use --device cpu"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"device {name!r}: this machine has {torch.cuda.device_count()} CUDA GPU(s)")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {name!r}: MPS is not available on this machine; use --device cpu")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"unsupported device {name!r}; expected auto, cpu, cuda, cuda:N or mps")
    return device


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` in eval mode (no dropout) for the block, then back in the mode it was in."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)
