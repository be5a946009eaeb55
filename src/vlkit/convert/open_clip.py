"""open_clip checkpoints -> vlkit CLIP.

open_clip publishes a folder with ``open_clip_config.json`` (``{"model_cfg": {...},
"preprocess_cfg": {...}}``) beside ``open_clip_model.safetensors`` or
``open_clip_pytorch_model.bin``. Its ViT-text CLIP stores attention as ``nn.MultiheadAttention``
(``in_proj_weight`` already fused q, k, v, as vlkit's ``qkv``), the projections as (in, out)
matrices used as ``x @ proj`` (vlkit: ``nn.Linear`` weights, transposed), and the text tower at
the top level (``CLIP``) or under ``text.`` (``CustomTextCLIP``).
"""
from __future__ import annotations

import math

from ..constants import CLIP_MEAN, CLIP_STD
from .keys import StateDict, rename_keys

MODEL_TYPE = "clip"


_BLOCK = [
    (r"ln_1\.(.*)", r"norm1.\1"),
    (r"attn\.in_proj_(weight|bias)", r"attn.qkv.\1"),
    (r"attn\.out_proj\.(.*)", r"attn.proj.\1"),
    (r"ln_2\.(.*)", r"norm2.\1"),
    (r"mlp\.c_fc\.(.*)", r"mlp.fc1.\1"),
    (r"mlp\.c_proj\.(.*)", r"mlp.fc2.\1"),
]
_T = r"(?:text\.)?"  # CustomTextCLIP keeps the text tower under "text."
_RULES = [
    (r"visual\.conv1\.weight", r"visual.patch_embed.proj.weight"),
    (r"visual\.class_embedding", r"visual.cls_token"),
    (r"visual\.positional_embedding", r"visual.pos_embed"),
    (r"visual\.ln_pre\.(.*)", r"visual.norm_pre.\1"),
    (r"visual\.ln_post\.(.*)", r"visual.norm.\1"),
    (r"visual\.proj", r"image_proj.weight"),
    (_T + r"token_embedding\.weight", r"text.token_embed.weight"),
    (_T + r"positional_embedding", r"text.pos_embed.weight"),
    (_T + r"ln_final\.(.*)", r"text.norm.\1"),
    (_T + r"text_projection", r"text_proj.weight"),
] + [
    (r"visual\.transformer\.resblocks\.(\d+)\." + p, r"visual.encoder.blocks.\1." + r.replace(r"\1", r"\2"))
    for p, r in _BLOCK
] + [
    (_T + r"transformer\.resblocks\.(\d+)\." + p, r"text.encoder.blocks.\1." + r.replace(r"\1", r"\2"))
    for p, r in _BLOCK
]

# open_clip options vlkit's CLIP does not have; a checkpoint using one is refused by name.
_VISION_DEFAULTS = dict(
    ls_init_value=None, attentional_pool=False, pos_embed_type="learnable", pool_type="tok", block_type=None,
    qk_norm=False, scaled_cosine_attn=False, scale_heads=False, scale_attn_inner=False, scale_attn=False,
    scale_fc=False, timm_model_name=None, act_kwargs=None,
)
_TEXT_DEFAULTS = dict(
    hf_model_name=None, ls_init_value=None, embed_cls=False, no_causal_mask=False, proj_bias=False,
    proj_type="linear", block_type=None, qk_norm=False, scaled_cosine_attn=False, scale_heads=False,
    scale_attn_inner=False, scale_attn=False, scale_fc=False, act_kwargs=None,
)


def _check(cfg: dict, defaults: dict, tower: str) -> None:
    same = lambda k: cfg[k] in (defaults[k], None) or (k == "block_type" and cfg[k] == "default")  # noqa: E731
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
            image_size=_square(v.get("image_size", 224), "images"), patch_size=_square(v.get("patch_size", 16), "patches"),
            width=width, depth=v.get("layers", 12), num_heads=width // v.get("head_width", 64),
            mlp_dim=int(width * v.get("mlp_ratio", 4.0)), act=act, norm_eps=_norm_eps(v, "vision"),
            qkv_bias=True, patch_bias=False, pre_norm=not v.get("no_ln_pre", False),
            image_mean=tuple(pre.get("mean", CLIP_MEAN)), image_std=tuple(pre.get("std", CLIP_STD)),
            resize_mode=resize_mode, interpolation=pre.get("interpolation", "bicubic"),
        ),
        text=dict(
            vocab_size=t.get("vocab_size", 49408), context_length=t.get("context_length", 77), width=t_width,
            depth=t.get("layers", 12), num_heads=t.get("heads", 8), mlp_dim=int(t_width * t.get("mlp_ratio", 4.0)),
            act=act, norm_eps=_norm_eps(t, "text"), eos_token_id=t.get("eos_id", 2) if pool == "eos" else None,
        ),
        embed_dim=model_cfg["embed_dim"],
        init_logit_scale=model_cfg.get("init_logit_scale", math.log(1 / 0.07)),
    )


def state_dict_from_open_clip(state: StateDict) -> StateDict:
    state = rename_keys(state, _RULES, drop=(r"(?:text\.)?attn_mask",))
    for key, shape in (("visual.cls_token", (1, 1, -1)), ("logit_scale", ())):
        if key in state:
            state[key] = state[key].reshape(shape)
    if "visual.pos_embed" in state:
        state["visual.pos_embed"] = state["visual.pos_embed"].unsqueeze(0)  # (1 + N, C) -> (1, 1 + N, C)
    for key in ("image_proj.weight", "text_proj.weight"):
        if key in state:
            state[key] = state[key].t().contiguous()  # open_clip (in, out) -> nn.Linear (out, in)
    return state
