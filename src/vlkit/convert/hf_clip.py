"""HF transformers CLIPModel <-> vlkit CLIP, both directions.

HF keeps q, k and v projections apart (vlkit fuses them into ``qkv``), stores the [CLS] vector
as (C,) and position embeddings as an ``nn.Embedding`` (vlkit: (1, 1, C) and (1, 1 + N, C)),
and pools text at the end-of-text token: at the first ``eos_token_id``, or at the largest id
when ``eos_token_id == 2`` (the value old configs carry, kept by HF as an "argmax" switch).
"""

from __future__ import annotations

from ..constants import CLIP_VISION
from .hf_image_processor import image_processor_to_hf
from .keys import StateDict, fields_to_hf, fuse, pair_rules, rename_keys, split

MODEL_TYPE = "clip"
ARCHITECTURES = ("CLIPModel",)
TOKENIZER_CLASS = "CLIPTokenizer"

_HF_ARGMAX_EOS = 2  # HF's legacy eos_token_id meaning "pool at the largest id"

# HF name <-> vlkit name; "#" is a layer index, a trailing ".weight"/".bias" is carried over.
_PAIRS = [
    ("text_model.embeddings.token_embedding", "text.token_embed"),
    ("text_model.embeddings.position_embedding", "text.pos_embed"),
    ("text_model.final_layer_norm", "text.norm"),
    ("vision_model.embeddings.class_embedding", "visual.cls_token"),
    ("vision_model.embeddings.patch_embedding", "visual.patch_embed.proj"),
    ("vision_model.embeddings.position_embedding.weight", "visual.pos_embed"),
    ("vision_model.pre_layrnorm", "visual.norm_pre"),
    ("vision_model.post_layernorm", "visual.norm"),
    ("visual_projection", "image_proj"),
    ("text_projection", "text_proj"),
    ("logit_scale", "logit_scale"),
]
for _hf, _vl in (("text_model", "text"), ("vision_model", "visual")):
    _PAIRS += [
        (f"{_hf}.encoder.layers.#.self_attn.{p}_proj", f"{_vl}.encoder.blocks.#.attn.qkv.{p}") for p in "qkv"
    ] + [
        (f"{_hf}.encoder.layers.#.self_attn.out_proj", f"{_vl}.encoder.blocks.#.attn.proj"),
        (f"{_hf}.encoder.layers.#.layer_norm1", f"{_vl}.encoder.blocks.#.norm1"),
        (f"{_hf}.encoder.layers.#.layer_norm2", f"{_vl}.encoder.blocks.#.norm2"),
        (f"{_hf}.encoder.layers.#.mlp.fc1", f"{_vl}.encoder.blocks.#.mlp.fc1"),
        (f"{_hf}.encoder.layers.#.mlp.fc2", f"{_vl}.encoder.blocks.#.mlp.fc2"),
    ]


_ACT_FROM_HF = {
    "quick_gelu": "quick_gelu",
    "gelu": "gelu",
    "gelu_new": "gelu_tanh",
    "gelu_pytorch_tanh": "gelu_tanh",
    "relu": "relu",
}
_ACT_TO_HF = {"quick_gelu": "quick_gelu", "gelu": "gelu", "gelu_tanh": "gelu_pytorch_tanh", "relu": "relu"}


# (vlkit field, HF config.json field, HF's default where a config.json omits it), read both ways
_VISION_FIELDS = (
    ("image_size", "image_size", 224),
    ("patch_size", "patch_size", 32),
    ("in_channels", "num_channels", 3),
    ("width", "hidden_size", 768),
    ("mlp_dim", "intermediate_size", 3072),
    ("depth", "num_hidden_layers", 12),
    ("num_heads", "num_attention_heads", 12),
    ("norm_eps", "layer_norm_eps", 1e-5),
)
_TEXT_FIELDS = (
    ("vocab_size", "vocab_size", 49408),
    ("width", "hidden_size", 512),
    ("mlp_dim", "intermediate_size", 2048),
    ("depth", "num_hidden_layers", 12),
    ("num_heads", "num_attention_heads", 8),
    ("context_length", "max_position_embeddings", 77),
    ("norm_eps", "layer_norm_eps", 1e-5),
)


def _act(name: str, tower: str) -> str:
    if name not in _ACT_FROM_HF:
        raise ValueError(f"CLIP {tower} activation {name!r} is not supported; expected one of {sorted(_ACT_FROM_HF)}")
    return _ACT_FROM_HF[name]


def _sub_config(hf: dict, name: str) -> dict:
    # old hub configs carry "<name>_dict" beside "<name>"; HF lets the _dict version win
    return {**(hf.get(name) or {}), **(hf.get(f"{name}_dict") or {})}


