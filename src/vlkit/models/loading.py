"""``from_pretrained``: vlkit folders, HF transformers folders, open_clip checkpoints, hub ids.

Every fault of a checkpoint a user can meet (a truncated weights file, a pickle that is refused,
a config.json of another shape) raises a :class:`CheckpointError` that names the file and what
was expected.
"""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path
from typing import Any

import torch

from ..convert import HF_CONVERTERS
from ..convert.hf_image_processor import image_fields_from_hf
from ..files import read_json_object
from .base import CONFIG_FILE, CheckpointError, Model
from .registry import FAMILIES, config_from_dict

OPEN_CLIP_CONFIG = "open_clip_config.json"


def read_json(path: Path, what: str = "a JSON object") -> dict:
    """The JSON object in ``path``; a CheckpointError naming the file when it is not one."""
    return read_json_object(path, what, error=CheckpointError)


def _load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if path.stat().st_size == 0:
        raise CheckpointError(f"{path} is empty; expected a safetensors weights file")
    try:
        return load_file(path)
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path} is not a complete safetensors file ({reason}); it may be truncated") from None


def _load_pickle(path: Path) -> Any:
    """``torch.load(weights_only=True)``: tensors and plain containers only, never pickled code."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        text = str(e)
        call = re.search(r"Unsupported global: GLOBAL (\S+)", text)
        detail = re.search(r"WeightsUnpickler error: ([^\n]+)", text)
        reason = f"it calls {call[1]}" if call else detail[1].strip() if detail else text.strip().split("\n")[0]
        raise CheckpointError(
            f"{path}: torch.load(weights_only=True) refused it ({reason}); vlkit never runs pickled code, "
            "so save these weights as safetensors"
        ) from None
    except (RuntimeError, EOFError, OSError) as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(
            f"{path} is not a readable PyTorch weights file ({reason}); it may be truncated"
        ) from None


def read_weights(folder: Path, stem: str = "model") -> dict[str, torch.Tensor]:
    """Read ``<stem>.safetensors`` (sharded or not) or ``pytorch_model.bin`` without running pickle code."""
    single = folder / f"{stem}.safetensors"
    if single.is_file():
        return _load_safetensors(single)
    index = folder / f"{stem}.safetensors.index.json"
    if index.is_file():
        weight_map = read_json(index, "a safetensors index with a 'weight_map'").get("weight_map")
        if not isinstance(weight_map, dict):
            raise CheckpointError(f"{index} has no 'weight_map' object naming the shard of each tensor")
        out: dict[str, torch.Tensor] = {}
        for shard in sorted(set(weight_map.values())):
            out.update(_load_safetensors(folder / shard))
        return out
    for name in (f"{stem}_pytorch_model.bin" if stem != "model" else "pytorch_model.bin", f"{stem}.bin"):
        path = folder / name
        if path.is_file():
            state = _load_pickle(path)
            state = state.get("state_dict", state) if isinstance(state, dict) else state
            if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
                raise CheckpointError(f"{path} does not hold a state dict (a mapping of names to tensors)")
            return state
    raise FileNotFoundError(f"no weights in {folder}: expected {stem}.safetensors or a pytorch .bin file")


def _resolve(source: str | os.PathLike) -> Path:
    path = Path(source).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ValueError(f"{path} is a file; from_pretrained takes a checkpoint folder")
        return path
    text = str(source)
    if text.count("/") == 1 and not text.startswith((".", "/", "~")):
        try:
            from huggingface_hub import snapshot_download
        except ImportError as e:  # pragma: no cover - huggingface_hub is a dependency
            raise FileNotFoundError(f"{source!r} is not a folder and huggingface_hub is not installed") from e
        try:
            return Path(
                snapshot_download(text, allow_patterns=["*.json", "*.safetensors", "*.bin", "*.txt", "*.model"])
            )
        except Exception as e:
            raise FileNotFoundError(
                f"{source!r} is not a local folder and could not be downloaded from the hub: {e}"
            ) from e
    raise FileNotFoundError(f"checkpoint folder {source!r} does not exist")


def _image_processor(folder: Path) -> dict | None:
    """The HF image processor config: ``preprocessor_config.json``, or the ``image_processor``
    part of ``processor_config.json`` (where transformers 5 saves it)."""
    if (folder / "preprocessor_config.json").is_file():
        return read_json(folder / "preprocessor_config.json", "an HF image processor config")
    if (folder / "processor_config.json").is_file():
        image = read_json(folder / "processor_config.json", "an HF processor config").get("image_processor")
        return image if isinstance(image, dict) else None
    return None


def _with_image_processor(fields: dict, folder: Path) -> dict:
    """The checkpoint's own preprocessing (mean, std, resampling, crop) into its vision config."""
    pre = _image_processor(folder)
    if pre is None:
        return fields
    image = image_fields_from_hf(pre)
    if "vision" in fields:
        return {**fields, "vision": {**fields["vision"], **image}}
    if "image_size" in fields:  # a ViT
        return {**fields, **image}
    return fields


def _read_open_clip(folder: Path) -> tuple[str, dict, dict]:
    from ..convert import open_clip as oc

    cfg = read_json(folder / OPEN_CLIP_CONFIG, "an open_clip config with a 'model_cfg' object")
    stem = "open_clip_model" if (folder / "open_clip_model.safetensors").is_file() else "open_clip_pytorch_model"
    state = read_weights(folder, stem)
    return oc.MODEL_TYPE, oc.config_from_open_clip(cfg, state), oc.state_dict_from_open_clip(state)


