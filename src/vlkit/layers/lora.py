"""LoRA (Hu et al. 2021): a frozen ``nn.Linear`` plus a trained low-rank update
``W x + (alpha / rank) * B A x`` (A: (rank, in), B: (out, rank), B starting at zero so that the
wrapped model begins as the base model).

    names = apply_lora(model.llm, target_modules=["attn.qkv", "attn.proj"], rank=8, alpha=16)
    save_adapter(model, folder, LoRAConfig(...))   # adapter.safetensors + adapter_config.json
    load_adapter(base_model, folder)                # the wrappers again, with the saved weights
    merge_lora(model)                               # B A folded into the weights, wrappers removed

A target names a module by its path's last components: ``"attn.qkv"`` matches
``blocks.0.attn.qkv`` but not ``blocks.0.xattn.qkv``.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from ..files import write_file, write_text

ADAPTER_WEIGHTS = "adapter.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
LORA_SUFFIXES = (".lora_a", ".lora_b")


@dataclass(frozen=True)
class LoRAConfig:
    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    target_modules: tuple[str, ...] = ("attn.qkv", "attn.proj")

    def __post_init__(self) -> None:
        if self.rank < 1:
            raise ValueError(f"LoRA rank must be a positive integer, got {self.rank!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"LoRA dropout must be in [0, 1), got {self.dropout!r}")
        if not self.target_modules:
            raise ValueError("LoRA target_modules is empty: name the linear layers to adapt, e.g. ['attn.qkv']")
        object.__setattr__(self, "target_modules", tuple(self.target_modules))


class LoRALinear(nn.Module):
    """``base(x) + scaling * dropout(x) A^T B^T``; ``base`` is left as it is (freeze it apart)."""

    def __init__(self, base: nn.Linear, *, rank: int, alpha: float, dropout: float = 0.0) -> None:
        super().__init__()
        self.base = base
        self.rank, self.scaling = rank, alpha / rank
        w = base.weight
        self.lora_a = nn.Parameter(torch.empty(rank, base.in_features, dtype=w.dtype, device=w.device))
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, rank, dtype=w.dtype, device=w.device))
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))  # as nn.Linear initialises its weight
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    @property
    def weight(self) -> torch.Tensor:
        return self.base.weight

    @property
    def bias(self) -> torch.Tensor | None:
        return self.base.bias

    @property
    def in_features(self) -> int:
        return self.base.in_features

    @property
    def out_features(self) -> int:
        return self.base.out_features

    def delta_weight(self) -> torch.Tensor:
        """The update folded into the weight (out, in)."""
        return self.scaling * (self.lora_b @ self.lora_a)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        update = (self.dropout(x) @ self.lora_a.t()) @ self.lora_b.t()  # (..., out)
        return self.base(x) + self.scaling * update


def _matches(name: str, targets: Sequence[str]) -> bool:
    return any(name == t or name.endswith("." + t) for t in targets)


def _set_module(root: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, child, module)


def apply_lora(
    model: nn.Module,
    *,
    target_modules: Sequence[str],
    rank: int,
    alpha: float,
    dropout: float = 0.0,
    freeze: bool = True,
) -> list[str]:
    """Wrap every ``nn.Linear`` of ``model`` a target names in a :class:`LoRALinear`; with
    ``freeze`` every other parameter of ``model`` stops requiring grad. -> the wrapped names.
    A ValueError when no linear layer matches."""
    config = LoRAConfig(rank=rank, alpha=alpha, dropout=dropout, target_modules=tuple(target_modules))
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and _matches(n, config.target_modules)]
    if not names:
        linears = sorted({n.split(".")[-1] for n, m in model.named_modules() if isinstance(m, nn.Linear)})
        raise ValueError(
            f"LoRA target_modules {list(config.target_modules)} match no linear layer; the model's are named "
            f"like {linears[:12]}"
        )
    if freeze:
        for p in model.parameters():
            p.requires_grad_(False)
    for name in names:
        base = model.get_submodule(name)
        assert isinstance(base, nn.Linear)
        _set_module(model, name, LoRALinear(base, rank=config.rank, alpha=config.alpha, dropout=config.dropout))
    return names


def lora_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The adapters' weights only: ``{path.lora_a, path.lora_b}`` of every :class:`LoRALinear`."""
    return {k: v for k, v in model.state_dict().items() if k.endswith(LORA_SUFFIXES)}


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every adapter into its base weight and put the plain ``nn.Linear`` back (in place)."""
    wrapped = [(n, m) for n, m in model.named_modules() if isinstance(m, LoRALinear)]
    for name, module in wrapped:
        with torch.no_grad():
            module.base.weight += module.delta_weight().to(module.base.weight.dtype)
        _set_module(model, name, module.base)
    return model


def save_adapter(
    model: nn.Module, folder: str | os.PathLike, config: LoRAConfig, extra: dict[str, torch.Tensor] | None = None
) -> Path:
    """Write ``adapter.safetensors`` (the adapters, and ``extra`` weights trained beside them, e.g.
    a projector) and ``adapter_config.json`` into ``folder``."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().cpu() for k, v in {**lora_state_dict(model), **(extra or {})}.items()}
    if not any(k.endswith(LORA_SUFFIXES) for k in tensors):
        raise ValueError("the model holds no LoRA adapter to save (apply_lora first)")
    write_file(folder / ADAPTER_WEIGHTS, lambda tmp: save_file(tensors, str(tmp), metadata={"format": "pt"}))
    document = {**asdict(config), "target_modules": list(config.target_modules), "extra_weights": sorted(extra or {})}
    write_text(folder / ADAPTER_CONFIG, json.dumps(document, indent=2) + "\n")
    return folder


def read_adapter_config(folder: str | os.PathLike) -> LoRAConfig:
    path = Path(folder) / ADAPTER_CONFIG
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: an adapter folder holds {ADAPTER_CONFIG} and {ADAPTER_WEIGHTS}")
    doc = json.loads(path.read_text(encoding="utf-8"))
    return LoRAConfig(
        rank=doc["rank"], alpha=doc["alpha"], dropout=doc["dropout"], target_modules=doc["target_modules"]
    )


def load_adapter(model: nn.Module, folder: str | os.PathLike, *, merge: bool = False) -> nn.Module:
    """Wrap the linear layers the adapter in ``folder`` was trained on, load its weights (and the
    extra weights saved with it) and, with ``merge``, fold them in. -> ``model`` (changed in place)."""
    from safetensors.torch import load_file

    config = read_adapter_config(folder)
    tensors = load_file(str(Path(folder) / ADAPTER_WEIGHTS))
    wrapped = sorted({k[: -len(".lora_a")] for k in tensors if k.endswith(".lora_a")})
    for name in wrapped:
        try:
            base = model.get_submodule(name)
        except AttributeError:
            raise ValueError(f"adapter in {folder} adapts {name!r}, which this model lacks") from None
        if not isinstance(base, nn.Linear):
            raise ValueError(f"adapter in {folder} adapts {name!r}, which is a {type(base).__name__}, not a Linear")
        _set_module(model, name, LoRALinear(base, rank=config.rank, alpha=config.alpha, dropout=config.dropout))
    unexpected = model.load_state_dict(tensors, strict=False).unexpected_keys
    if unexpected:
        raise ValueError(f"adapter in {folder} holds weights this model lacks: {unexpected[:5]}")
    return merge_lora(model) if merge else model
