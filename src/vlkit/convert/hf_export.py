"""A vlkit model as a folder HF transformers loads as is: ``config.json``, ``model.safetensors``,
the tokenizer files (``tokenizer.json``, the vocabulary files, ``tokenizer_config.json``,
``special_tokens_map.json``) and the image processor (``preprocessor_config.json``, and
``processor_config.json`` for the models HF pairs with a processor: CLIP, BLIP).

A folder that could not be complete is refused before anything is written: a text model needs
a tokenizer whose vocabulary is the model's.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from ..files import write_file, write_text
from . import hf_bert, hf_blip, hf_clip, hf_gpt2, hf_vit

# vlkit model type -> the converter module that writes it
HF_WRITERS = {conv.MODEL_TYPE: conv for conv in (hf_bert, hf_blip, hf_clip, hf_gpt2, hf_vit)}
PROCESSORS = {"clip": "CLIPProcessor", "blip": "BlipProcessor"}  # HF processor classes (image + text)


def hf_writer(model_type: str):
    """The converter module that can write ``model_type`` as an HF checkpoint."""
    if model_type not in HF_WRITERS:
        raise ValueError(f"converting a {model_type!r} model to HF is not supported; supported families: "
                         f"{sorted(HF_WRITERS)}")
    return HF_WRITERS[model_type]


def _vocab_size(config) -> int:
    return getattr(config, "text", config).vocab_size


def hf_tokenizer(model, tokenizer=None):
    """The tokenizer an HF export of ``model`` writes (``tokenizer``, else the model's own), checked
    against the model's vocabulary; None for image models. Raises ValueError when there is none."""
    conv = hf_writer(model.model_type)
    if conv.TOKENIZER_CLASS is None:
        return None
    tok = tokenizer if tokenizer is not None else model.tokenizer
    if tok is None:
        raise ValueError(f"this {model.model_type} model has no tokenizer, and an HF folder without one builds an empty "
                         "tokenizer in transformers; give one (vlkit convert --tokenizer NAME_OR_FOLDER, or "
                         "save_hf(model, out, tokenizer=...))")
    if hasattr(conv, "hf_tokenizer"):
        tok = conv.hf_tokenizer(tok, model.config)
    if tok.vocab_size != _vocab_size(model.config):
        raise ValueError(f"the tokenizer has {tok.vocab_size} tokens but the {model.model_type} model's vocabulary has "
                         f"{_vocab_size(model.config)}; give the tokenizer the model was trained with")
    return tok


def _state_for_file(model) -> dict[str, torch.Tensor]:
    """The model's tensors on the CPU, each stored once (shared modules are copied per name)."""
    out, seen = {}, set()
    for key, value in model.state_dict().items():
        value = value.detach().cpu()
        ptr = (value.untyped_storage().data_ptr(), value.storage_offset())
        out[key] = value.clone() if ptr in seen else value
        seen.add(ptr)
    return out


def _write_json(path: Path, data: dict) -> None:
    write_text(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def save_hf(model, out: str | os.PathLike, tokenizer=None) -> Path:
    """Write ``model`` into the folder ``out`` as HF transformers loads it (see the module docs)."""
    from safetensors.torch import save_file

    from ..tokenizers.hf import save_hf_tokenizer

    conv = hf_writer(model.model_type)
    config = conv.config_to_hf(model.config)  # refuses what HF cannot represent, before anything is written
    tok = hf_tokenizer(model, tokenizer)
    image = conv.image_processor_config(model.config) if hasattr(conv, "image_processor_config") else None
    state = {k: v.contiguous() for k, v in conv.state_dict_to_hf(_state_for_file(model), model.config).items()}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _write_json(out / "config.json", config)
    write_file(out / "model.safetensors", lambda tmp: save_file(state, str(tmp), metadata={"format": "pt"}))
    processor = PROCESSORS.get(model.model_type)
    if tok is not None:
        save_hf_tokenizer(tok, out, tokenizer_class=conv.TOKENIZER_CLASS, processor_class=processor,
                          model_max_length=_max_length(model.config))
    if image is not None:
        _write_json(out / "preprocessor_config.json", {**image, **({"processor_class": processor} if processor else {})})
        if processor:
            _write_json(out / "processor_config.json", {"processor_class": processor, "image_processor": image})
    return out


def _max_length(config) -> int | None:
    text = getattr(config, "text", config)
    for name in ("context_length", "max_positions"):
        if isinstance(getattr(text, name, None), int):
            return getattr(text, name)
    return None