def _fields_from_hf(hf: dict, fields: tuple) -> dict:
    return {name: hf.get(hf_name, default) for name, hf_name, default in fields}


def config_from_hf(hf: dict, state_dict: StateDict) -> dict:
    """HF CLIPConfig (config.json as a dict) -> vlkit CLIPConfig fields (HF's defaults where absent)."""
    t, v = _sub_config(hf, "text_config"), _sub_config(hf, "vision_config")
    vision, text = _fields_from_hf(v, _VISION_FIELDS), _fields_from_hf(t, _TEXT_FIELDS)
    if isinstance(vision["image_size"], (list, tuple)) or isinstance(vision["patch_size"], (list, tuple)):
        raise ValueError("only square images and patches are supported for CLIP checkpoints")
    eos = t.get("eos_token_id", 49407)
    if isinstance(eos, (list, tuple)):
        raise ValueError(f"CLIP text eos_token_id must be one id, got {eos}")
    return dict(
        # CLIP's image tower (constants.CLIP_VISION) with the checkpoint's sizes and activation
        vision={**CLIP_VISION, **vision, "act": _act(v.get("hidden_act", "quick_gelu"), "vision")},
        text=dict(
            text,
            act=_act(t.get("hidden_act", "quick_gelu"), "text"),
            eos_token_id=None if eos == _HF_ARGMAX_EOS else eos,
        ),
        embed_dim=hf.get("projection_dim", 512),
        init_logit_scale=hf.get("logit_scale_init_value", 2.6592),
    )


def state_dict_from_hf(state_dict: StateDict) -> StateDict:
    state = rename_keys(state_dict, pair_rules(_PAIRS), drop=(r".*position_ids",))
    state = fuse(state, "qkv", ("q", "k", "v"))
    if "visual.cls_token" in state:
        state["visual.cls_token"] = state["visual.cls_token"].reshape(1, 1, -1)  # (C,) -> (1, 1, C)
    if "visual.pos_embed" in state:
        state["visual.pos_embed"] = state["visual.pos_embed"].unsqueeze(0)  # (1 + N, C) -> (1, 1 + N, C)
    return state


def config_to_hf(config) -> dict:
    """vlkit CLIPConfig -> an HF CLIPModel config.json dict."""
    v, t = config.vision, config.text
    unsupported = [
        name
        for name, bad in (
            ("vision.pre_norm=False", not v.pre_norm),
            ("vision.patch_bias=True", v.patch_bias),
            ("vision.qkv_bias=False", not v.qkv_bias),
            ("vision.pooler=True", v.pooler),
            ("text.eos_token_id=2 (HF reads 2 as 'pool at the largest id')", t.eos_token_id == _HF_ARGMAX_EOS),
        )
        if bad
    ]
    if unsupported:
        raise ValueError(f"HF CLIPModel cannot represent {', '.join(unsupported)}")
    for tower, act in (("vision", v.act), ("text", t.act)):
        if act not in _ACT_TO_HF:
            raise ValueError(f"CLIP {tower} activation {act!r} has no HF equivalent")
    in_vocab = lambda i: i if i < t.vocab_size else None
    return {
        "architectures": list(ARCHITECTURES),
        "model_type": "clip",
        "projection_dim": config.embed_dim,
        "logit_scale_init_value": config.init_logit_scale,
        "text_config": {
            **fields_to_hf(t, _TEXT_FIELDS),
            "hidden_act": _ACT_TO_HF[t.act],
            "projection_dim": config.embed_dim,
            "eos_token_id": _HF_ARGMAX_EOS if t.eos_token_id is None else t.eos_token_id,
            "bos_token_id": in_vocab(49406),
            "pad_token_id": in_vocab(1),
        },
        "vision_config": {
            **fields_to_hf(v, _VISION_FIELDS),
            "hidden_act": _ACT_TO_HF[v.act],
            "projection_dim": config.embed_dim,
        },
    }


def state_dict_to_hf(state_dict: StateDict, config=None) -> StateDict:
    """vlkit CLIP state dict -> HF CLIPModel keys (q, k, v split, [CLS] and positions flattened)."""
    state = dict(state_dict)
    if "visual.cls_token" in state:
        state["visual.cls_token"] = state["visual.cls_token"].reshape(-1)  # (1, 1, C) -> (C,)
    if "visual.pos_embed" in state:
        state["visual.pos_embed"] = state["visual.pos_embed"].squeeze(0)  # (1, 1 + N, C) -> (1 + N, C)
    state = split(state, "qkv", ("q", "k", "v"))
    return {k: t.contiguous() for k, t in rename_keys(state, pair_rules(_PAIRS, reverse=True)).items()}


def image_processor_config(config) -> dict:
    """The CLIPImageProcessor config matching the model's image transform."""
    return image_processor_to_hf(config.vision, "CLIPImageProcessor")