def _read_vlkit(folder: Path, cfg: dict) -> tuple[str, dict, dict]:
    path = folder / CONFIG_FILE
    model_type, fields = cfg["vlkit_model_type"], cfg.get("config")
    if not isinstance(fields, dict):
        raise CheckpointError(
            f"{path}: a vlkit config.json holds 'vlkit_model_type' and 'config' (an object of the "
            f"model's fields); 'config' is {'missing' if fields is None else repr(fields)}"
        )
    return model_type, fields, read_weights(folder)


def _read_hf(folder: Path, cfg: dict) -> tuple[str, dict, dict]:
    conv = HF_CONVERTERS[cfg["model_type"]]
    archs = cfg.get("architectures") or []
    if archs and not set(archs) & set(conv.ARCHITECTURES):
        raise CheckpointError(
            f"{folder}: architecture {archs} is not supported for model_type {cfg['model_type']!r}; "
            f"expected one of {conv.ARCHITECTURES}"
        )
    hf_state = read_weights(folder)
    try:
        fields = conv.config_from_hf(cfg, hf_state)
    except (KeyError, TypeError) as e:
        raise CheckpointError(f"{folder / CONFIG_FILE}: HF {cfg['model_type']} config lacks or mistypes {e}") from None
    if hasattr(conv, "state_dict_from_hf_config"):  # a composite model (LLaVA): its parts' keys depend on the config
        return conv.MODEL_TYPE, _with_image_processor(fields, folder), conv.state_dict_from_hf_config(hf_state, cfg)
    return conv.MODEL_TYPE, _with_image_processor(fields, folder), conv.state_dict_from_hf(hf_state)


def _read_checkpoint(folder: Path) -> tuple[str, dict, dict]:
    """(vlkit model type, config fields, vlkit state dict) of any layout vlkit reads."""
    if (folder / OPEN_CLIP_CONFIG).is_file():
        return _read_open_clip(folder)
    config_path = folder / CONFIG_FILE
    if not config_path.is_file():
        raise FileNotFoundError(f"{folder} has no {CONFIG_FILE} (nor {OPEN_CLIP_CONFIG})")
    cfg = read_json(config_path, "a model config object")
    if "vlkit_model_type" in cfg:
        return _read_vlkit(folder, cfg)
    if cfg.get("model_type") in HF_CONVERTERS:
        return _read_hf(folder, cfg)
    raise CheckpointError(
        f"{config_path}: unknown checkpoint layout (model_type={cfg.get('model_type')!r}); vlkit reads its own "
        f"folders and HF model types {sorted(HF_CONVERTERS)}"
    )


def _tokenizer_source(folder: Path, model_type: str, fields: dict) -> Path | str | None:
    """Where the model's tokenizer is read from: the folder's tokenizer files; for an open_clip CLIP
    with no HF tokenizer named, open_clip's own (vlkit's "clip")."""
    from ..tokenizers.vocab_files import tokenizer_files

    if tokenizer_files(folder):
        return folder
    if (folder / OPEN_CLIP_CONFIG).is_file() and fields.get("text", {}).get("vocab_size") == 49408:
        cfg = read_json(folder / OPEN_CLIP_CONFIG)
        if not (cfg.get("model_cfg", cfg).get("text_cfg") or {}).get("hf_tokenizer_name"):
            return "clip"
    return None


def merge_fields(fields: dict, overrides: dict) -> dict:
    """``fields`` with ``overrides`` on top, nested mappings merged key by key (an override
    ``{"qformer": {"dropout": 0.1}}`` keeps the checkpoint's other Q-Former fields)."""
    out = dict(fields)
    for key, value in overrides.items():
        current = out.get(key)
        out[key] = merge_fields(current, value) if isinstance(value, dict) and isinstance(current, dict) else value
    return out


def _shapes_changed(model: Model, state: dict[str, torch.Tensor]) -> str | None:
    """The first parameter whose shape (or presence) differs between ``model`` and ``state``, or None."""
    own = model.state_dict()
    for key in sorted(own):
        if key in state and state[key].shape != own[key].shape:
            return f"{key} {tuple(state[key].shape)} -> {tuple(own[key].shape)}"
    extra = sorted(set(state) - set(own))
    return f"{extra[0]} (dropped)" if extra else None


def from_pretrained(source: str | os.PathLike, **config_overrides) -> Model:
    """Load a model from a vlkit folder (config.json + model.safetensors), an HF transformers
    folder, an open_clip checkpoint folder, or a hub id (downloaded when the network is there).
    The folder's tokenizer, if it has one, comes with the model (``model.tokenizer``).

    ``config_overrides`` replace config fields (nested configs key by key:
    ``qformer={"dropout": 0.1}``); an override that changes the weights' shapes is an error."""
    folder = _resolve(source)
    model_type, fields, state = _read_checkpoint(folder)
    if model_type not in FAMILIES:
        raise CheckpointError(f"{folder}: unknown vlkit model type {model_type!r}; expected one of {sorted(FAMILIES)}")
    model_cls = FAMILIES[model_type]
    try:
        config = config_from_dict(model_cls.config_class, merge_fields(fields, config_overrides))
    except (ValueError, TypeError) as e:
        where = folder / (OPEN_CLIP_CONFIG if (folder / OPEN_CLIP_CONFIG).is_file() else CONFIG_FILE)
        raise CheckpointError(f"{where}: {e}") from None
    model = model_cls(config)
    changed = _shapes_changed(model, state) if config_overrides else None
    if changed is not None:
        raise CheckpointError(
            f"{folder}: the config overrides {sorted(config_overrides)} change the checkpoint's weights "
            f"({changed}); a pretrained model takes only overrides that keep its shapes (dropout, ...)"
        )
    model.load_weights(state, source=str(folder))
    model.tokenizer = _tokenizer_source(folder, model_type, fields)
    return model.eval()
