"""HF transformers ViTModel <-> vlkit ViT, both ways."""

from __future__ import annotations

from .hf_image_processor import image_processor_to_hf
from .keys import StateDict, fuse, pair_rules, rename_keys, split, strip_prefix

MODEL_TYPE = "vit"  # the vlkit family it loads into
ARCHITECTURES = ("ViTModel",)
TOKENIZER_CLASS = None  # an image model: no tokenizer

_LAYER = [
    ("attention.attention.query", "attn.qkv.q"),
    ("attention.attention.key", "attn.qkv.k"),
    ("attention.attention.value", "attn.qkv.v"),
    ("attention.output.dense", "attn.proj"),
    ("layernorm_before", "norm1"),
    ("layernorm_after", "norm2"),
    ("intermediate.dense", "mlp.fc1"),
    ("output.dense", "mlp.fc2"),
]
_PAIRS = [
    ("embeddings.cls_token", "cls_token"),
    ("embeddings.position_embeddings", "pos_embed"),
    ("embeddings.patch_embeddings.projection", "patch_embed.proj"),
    ("layernorm", "norm"),
    ("pooler.dense", "pooler"),
] + [(f"encoder.layer.#.{a}", f"encoder.blocks.#.{b}") for a, b in _LAYER]
_ACT_TO_HF = {"gelu": "gelu", "gelu_tanh": "gelu_pytorch_tanh", "quick_gelu": "quick_gelu", "relu": "relu"}
_ACT_FROM_HF = {**{hf: vl for vl, hf in _ACT_TO_HF.items()}, "gelu_new": "gelu_tanh"}


def config_from_hf(hf: dict, state_dict: StateDict) -> dict:
    act = hf.get("hidden_act", "gelu")
    if act not in _ACT_FROM_HF:
        raise ValueError(f"ViT activation {act!r} is not supported; expected one of {sorted(_ACT_FROM_HF)}")
    image_size, patch_size = hf.get("image_size", 224), hf.get("patch_size", 16)
    if isinstance(image_size, (list, tuple)) or isinstance(patch_size, (list, tuple)):
        raise ValueError("only square images and patches are supported for ViT checkpoints")
    return dict(
        image_size=image_size,
        patch_size=patch_size,
        in_channels=hf.get("num_channels", 3),
        width=hf["hidden_size"],
        depth=hf["num_hidden_layers"],
        num_heads=hf["num_attention_heads"],
        mlp_dim=hf["intermediate_size"],
        act=_ACT_FROM_HF[act],
        norm_eps=hf.get("layer_norm_eps", 1e-12),
        qkv_bias=hf.get("qkv_bias", True),
        dropout=hf.get("hidden_dropout_prob", 0.0),
        pooler=any(k.endswith("pooler.dense.weight") for k in state_dict),
    )


def state_dict_from_hf(state_dict: StateDict) -> StateDict:
    state = strip_prefix(state_dict, "vit.")  # the ViT inside ViTFor... classes
    return fuse(rename_keys(state, pair_rules(_PAIRS)), "qkv", ("q", "k", "v"))


def config_to_hf(config) -> dict:
    """vlkit ViTConfig -> an HF ViTModel config.json dict. HF's ViTModel adds a pooler of its own
    when the model has none (``pooler=False``); ``last_hidden_state`` is the model's."""
    checks = (
        ("pre_norm=True", config.pre_norm),
        ("patch_bias=False", not config.patch_bias),
        (f"act={config.act!r}", config.act not in _ACT_TO_HF),
    )
    unsupported = [name for name, bad in checks if bad]
    if unsupported:
        raise ValueError(f"HF ViTModel cannot represent a ViT with {', '.join(unsupported)}")
    return {
        "architectures": list(ARCHITECTURES),
        "model_type": "vit",
        "image_size": config.image_size,
        "patch_size": config.patch_size,
        "num_channels": config.in_channels,
        "hidden_size": config.width,
        "num_hidden_layers": config.depth,
        "num_attention_heads": config.num_heads,
        "intermediate_size": config.mlp_dim,
        "hidden_act": _ACT_TO_HF[config.act],
        "layer_norm_eps": config.norm_eps,
        "qkv_bias": config.qkv_bias,
        "hidden_dropout_prob": config.dropout,
        "attention_probs_dropout_prob": 0.0,
    }


def state_dict_to_hf(state_dict: StateDict, config=None) -> StateDict:
    """vlkit ViT state dict -> HF ViTModel keys (q, k, v split)."""
    return rename_keys(split(state_dict, "qkv", ("q", "k", "v")), pair_rules(_PAIRS, reverse=True))


def image_processor_config(config) -> dict:
    return image_processor_to_hf(config, "ViTImageProcessor")
