"""``train.compile``: the step's forward and losses as one ``torch.compile``d function.

:class:`CompiledLosses` wraps a recipe's ``losses(model, batch)`` (the model's forward and the
task's losses); the loop back-propagates its sum as it does the eager losses, and AOTAutograd
compiles the backward graph along with the forward. It first compiles with ``fullgraph=True``:
one graph, no return to Python inside the step, which needs a step without host synchronisation
(no ``.item()``, no ``bool(tensor)``, masks built without Python branches on data): CLIP,
BLIP and ALBEF do (their hard-negative mining reads the collator's ``caption_ids`` tensor and
draws without a host check). A task that cannot be traced whole (a graph break, e.g. a batch
without ``caption_ids``, whose caption strings are hashed in Python) is compiled again without
``fullgraph``, and ``on_note`` is told once why; the losses are the same either way.

Shapes: the first batch compiles for its shapes; when a later batch differs (captions padded to
the longest of each batch) torch recompiles once with dynamic sizes, and then no more.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

Losses = dict[str, torch.Tensor]


class CompiledLosses:
    """``losses_fn(model, batch)`` compiled by ``torch.compile`` (``backend``: "inductor",
    "aot_eager", "eager"); called as the function it wraps. ``fullgraph``: the mode it runs in
    (True until a graph break made it fall back)."""

    def __init__(
        self,
        losses_fn: Callable[[nn.Module, dict[str, Any]], Losses],
        *,
        backend: str = "inductor",
        on_note: Callable[[str], None] | None = None,
    ) -> None:
        self.losses_fn, self.backend, self.on_note = losses_fn, backend, on_note
        self.fullgraph = True
        self._compiled = torch.compile(losses_fn, backend=backend, fullgraph=True)

    def __call__(self, model: nn.Module, batch: dict[str, Any]) -> Losses:
        if not self.fullgraph:
            return self._compiled(model, batch)
        try:
            return self._compiled(model, batch)
        except (torch._dynamo.exc.Unsupported, torch._dynamo.exc.UserError) as e:  # a graph break: nothing ran yet
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            self.fullgraph = False
            self._compiled = torch.compile(self.losses_fn, backend=self.backend)
            if self.on_note is not None:
                self.on_note(
                    f"train.compile: the step does not compile as one graph ({reason}); compiled with graph breaks"
                )
            return self._compiled(model, batch)
