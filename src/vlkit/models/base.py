"""What every vlkit model shares: its config, saving and weight loading with clear errors."""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from torch import nn

from .registry import config_to_dict

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


class CheckpointError(ValueError):
    """A checkpoint's layout does not match the model it is loaded into."""


class Model(nn.Module):
    """Base class of the vlkit families. Subclasses set ``config_class``."""

    config_class: type

    def __init__(self, config) -> None:
        super().__init__()
        if not isinstance(config, self.config_class):
            raise TypeError(f"{type(self).__name__} takes a {self.config_class.__name__}, got {type(config).__name__}")
        self.config = config

    @property
    def model_type(self) -> str:
        return self.config_class.model_type

    def save_pretrained(self, folder: str | os.PathLike) -> Path:
        """Write ``config.json`` and ``model.safetensors`` (tied weights stored once) atomically."""
        from safetensors.torch import save_model

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        config = {"vlkit_model_type": self.model_type, "config": config_to_dict(self.config)}
        tmp = folder / (CONFIG_FILE + ".tmp")
        tmp.write_text(json.dumps(config, indent=2) + "\n")
        os.replace(tmp, folder / CONFIG_FILE)
        tmp = folder / (WEIGHTS_FILE + ".tmp")
        save_model(self, str(tmp))
        os.replace(tmp, folder / WEIGHTS_FILE)
        return folder

    def load_weights(self, state_dict: dict[str, torch.Tensor], source: str = "checkpoint") -> None:
        """Load a full state dict; raise :class:`CheckpointError` naming missing and unexpected keys.

        A key missing from the file is fine when its parameter is tied to one that is present.
        """
        own = self.state_dict()
        missing = set(own) - set(state_dict)
        unexpected = set(state_dict) - set(own)
        shapes = [
            f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}"
            for k in set(own) & set(state_dict)
            if state_dict[k].shape != own[k].shape
        ]
        if missing:
            present = {own[k].data_ptr() for k in own if k in state_dict}
            missing = {k for k in missing if own[k].data_ptr() not in present}
        missing -= {k for k in missing if k in self._non_persistent_ok()}
        if missing or unexpected or shapes:
            parts = [f"{source} does not match {type(self).__name__}"]
            if missing:
                parts.append(f"missing keys ({len(missing)}): {sorted(missing)[:20]}")
            if unexpected:
                parts.append(f"unexpected keys ({len(unexpected)}): {sorted(unexpected)[:20]}")
            if shapes:
                parts.append(f"shape mismatches: {shapes[:20]}")
            raise CheckpointError("; ".join(parts))
        self.load_state_dict(state_dict, strict=False)

    def _non_persistent_ok(self) -> set[str]:
        return set()

    def num_parameters(self) -> int:
        return sum(p.numel() for p in {id(p): p for p in self.parameters()}.values())


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside a DistributedDataParallel (or torch.compile) wrapper."""
    from torch.nn.parallel import DistributedDataParallel

    while True:
        if isinstance(model, DistributedDataParallel):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), nn.Module):
            model = model._orig_mod
        else:
            return model
