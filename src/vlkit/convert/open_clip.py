"""open_clip checkpoints <-> vlkit CLIP, both ways.

open_clip publishes a folder with ``open_clip_config.json`` (``{"model_cfg": {...},
"preprocess_cfg": {...}}``) beside ``open_clip_model.safetensors`` or
``open_clip_pytorch_model.bin``. Its ViT-text CLIP stores attention as ``nn.MultiheadAttention``
(``in_proj_weight`` already fused q, k, v, as vlkit's ``qkv``), the projections as (in, out)
matrices used as ``x @ proj`` (vlkit: ``nn.Linear`` weights, transposed), and the text tower at
the top level (``CLIP``) or under ``text.`` (``CustomTextCLIP``). vlkit writes the ``CLIP``
layout, which ``open_clip.create_model_and_transforms("local-dir:FOLDER")`` loads.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from ..constants import CLIP_MEAN, CLIP_STD
from ..files import write_file, write_text
from .keys import StateDict, pair_rules, prefixed, rename_keys, strip_prefix

MODEL_TYPE = "clip"
CONFIG_FILE = "open_clip_config.json"
WEIGHTS_FILE = "open_clip_model.safetensors"

_BLOCK = [
    ("ln_1", "norm1"),
    ("attn.in_proj_weight", "attn.qkv.weight"),
    ("attn.in_proj_bias", "attn.qkv.bias"),
    ("attn.out_proj", "attn.proj"),
    ("ln_2", "norm2"),
    ("mlp.c_fc", "mlp.fc1"),
    ("mlp.c_proj", "mlp.fc2"),
]
_PAIRS = [
    ("visual.conv1.weight", "visual.patch_embed.proj.weight"),
    ("visual.class_embedding", "visual.cls_token"),
    ("visual.positional_embedding", "visual.pos_embed"),
    ("visual.ln_pre", "visual.norm_pre"),
    ("visual.ln_post", "visual.norm"),
    ("visual.proj", "image_proj.weight"),
    ("token_embedding.weight", "text.token_embed.weight"),
    ("positional_embedding", "text.pos_embed.weight"),
    ("ln_final", "text.norm"),
    ("text_projection", "text_proj.weight"),
]
_PAIRS += prefixed([(f"transformer.resblocks.#.{a}", f"encoder.blocks.#.{b}") for a, b in _BLOCK], "visual.", "visual.")
_PAIRS += prefixed([(f"transformer.resblocks.#.{a}", f"encoder.blocks.#.{b}") for a, b in _BLOCK], "", "text.")

# open_clip options vlkit's CLIP does not have; a checkpoint using one is refused by name.
_BLOCK_DEFAULTS = dict(  # the transformer block options of both towers
    ls_init_value=None,
    block_type=None,
    qk_norm=False,
    scaled_cosine_attn=False,
    scale_heads=False,
    scale_attn_inner=False,
    scale_attn=False,
    scale_fc=False,
    act_kwargs=None,
)
_VISION_DEFAULTS = dict(
    _BLOCK_DEFAULTS,
    attentional_pool=False,
    pos_embed_type="learnable",
    pool_type="tok",
    timm_model_name=None,
)
_TEXT_DEFAULTS = dict(
    _BLOCK_DEFAULTS,
    hf_model_name=None,
    embed_cls=False,
    no_causal_mask=False,
    proj_bias=False,
    proj_type="linear",
)


def _check(cfg: dict, defaults: dict, tower: str) -> None:
    same = lambda k: cfg[k] in (defaults[k], None) or (k == "block_type" and cfg[k] == "default")
    bad = {k: cfg[k] for k in defaults if k in cfg and not same(k)}
    if bad:
        raise ValueError(f"open_clip {tower} options {bad} are not supported by vlkit's CLIP")


def _norm_eps(cfg: dict, tower: str) -> float:
    kwargs = dict(cfg.get("norm_kwargs") or {})
    eps = kwargs.pop("eps", 1e-5)
    if kwargs:
        raise ValueError(f"open_clip {tower} norm_kwargs {kwargs} are not supported (only eps)")
    return eps


def _square(value, name: str) -> int:
    if isinstance(value, (list, tuple)):
        if len(set(value)) != 1:
            raise ValueError(f"only square {name} are supported, got {value}")
        value = value[0]
    return int(value)


def config_from_open_clip(cfg: dict, state: StateDict) -> dict:
    """``open_clip_config.json`` (or a bare ``model_cfg`` dict) -> vlkit CLIPConfig fields."""
    model_cfg = cfg.get("model_cfg", cfg)
    pre = cfg.get("preprocess_cfg") or {}
    v, t = dict(model_cfg.get("vision_cfg") or {}), dict(model_cfg.get("text_cfg") or {})
    if isinstance(v.get("layers", 12), (list, tuple)):
        raise ValueError("open_clip ResNet image towers (ModifiedResNet) are not supported; vlkit's CLIP has a ViT")
    _check(v, _VISION_DEFAULTS, "vision_cfg")
    _check(t, _TEXT_DEFAULTS, "text_cfg")
    if model_cfg.get("multimodal_cfg"):
        raise ValueError("open_clip CoCa models (multimodal_cfg) are not supported; vlkit's CLIP has two towers only")
    if model_cfg.get("init_logit_bias") is not None or "logit_bias" in state:
        raise ValueError("open_clip models with a logit_bias (SigLIP-style sigmoid loss) are not supported")
    pool = t.get("pool_type", "argmax")
    if pool not in ("argmax", "eos"):
        raise ValueError(f"open_clip text pool_type {pool!r} is not supported; expected 'argmax' or 'eos'")
    resize_mode = pre.get("resize_mode", "shortest")
    if resize_mode not in ("shortest", "squash"):
        raise ValueError(f"open_clip resize_mode {resize_mode!r} is not supported; expected 'shortest' or 'squash'")
    act = "quick_gelu" if model_cfg.get("quick_gelu", False) else "gelu"
    width, t_width = v.get("width", 768), t.get("width", 512)
    return dict(
        vision=dict(
            image_size=_square(v.get("image_size", 224), "images"),
            patch_size=_square(v.get("patch_size", 16), "patches"),
            width=width,
            depth=v.get("layers", 12),
            num_heads=width // v.get("head_width", 64),
            mlp_dim=int(width * v.get("mlp_ratio", 4.0)),
            act=act,
            norm_eps=_norm_eps(v, "vision"),
            qkv_bias=True,
            patch_bias=False,
            pre_norm=not v.get("no_ln_pre", False),
            image_mean=tuple(pre.get("mean", CLIP_MEAN)),
            image_std=tuple(pre.get("std", CLIP_STD)),
            resize_mode=resize_mode,
            interpolation=pre.get("interpolation", "bicubic"),
        ),
        text=dict(
            vocab_size=t.get("vocab_size", 49408),
            context_length=t.get("context_length", 77),
            width=t_width,
            depth=t.get("layers", 12),
            num_heads=t.get("heads", 8),
            mlp_dim=int(t_width * t.get("mlp_ratio", 4.0)),
            act=act,
            norm_eps=_norm_eps(t, "text"),
            eos_token_id=t.get("eos_id", 2) if pool == "eos" else None,
        ),
        embed_dim=model_cfg["embed_dim"],
        init_logit_scale=model_cfg.get("init_logit_scale", math.log(1 / 0.07)),
    )


def state_dict_from_open_clip(state: StateDict) -> StateDict:
    state = strip_prefix(state, "text.")  # CustomTextCLIP's text tower is CLIP's top level
    state = rename_keys(state, pair_rules(_PAIRS), drop=(r"attn_mask",))
    for key, shape in (("visual.cls_token", (1, 1, -1)), ("logit_scale", ())):
        if key in state:
            state[key] = state[key].reshape(shape)
    if "visual.pos_embed" in state:
        state["visual.pos_embed"] = state["visual.pos_embed"].unsqueeze(0)  # (1 + N, C) -> (1, 1 + N, C)
    for key in ("image_proj.weight", "text_proj.weight"):
        if key in state:
            state[key] = state[key].t().contiguous()  # open_clip (in, out) -> nn.Linear (out, in)
    return state


def config_to_open_clip(config) -> dict:
    """vlkit CLIPConfig -> ``open_clip_config.json`` (``model_cfg`` and ``preprocess_cfg``)."""
    v, t = config.vision, config.text
    acts = {v.act, t.act}
    unsupported = [
        name
        for name, bad in (
            ("vision.patch_bias=True", v.patch_bias),
            ("vision.qkv_bias=False", not v.qkv_bias),
            ("vision.pooler=True", v.pooler),
            (
                f"activations {sorted(acts)} (one of gelu, quick_gelu for both towers)",
                len(acts) > 1 or not acts <= {"gelu", "quick_gelu"},
            ),
            (f"interpolation={v.interpolation!r}", v.interpolation not in ("bicubic", "bilinear")),
            (
                "mlp sizes that are no multiple of the width",
                int(v.width * (v.mlp_dim / v.width)) != v.mlp_dim or int(t.width * (t.mlp_dim / t.width)) != t.mlp_dim,
            ),
        )
        if bad
    ]
    if unsupported:
        raise ValueError(f"open_clip's CLIP cannot represent {', '.join(unsupported)}")
    vision = dict(
        image_size=v.image_size,
        patch_size=v.patch_size,
        width=v.width,
        layers=v.depth,
        head_width=v.width // v.num_heads,
        mlp_ratio=v.mlp_dim / v.width,
        no_ln_pre=not v.pre_norm,
    )
    text = dict(
        context_length=t.context_length,
        vocab_size=t.vocab_size,
        width=t.width,
        heads=t.num_heads,
        layers=t.depth,
        mlp_ratio=t.mlp_dim / t.width,
        pool_type="argmax" if t.eos_token_id is None else "eos",
    )
    if t.eos_token_id is not None:
        text["eos_id"] = t.eos_token_id
    for cfg, eps in ((vision, v.norm_eps), (text, t.norm_eps)):
        if eps != 1e-5:  # open_clip's LayerNorm default
            cfg["norm_kwargs"] = {"eps": eps}
    model_cfg = dict(
        embed_dim=config.embed_dim,
        quick_gelu=v.act == "quick_gelu",
        vision_cfg=vision,
        text_cfg=text,
        init_logit_scale=config.init_logit_scale,
    )
    preprocess = dict(
        size=v.image_size,
        mode="RGB",
        mean=list(v.image_mean),
        std=list(v.image_std),
        interpolation=v.interpolation,
        resize_mode=v.resize_mode,
    )
    return {"model_cfg": model_cfg, "preprocess_cfg": preprocess}


def state_dict_to_open_clip(state: StateDict) -> StateDict:
    """vlkit CLIP state dict -> open_clip ``CLIP`` keys and shapes."""
    state = dict(state)
    if "visual.cls_token" in state:
        state["visual.cls_token"] = state["visual.cls_token"].reshape(-1)  # (1, 1, C) -> (C,)
    if "visual.pos_embed" in state:
        state["visual.pos_embed"] = state["visual.pos_embed"].squeeze(0)  # (1, 1 + N, C) -> (1 + N, C)
    for key in ("image_proj.weight", "text_proj.weight"):
        if key in state:
            state[key] = state[key].t()  # nn.Linear (out, in) -> open_clip (in, out)
    return {k: v.contiguous() for k, v in rename_keys(state, pair_rules(_PAIRS, reverse=True)).items()}


def check_tokenizer(tok) -> None:
    """open_clip tokenizes CLIP models with its own BPE (vlkit's "clip"); refuse any other tokenizer."""
    from ..tokenizers import get_tokenizer
    from ..tokenizers.clip import CLIPTokenizer

    clip = get_tokenizer("clip")
    assert isinstance(clip, CLIPTokenizer)
    same = (
        isinstance(tok, CLIPTokenizer)
        and tok.get_vocab() == clip.get_vocab()
        and tok.merges == clip.merges
        and tok.clean == clip.clean
        and tok.pad_id == clip.pad_id
    )
    if not same:
        raise ValueError(
            "open_clip tokenizes with CLIP's own BPE, and this model's tokenizer is another one; "
            "export it with --to hf, which writes the tokenizer"
        )


def save_open_clip(model, out: str | os.PathLike, tokenizer=None) -> Path:
    """Write a vlkit CLIP as an open_clip folder: ``open_clip_config.json`` + ``open_clip_model.safetensors``."""
    from safetensors.torch import save_file

    if model.model_type != MODEL_TYPE:
        raise ValueError(f"open_clip holds CLIP models; this is a {model.model_type!r} model")
    config = config_to_open_clip(model.config)
    tok = tokenizer if tokenizer is not None else model.tokenizer
    if tok is None:
        raise ValueError("this CLIP has no tokenizer to check against open_clip's; give one (convert --tokenizer)")
    check_tokenizer(tok)
    state = state_dict_to_open_clip({k: v.detach().cpu() for k, v in model.state_dict().items()})
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / CONFIG_FILE, json.dumps(config, indent=2) + "\n")
    write_file(out / WEIGHTS_FILE, lambda tmp: save_file(state, str(tmp), metadata={"format": "pt"}))
    return out
