"""What every vlkit model shares: its config, saving and weight loading with clear errors."""

from __future__ import annotations

import json
import os
import shutil
from functools import partial
from pathlib import Path
from typing import Any, Generic, TypeVar

import torch
from torch import nn

from ..files import write_file, write_text
from .registry import config_to_dict

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


class CheckpointError(ValueError):
    """A checkpoint's layout does not match the model it is loaded into."""


ConfigT = TypeVar("ConfigT")


class Model(nn.Module, Generic[ConfigT]):
    """Base class of the vlkit families, typed by their config: ``class CLIP(Model[CLIPConfig])``.
    Subclasses set ``config_class``."""

    config_class: Any  # the family's config dataclass (it has a ``model_type`` ClassVar)
    config: ConfigT

    def __init__(self, config: ConfigT) -> None:
        super().__init__()
        if not isinstance(config, self.config_class):
            raise TypeError(f"{type(self).__name__} takes a {self.config_class.__name__}, got {type(config).__name__}")
        self.config = config
        self._tokenizer: Any = None  # a Tokenizer, or where to read it from when first asked for

    @property
    def model_type(self) -> str:
        return self.config_class.model_type

    @property
    def tokenizer(self):
        """The model's tokenizer, or None. ``from_pretrained`` gives a model the tokenizer of its
        folder (read when first asked for), ``save_pretrained`` writes it; set it to give one."""
        if isinstance(self._tokenizer, (str, Path)):
            from ..tokenizers import get_tokenizer

            self._tokenizer = get_tokenizer(self._tokenizer)
        return self._tokenizer

    @tokenizer.setter
    def tokenizer(self, value) -> None:
        self._tokenizer = value

    def save_pretrained(self, folder: str | os.PathLike, tokenizer=None) -> Path:
        """Write ``config.json``, ``model.safetensors`` (tied weights stored once), each whole, and
        the tokenizer (``tokenizer``, else the model's own, if any), so that the folder is all
        ``vlkit.from_pretrained`` and ``vlkit.get_tokenizer`` need."""
        from safetensors.torch import save_model

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        config = {"vlkit_model_type": self.model_type, "config": config_to_dict(self.config)}
        write_text(folder / CONFIG_FILE, json.dumps(config, indent=2) + "\n")
        write_file(folder / WEIGHTS_FILE, lambda tmp: save_model(self, str(tmp)))
        source = self._tokenizer if tokenizer is None else tokenizer
        if isinstance(source, Path):  # not read yet: its files travel as they are
            _copy_tokenizer_files(source, folder)
        elif source is not None:
            (self.tokenizer if tokenizer is None else tokenizer).save(folder)
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


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameters of ``model``, each tensor counted once (tied weights once)."""
    unique = {id(p): p for p in model.parameters()}.values()
    return sum(p.numel() for p in unique if p.requires_grad), sum(p.numel() for p in unique)


def check_towers(config: Any, vision_class: type, text_class: type) -> None:
    """A two-tower config's ``vision`` and ``text`` are of the classes its family builds from."""
    if not isinstance(config.vision, vision_class) or not isinstance(config.text, text_class):
        raise TypeError(
            f"{type(config).__name__} takes vision: {vision_class.__name__} and text: {text_class.__name__}, got "
            f"{type(config.vision).__name__} and {type(config.text).__name__}"
        )


def _copy_tokenizer_files(source: Path, folder: Path) -> None:
    from ..tokenizers.vocab_files import tokenizer_files

    if source.resolve() == folder.resolve():
        return
    for path in tokenizer_files(source):
        write_file(folder / path.name, partial(shutil.copyfile, path))


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside a DistributedDataParallel (or torch.compile) wrapper."""
    from torch.nn.parallel import DistributedDataParallel

    while True:
        if isinstance(model, DistributedDataParallel):
            model = model.module
        elif isinstance(inner := getattr(model, "_orig_mod", None), nn.Module):
            model = inner
        else:
            return model
