"""Where and how a model runs: the device, the numeric precision, the train/eval mode.

One definition each, shared by the models (generation runs in eval mode), evaluation and
training:

    device = resolve_device("auto")          # cuda if available, else cpu; clear errors otherwise
    with autocast(device, "auto", model):    # bf16 or float32, by the rule below
        ...
    with eval_mode(model):                   # model.eval() inside, the earlier mode restored after
        ...

Precision ``"bf16"`` runs under bf16 autocast, ``"fp32"`` in float32, and ``"auto"`` picks
(:func:`resolve_precision`): bf16 on CUDA; on the CPU bf16 only where it was measured to pay
(docs/precision.md), i.e. when the CPU has native bf16 instructions (:func:`cpu_has_native_bf16`:
AVX512-BF16 or AMX-BF16) and the model is wide enough (:func:`model_width`, the widest
LayerNorm/RMSNorm: at least ``CPU_BF16_MIN_WIDTH["inference"]`` when no gradient is recorded,
``CPU_BF16_MIN_WIDTH["training"]`` when one is); float32 everywhere else, and on the CPU when
no model is given.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path

import torch
from torch import nn

from .layers.norms import RMSNorm

PRECISIONS = ("auto", "bf16", "fp32")

# The narrowest model (widest norm layer) that "auto" runs under bf16 on a CPU with native bf16,
# from benchmarks/bench_cpu_precision.py --sweep (docs/precision.md has the measured table):
# narrower models are slower under autocast, whose casts cost more than the matmuls save.
CPU_BF16_MIN_WIDTH = {"inference": 128, "training": 384}

# /proc/cpuinfo flags of native bf16 arithmetic (x86: AVX512-BF16 dot products, AMX tiles).
_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


@functools.cache
def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 in hardware (x86 AVX512-BF16 or AMX-BF16), read from torch's
    cpuinfo probes, else from the flags in /proc/cpuinfo. torch's own ``mkldnn`` bf16 check is not
    used: it also says yes on plain AVX512 CPUs, where bf16 is emulated and slower than float32."""
    probes = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    if all(callable(p) for p in probes):
        return any(p() for p in probes)
    try:
        return cpuinfo_has_bf16(Path("/proc/cpuinfo").read_text(errors="replace"))
    except OSError:
        return False


def cpuinfo_has_bf16(text: str) -> bool:
    """Whether the ``flags`` lines of /proc/cpuinfo ``text`` name avx512_bf16 or amx_bf16."""
    flags = {word for line in text.splitlines() if line.startswith("flags") for word in line.split()}
    return any(flag in flags for flag in _BF16_FLAGS)


def model_width(model: nn.Module) -> int:
    """The width of ``model``'s widest residual stream: the largest size its LayerNorm/RMSNorm
    layers normalise (0 for a model without them, or an object that is no ``nn.Module``). Every
    transformer in vlkit has one per block."""
    if not isinstance(model, nn.Module):
        return 0
    widths = [0]
    for m in model.modules():
        if isinstance(m, nn.LayerNorm):
            widths.append(int(m.normalized_shape[-1]))
        elif isinstance(m, RMSNorm):
            widths.append(int(m.weight.shape[-1]))
    return max(widths)


def check_precision(precision: str, name: str = "precision") -> str:
    """``precision`` if it is one of PRECISIONS, else a ValueError naming ``name`` (e.g. a CLI flag)."""
    if precision not in PRECISIONS:
        raise ValueError(f"{name} must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return precision


def resolve_precision(
    precision: str,
    device: torch.device | str,
    model: nn.Module | None = None,
    *,
    training: bool | None = None,
    native_bf16: bool | None = None,
) -> str:
    """``"bf16"`` or ``"fp32"``: what ``precision`` (one of PRECISIONS) means for ``model`` on
    ``device`` (module docstring). ``training``: whether a backward pass follows (default: whether
    autograd is recording now); ``native_bf16``: the CPU's bf16 support (default: detected)."""
    if check_precision(precision) != "auto":
        return precision
    device = torch.device(device)
    if device.type == "cuda":
        return "bf16"
    if device.type != "cpu" or model is None:
        return "fp32"
    if not (cpu_has_native_bf16() if native_bf16 is None else native_bf16):
        return "fp32"
    training = torch.is_grad_enabled() if training is None else training
    return "bf16" if model_width(model) >= CPU_BF16_MIN_WIDTH["training" if training else "inference"] else "fp32"


def autocast(
    device: torch.device | str, precision: str = "auto", model: nn.Module | None = None
) -> AbstractContextManager:
    """bf16 autocast when :func:`resolve_precision` says bf16; nothing (float32) otherwise."""
    device = torch.device(device)
    if resolve_precision(precision, device, model) == "bf16":
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
