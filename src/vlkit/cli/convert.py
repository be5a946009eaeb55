"""``vlkit convert SOURCE --to hf|vlkit OUT``: rewrite a checkpoint in another layout.

SOURCE is anything ``vlkit.from_pretrained`` reads (a vlkit, HF transformers or open_clip
folder, or a hub id). ``--to vlkit`` writes config.json + model.safetensors; ``--to hf`` writes
the folder HF transformers loads (for families whose converter can write one: CLIP).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from ..eval.resolve import load_model, model_source

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json", "merges.txt",
                   "vocab.txt")


def add_commands(commands) -> None:
    p = commands.add_parser("convert", help="rewrite a checkpoint as a vlkit or HF transformers folder")
    p.add_argument("source", help="model folder (vlkit, HF transformers, open_clip), run folder, training checkpoint "
                                  "(.pt), or hub id")
    p.add_argument("--to", choices=("hf", "vlkit"), required=True, help="layout to write")
    p.add_argument("out", help="output folder")
    p.set_defaults(run=run_convert)


def hf_writer(model_type: str):
    """The converter module that can write ``model_type`` as an HF checkpoint."""
    from ..convert import HF_CONVERTERS

    for conv in HF_CONVERTERS.values():
        if conv.MODEL_TYPE == model_type and hasattr(conv, "state_dict_to_hf"):
            return conv
    writable = sorted(c.MODEL_TYPE for c in HF_CONVERTERS.values() if hasattr(c, "state_dict_to_hf"))
    raise ValueError(f"converting a {model_type!r} model to HF is not supported; supported families: {writable}")


def save_hf(model, out: str | Path) -> Path:
    """Write ``model`` as an HF transformers folder: config.json, model.safetensors and, where the
    converter has one, preprocessor_config.json."""
    from safetensors.torch import save_file

    conv = hf_writer(model.model_type)
    config = conv.config_to_hf(model.config)
    state = conv.state_dict_to_hf({k: v.detach().cpu() for k, v in model.state_dict().items()})
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    if hasattr(conv, "preprocessor_config_to_hf"):
        (out / "preprocessor_config.json").write_text(json.dumps(conv.preprocessor_config_to_hf(model.config), indent=2) + "\n")
    return out


def run_convert(args) -> int:
    model = load_model(args.source)  # a model folder, a run folder, a training checkpoint, a hub id
    out = save_hf(model, args.out) if args.to == "hf" else model.save_pretrained(args.out)
    src = model_source(args.source)
    for name in TOKENIZER_FILES:  # the tokenizer travels with the weights
        if (src / name).is_file():
            shutil.copyfile(src / name, Path(out) / name)
    print(f"wrote {args.to} checkpoint of {type(model).__name__} ({sum(p.numel() for p in model.parameters()):,} "
          f"parameters) to {out}")
    return 0
