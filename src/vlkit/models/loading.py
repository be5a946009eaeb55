"""``from_pretrained``: vlkit folders, HF transformers folders, open_clip checkpoints, hub ids."""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from ..convert import HF_CONVERTERS
from ..convert.hf_image_processor import image_fields_from_hf
from .base import CONFIG_FILE, WEIGHTS_FILE, CheckpointError, Model
from .registry import FAMILIES, config_from_dict


def read_weights(folder: Path, stem: str = "model") -> dict[str, torch.Tensor]:
    """Read ``<stem>.safetensors`` (sharded or not) or ``pytorch_model.bin`` without running pickle code."""
    from safetensors.torch import load_file

    single = folder / f"{stem}.safetensors"
    if single.is_file():
        return load_file(single)
    index = folder / f"{stem}.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        out: dict[str, torch.Tensor] = {}
        for shard in shards:
            out.update(load_file(folder / shard))
        return out
    for name in (f"{stem}_pytorch_model.bin" if stem != "model" else "pytorch_model.bin", f"{stem}.bin"):
        path = folder / name
        if path.is_file():
            state = torch.load(path, map_location="cpu", weights_only=True)
            return state.get("state_dict", state) if isinstance(state, dict) else state
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
            return Path(snapshot_download(text, allow_patterns=["*.json", "*.safetensors", "*.bin", "*.txt", "*.model"]))
        except Exception as e:
            raise FileNotFoundError(f"{source!r} is not a local folder and could not be downloaded from the hub: {e}") from e
    raise FileNotFoundError(f"checkpoint folder {source!r} does not exist")


def _with_image_processor(fields: dict, path: Path) -> dict:
    """The checkpoint's own preprocessing (mean, std, resampling, crop) into its vision config."""
    if not path.is_file():
        return fields
    image = image_fields_from_hf(json.loads(path.read_text()))
    if "vision" in fields:
        return {**fields, "vision": {**fields["vision"], **image}}
    if "image_size" in fields:  # a ViT
        return {**fields, **image}
    return fields


def from_pretrained(source: str | os.PathLike, **config_overrides) -> Model:
    """Load a model from a vlkit folder (config.json + model.safetensors), an HF transformers
    folder, an open_clip checkpoint folder, or a hub id (downloaded when the network is there)."""
    folder = _resolve(source)
    if (folder / "open_clip_config.json").is_file():
        from ..convert import open_clip as oc

        cfg = json.loads((folder / "open_clip_config.json").read_text())
        state = read_weights(folder, "open_clip_model") if (folder / "open_clip_model.safetensors").is_file() \
            else read_weights(folder, "open_clip_pytorch_model")
        model_type, fields, state = oc.MODEL_TYPE, oc.config_from_open_clip(cfg, state), oc.state_dict_from_open_clip(state)
    else:
        config_path = folder / CONFIG_FILE
        if not config_path.is_file():
            raise FileNotFoundError(f"{folder} has no {CONFIG_FILE} (nor open_clip_config.json)")
        cfg = json.loads(config_path.read_text())
        if "vlkit_model_type" in cfg:
            model_type, fields = cfg["vlkit_model_type"], cfg["config"]
            state = read_weights(folder)
        elif cfg.get("model_type") in HF_CONVERTERS:
            conv = HF_CONVERTERS[cfg["model_type"]]
            archs = cfg.get("architectures") or []
            if archs and not set(archs) & set(conv.ARCHITECTURES):
                raise CheckpointError(
                    f"{folder}: architecture {archs} is not supported for model_type {cfg['model_type']!r}; "
                    f"expected one of {conv.ARCHITECTURES}"
                )
            hf_state = read_weights(folder)
            model_type, fields, state = conv.MODEL_TYPE, conv.config_from_hf(cfg, hf_state), conv.state_dict_from_hf(hf_state)
            fields = _with_image_processor(fields, folder / "preprocessor_config.json")
        else:
            raise CheckpointError(
                f"{config_path}: unknown checkpoint layout (model_type={cfg.get('model_type')!r}); vlkit reads its own "
                f"folders and HF model types {sorted(HF_CONVERTERS)}"
            )
    if model_type not in FAMILIES:
        raise CheckpointError(f"{folder}: unknown vlkit model type {model_type!r}")
    model_cls = FAMILIES[model_type]
    config = config_from_dict(model_cls.config_class, {**fields, **config_overrides})
    model = model_cls(config)
    model.load_weights(state, source=str(folder))
    return model.eval()
