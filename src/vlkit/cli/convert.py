"""``vlkit convert SOURCE --to vlkit|hf|open_clip OUT``: rewrite a checkpoint in another layout.

SOURCE is what every ``--model`` takes (:func:`vlkit.eval.load_model`): a model folder (vlkit,
HF transformers, open_clip), a run folder, a training checkpoint (.pt), or a hub id. ``--to vlkit`` writes config.json + model.safetensors and the tokenizer;
``--to hf`` the folder HF transformers loads as is (BERT, GPT-2, ViT, CLIP, BLIP), tokenizer and
processor included; ``--to open_clip`` the folder ``open_clip.create_model_and_transforms
("local-dir:OUT")`` loads (CLIP). OUT is written whole or not at all, and an existing OUT is
replaced only with ``--overwrite``.
"""

from __future__ import annotations

from pathlib import Path

import vlkit

from ..convert.hf_export import save_hf
from ..convert.open_clip import save_open_clip
from ..eval.resolve import load_model, load_tokenizer, model_source
from ..files import new_folder

# The tokenizer a family's recipes train with when none is named: used for a model folder that
# holds none (a `vlkit train` run writes the model without it), when the vocabulary size matches.
RECIPE_TOKENIZERS = {
    "clip": ("clip", 49408),
    "siglip": ("clip", 49408),
    "blip": ("bert-base-uncased", 30524),
    "bert": ("bert-base-uncased", 30522),
}


def add_commands(commands) -> None:
    p = commands.add_parser("convert", help="rewrite a checkpoint as a vlkit, HF transformers or open_clip folder")
    p.add_argument(
        "source",
        help="model folder (vlkit, HF transformers, open_clip), run folder, training checkpoint (.pt), or hub id",
    )
    p.add_argument("--to", choices=("hf", "vlkit", "open_clip"), required=True, help="layout to write")
    p.add_argument("out", help="output folder (written whole; must not exist unless --overwrite)")
    p.add_argument(
        "--tokenizer", help="tokenizer to write with the model (name, folder or file); default: the source's own"
    )
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    p.set_defaults(run=run_convert)


def _tokenizer(model, args):
    """--tokenizer, else a training checkpoint's recipe's, else the model's own, else the one its
    family's recipes use (with a note)."""
    if args.tokenizer:
        return vlkit.get_tokenizer(args.tokenizer)
    if model_source(args.source).suffix == ".pt":
        return load_tokenizer(args.source, model)
    if model.tokenizer is not None or args.to == "vlkit":
        return model.tokenizer
    name, size = RECIPE_TOKENIZERS.get(model.model_type, (None, None))
    text = getattr(model.config, "text", model.config)
    if name is None or getattr(text, "vocab_size", None) != size:
        return None  # the writer names what is missing
    print(
        f"note: {args.source} holds no tokenizer; writing vlkit's {name!r} tokenizer, which {model.model_type} "
        f"recipes train with and whose {size} tokens match the model (--tokenizer chooses another)"
    )
    return vlkit.get_tokenizer(name)


def run_convert(args) -> int:
    out = Path(args.out)
    if out.exists() and not args.overwrite:  # before the (slow) load; new_folder checks again
        raise ValueError(f"{out} already exists; choose another output or pass --overwrite to replace it")
    model = load_model(args.source)  # a model folder, a run folder, a training checkpoint, a hub id
    tokenizer = _tokenizer(model, args)
    with new_folder(out, overwrite=args.overwrite) as tmp:
        if args.to == "hf":
            save_hf(model, tmp, tokenizer=tokenizer)
        elif args.to == "open_clip":
            save_open_clip(model, tmp, tokenizer=tokenizer)
        else:
            model.save_pretrained(tmp, tokenizer=tokenizer)
    print(f"wrote {args.to} checkpoint of {type(model).__name__} ({model.num_parameters():,} parameters) to {out}")
    return 0
