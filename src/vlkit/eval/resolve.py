"""What a ``--model`` names: one resolution for every command that reads a model.

    model = load_model("runs/blip-shapes")         # a run folder: its final model/, else its newest checkpoint
    model = load_model("runs/blip-shapes/model")   # a model folder (vlkit, HF transformers, open_clip)
    model = load_model("runs/x/checkpoints/step-0000100.pt")   # a training checkpoint
    model = load_model("org/name")                 # anything vlkit.from_pretrained reads
    tokenizer = load_tokenizer("runs/blip-shapes", model)
    model, tokenizer = load_model_and_tokenizer("runs/blip-shapes")   # the two, a checkpoint read once

The tokenizer is the one named, else the training checkpoint's recipe's, else the one saved in
the model folder, else the family's default: ``bert-base-uncased`` for BLIP and ALBEF (their
WordPiece), ``clip`` for the others.

A ``blip-vqa`` run holds two BLIPs (a captioner and a VQA model sharing its encoders); its model
folder is the captioner with the VQA model in a ``vqa/`` sub-folder. :func:`captioner` and
:func:`vqa_model` pick the one a command needs.
"""

from __future__ import annotations

import os
from pathlib import Path

from torch import nn

from ..models import CheckpointError, from_pretrained
from ..models.albef import ALBEF
from ..models.blip import Blip
from ..models.blip2 import Blip2
from ..models.vilt import Vilt
from ..tokenizers import get_tokenizer
from ..train.checkpoint import consolidate, latest_checkpoint, load_checkpoint
from ..train.config import Config
from ..train.recipes import get_recipe
from ..train.recipes.blip import VQA_FOLDER
from ..train.recipes.blip import load_tokenizer as load_named_tokenizer

RUN_MODEL_FOLDER = "model"  # where `vlkit train` saves the final model of a run
BLIP_TOKENIZER = "bert-base-uncased"  # BLIP's and ALBEF's WordPiece
DEFAULT_TOKENIZER = "clip"


def model_source(source: str | os.PathLike) -> Path:
    """The file or folder ``source`` stands for: for a run folder, the newer of its final
    ``model/`` and its newest checkpoint (a run resumed past its end, or stopped before it, has a
    checkpoint newer than ``model/``); anything else is itself."""
    path = Path(source).expanduser()
    if is_training_checkpoint(path):
        return path
    if path.is_dir() and not (path / "config.json").is_file() and not (path / "open_clip_config.json").is_file():
        final = path / RUN_MODEL_FOLDER / "config.json"
        newest = latest_checkpoint(path)
        if final.is_file() and (newest is None or _mtime(newest) <= _mtime(final.parent)):
            return path / RUN_MODEL_FOLDER
        if newest is not None:
            return newest
        raise FileNotFoundError(
            f"{path} is neither a model folder (config.json) nor a run folder of `vlkit train` "
            f"({RUN_MODEL_FOLDER}/ or checkpoints/step-*.pt or step-*.dcp)"
        )
    return path


def _mtime(path: Path) -> int:
    """When ``path`` was last written (a folder: its newest file)."""
    files = [p for p in path.iterdir() if p.is_file()] if path.is_dir() else [path]
    return max((p.stat().st_mtime_ns for p in files), default=0)


def _checkpoint_recipe(path: Path):
    """(the recipe that wrote the training checkpoint ``path``, the checkpoint's state)."""
    state = load_checkpoint(path)
    cfg = Config.from_dict(state["config"], f"{path} config")
    return get_recipe(cfg.task, cfg.model), state


def is_training_checkpoint(path: Path) -> bool:
    """A checkpoint file of `vlkit train` (``.pt``) or a sharded checkpoint folder (``.dcp``)."""
    return (path.is_file() and path.suffix == ".pt") or (path.is_dir() and path.suffix == ".dcp")


def _checkpoint_model(recipe, state: dict, path: Path) -> nn.Module:
    model = recipe.build_model()
    weights = state["model"] if "model" in state else consolidate(path)[1]  # a sharded checkpoint: gathered
    try:
        model.load_state_dict(weights)
    except RuntimeError as e:  # missing, unexpected or differently shaped weights
        first = next((line.strip() for line in str(e).splitlines() if line.strip()), "")
        raise CheckpointError(f"{path}: its weights do not fit the model its config builds ({first})") from None
    return model.eval()


def load_model(source: str | os.PathLike) -> nn.Module:
    """The model ``source`` names (see the module docstring), in eval mode on the CPU."""
    path = model_source(source)
    if path.is_file() and path.suffix != ".pt":
        raise ValueError(f"{path} is a file; expected a model folder, a run folder or a training checkpoint (.pt)")
    if is_training_checkpoint(path):
        return _checkpoint_model(*_checkpoint_recipe(path), path)
    return from_pretrained(path if path.exists() else source)  # damaged weights: a one-line CheckpointError


