"""Where ``nn.Linear`` weights lie in memory: as stored, or transposed for CPU decoding.

An ``nn.Linear`` weight is an (out, in) tensor, contiguous: each output's row of ``in`` values
lies together. :func:`transpose_linear_storage` re-stores every such weight of a module *in place*
in (in, out) memory order: the same (out, in) tensor, the same values and ``state_dict`` keys,
strides (1, out), i.e. ``w.t().contiguous().t()``. ``F.linear`` takes either order; MKL's float32
product then runs another kernel, up to 2x faster for 4-16 rows while the weight stays in the
core's L2 cache, but whole generate calls on a 2-core Xeon (1 thread; docs/generation.md,
``benchmarks/bench_linear_layout.py``) ran only 1.05-1.14x faster for a Llama of width 384 at
batch 1 and 0.87-1.17x otherwise (the machine's noise). So vlkit never does it by itself; call it
once on a model kept for CPU inference if it pays on yours:

    model = vlkit.from_pretrained(folder).eval()
    transpose_linear_storage(model)          # e.g. model.llm for a BLIP-2 or a VLM

Everything else keeps working: ``save_pretrained`` and ``convert --to hf`` write contiguous
tensors, ``load_state_dict`` copies into the new order, training computes the same gradients
(stored in the weights' order), LoRA merges in place, ``torch.compile`` compiles for the order it
sees. What changes: ``model.state_dict()`` holds non-contiguous tensors (safetensors'
``save_file`` refuses them: make them contiguous first, or call :func:`contiguous_linear_storage`),
``weight.view(...)`` needs ``reshape``, and a model wrapped in DDP on several processes must have
the same order on every one.
"""

from __future__ import annotations

import torch
from torch import nn


def _can_transpose(w: torch.Tensor) -> bool:
    """Whether a weight (out, in) is contiguous, with more than one row and column (a single row or
    column lies the same way in either order)."""
    return w.dim() == 2 and min(w.shape) > 1 and w.is_contiguous()


@torch.no_grad()
def transpose_linear_storage(module: nn.Module) -> int:
    """Re-store every ``nn.Linear`` weight of ``module`` in (in, out) memory order, in place
    (same Parameter objects, same values; tied weights once). Returns how many changed; calling
    it again changes none."""
    changed = 0
    for m in module.modules():
        if isinstance(m, nn.Linear) and _can_transpose(m.weight):
            m.weight.data = m.weight.data.t().contiguous().t()  # (out, in), strides (1, out)
            changed += 1
    return changed


@torch.no_grad()
def contiguous_linear_storage(module: nn.Module) -> int:
    """Undo :func:`transpose_linear_storage`: every ``nn.Linear`` weight contiguous again (out, in).
    Returns how many changed."""
    changed = 0
    for m in module.modules():
        if isinstance(m, nn.Linear) and not m.weight.is_contiguous():
            m.weight.data = m.weight.data.contiguous()
            changed += 1
    return changed
