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
from functools import partial
from pathlib import Path

import torch

from ..files import write_file, write_text
from . import hf_bert, hf_blip, hf_blip2, hf_clip, hf_gpt2, hf_llama, hf_llava, hf_opt, hf_siglip, hf_vilt, hf_vit

# vlkit model type -> the converter module that writes it
HF_WRITERS = {
    conv.MODEL_TYPE: conv
    for conv in (hf_bert, hf_blip, hf_blip2, hf_clip, hf_gpt2, hf_llama, hf_llava, hf_opt, hf_siglip, hf_vilt, hf_vit)
}
# HF processor classes (image + text)
PROCESSORS = {"clip": "CLIPProcessor", "blip": "BlipProcessor", "vilt": "ViltProcessor"}
_META = {"format": "pt"}  # what transformers expects in a safetensors header


def hf_writer(model_type: str):
    """The converter module that can write ``model_type`` as an HF checkpoint."""
    if model_type not in HF_WRITERS:
        raise ValueError(
            f"converting a {model_type!r} model to HF is not supported; supported families: {sorted(HF_WRITERS)}"
        )
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
        raise ValueError(
            f"this {model.model_type} model has no tokenizer, and an HF folder without one builds an "
            "empty tokenizer in transformers; give one (vlkit convert --tokenizer NAME_OR_FOLDER, or "
            "save_hf(model, out, tokenizer=...))"
        )
    if hasattr(conv, "hf_tokenizer"):
        tok = conv.hf_tokenizer(tok, model.config)
    if tok.vocab_size != _vocab_size(model.config):
        raise ValueError(
            f"the tokenizer has {tok.vocab_size} tokens but the {model.model_type} model's vocabulary has "
            f"{_vocab_size(model.config)}; give the tokenizer the model was trained with"
        )
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
    """Write ``model`` into the folder ``out`` as HF transformers loads it (see the module docs).
    A model HF holds in two classes (a BLIP captioner with retrieval heads) gets the second in a
    sub-folder (``out/retrieval``)."""
    from safetensors.torch import save_file

    from ..tokenizers.hf import save_hf_tokenizer

    conv = hf_writer(model.model_type)
    parts = conv.hf_parts(model.config) if hasattr(conv, "hf_parts") else {"": model.config}
    configs = {sub: conv.config_to_hf(config) for sub, config in parts.items()}  # refuses what HF cannot hold
    tok = hf_tokenizer(model, tokenizer)
    image = conv.image_processor_config(model.config) if hasattr(conv, "image_processor_config") else None
    processor = PROCESSORS.get(model.model_type)
    full_state = _state_for_file(model)
    for sub, config in parts.items():
        folder = Path(out) / sub
        folder.mkdir(parents=True, exist_ok=True)
        state = {k: v.contiguous() for k, v in conv.state_dict_to_hf(full_state, config).items()}
        _write_json(folder / "config.json", configs[sub])
        write_file(folder / "model.safetensors", partial(save_file, state, metadata=_META))
        if tok is not None:
            save_hf_tokenizer(
                tok,
                folder,
                tokenizer_class=conv.TOKENIZER_CLASS,
                processor_class=processor,
                model_max_length=_max_length(model.config),
            )
        if image is not None:
            named = {"processor_class": processor} if processor else {}
            _write_json(folder / "preprocessor_config.json", {**image, **named})
            if processor:
                _write_json(folder / "processor_config.json", {"processor_class": processor, "image_processor": image})
    return Path(out)


def _max_length(config) -> int | None:
    text = getattr(config, "text", config)
    for name in ("context_length", "max_positions"):
        if isinstance(getattr(text, name, None), int):
            return getattr(text, name)
    return None