def captioner(model: nn.Module) -> nn.Module:
    """The captioning BLIP of a ``blip-vqa`` model pair, else ``model`` itself."""
    return getattr(model, "captioner", model)


def load_tokenizer(source: str | os.PathLike, model: nn.Module, name: str | None = None):
    """The tokenizer for the model read from ``source``: ``name`` if given (a name, a folder, or
    ``shapes``), else the training checkpoint's, else the model folder's, else the family default."""
    if name:
        return load_named_tokenizer(name)
    path = model_source(source)
    if is_training_checkpoint(path):
        return _checkpoint_recipe(path)[0].tokenizer
    if path.is_dir():
        try:
            return get_tokenizer(path)
        except ValueError:  # the folder holds no tokenizer files
            pass
    return load_named_tokenizer(
        BLIP_TOKENIZER if isinstance(captioner(model), (Blip, ALBEF, Vilt)) else DEFAULT_TOKENIZER
    )


def load_model_and_tokenizer(source: str | os.PathLike, tokenizer: str | None = None):
    """``(load_model(source), load_tokenizer(source, model, tokenizer))``, reading a training
    checkpoint once."""
    path = model_source(source)
    if is_training_checkpoint(path):
        recipe, state = _checkpoint_recipe(path)
        return _checkpoint_model(recipe, state, path), (
            load_named_tokenizer(tokenizer) if tokenizer else recipe.tokenizer
        )
    model = load_model(source)
    return model, load_tokenizer(source, model, tokenizer)


def _describe(model: nn.Module) -> str:
    if isinstance(model, Blip) and model.config.text_decoder:
        return "a captioning BLIP" if model.config.decoder_context == "image" else "a BLIP VQA model"
    return f"a {getattr(model, 'model_type', type(model).__name__)!r} model"


def _blip2_with_llm(model: nn.Module) -> bool:
    return isinstance(model, Blip2) and model.language_model is not None


def require_captioner(model: nn.Module, source: str | os.PathLike) -> Blip | Blip2:
    """The captioning BLIP (a decoder reading the image) or the BLIP-2 with a language model of
    ``model``, or a ValueError that says what ``source`` holds instead."""
    model = captioner(model)
    if _blip2_with_llm(model):
        return model
    if isinstance(model, Blip) and model.config.text_decoder and model.config.decoder_context == "image":
        return model
    hint = (
        " (for questions: `vlkit vqa` or `vlkit eval vqa`)"
        if isinstance(model, Blip) and model.config.decoder_context == "question"
        else ""
    )
    raise ValueError(f"{source} holds {_describe(model)}, not a captioning BLIP (a decoder reading the image){hint}")


def vqa_model(model: nn.Module, source: str | os.PathLike) -> nn.Module:
    """The VQA model ``source`` stands for: a ViLT with a VQA head, a BLIP-2 with a language model
    (zero-shot VQA by prompting it), or the BLIP VQA model (a decoder reading the question):
    ``model`` itself, the VQA half of a ``blip-vqa`` pair, or the ``vqa/`` sub-folder of its model
    folder."""
    if _blip2_with_llm(model):
        return model
    if hasattr(model, "vqa"):
        return model.vqa
    if isinstance(model, Vilt):
        if model.config.answers:
            return model
        raise ValueError(
            f"{source} holds a ViLT without a VQA head (config.answers is empty): fine-tune one with "
            "the vilt-vqa task, or load a ViltForQuestionAnswering folder"
        )
    if isinstance(model, Blip) and model.config.text_decoder and model.config.decoder_context == "question":
        return model
    path = model_source(source)
    if path.is_dir() and (path / VQA_FOLDER / "config.json").is_file():
        return vqa_model(from_pretrained(path / VQA_FOLDER), path / VQA_FOLDER)
    if isinstance(model, Blip) and model.config.text_decoder:
        raise ValueError(
            f"{source} holds a captioning BLIP (its decoder reads the image, not a question) and has no "
            f"{VQA_FOLDER}/ sub-folder: give the VQA model (e.g. RUN/model/{VQA_FOLDER} of a blip-vqa run) "
            "or caption the image with `vlkit caption`"
        )
    raise ValueError(
        f"{source} holds {_describe(model)}; VQA needs a ViLT with a VQA head or a BLIP VQA model (a decoder "
        "reading the question), "
        f"e.g. RUN/model/{VQA_FOLDER} of a blip-vqa run"
    )


def require_embedder(model: nn.Module, source: str | os.PathLike) -> nn.Module:
    """``model`` if it embeds both images and texts (``encode_image``/``encode_text``), else a ValueError."""
    if hasattr(model, "encode_image") and hasattr(model, "encode_text"):
        return model
    raise ValueError(
        f"{source} holds {_describe(model)}, which has no encode_image/encode_text; embedding needs a "
        "two-tower model (CLIP, ALBEF, or a BLIP with a text encoder)"
    )
