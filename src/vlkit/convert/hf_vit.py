"""HF transformers ViTModel <-> vlkit ViT."""
from __future__ import annotations

from .keys import StateDict, fuse, rename_keys

MODEL_TYPE = "vit"  # the vlkit family it loads into
ARCHITECTURES = ("ViTModel",)

_RULES = [
    (r"(?:vit\.)?embeddings\.cls_token", r"cls_token"),
    (r"(?:vit\.)?embeddings\.position_embeddings", r"pos_embed"),
    (r"(?:vit\.)?embeddings\.patch_embeddings\.projection\.(.*)", r"patch_embed.proj.\1"),
    (r"(?:vit\.)?encoder\.layer\.(\d+)\.attention\.attention\.query\.(.*)", r"encoder.blocks.\1.attn.qkv.q.\2"),
    (r"(?:vit\.)?encoder\.layer\.(\d+)\.attention\.attention\.key\.(.*)", r"encoder.blocks.\1.attn.qkv.k.\2"),
    (r"(?:vit\.)?encoder\.layer\.(\d+)\.attention\.attention\.value\.(.*)", r"encoder.blocks.\1.attn.qkv.v.\2"),
    (r"(?:vit\.)?encoder\.layer\.(\d+)\.attention\.output\.dense\.(.*)", r"encoder.blocks.\1.attn.proj.\2"),
    (r"(?:vit\.)?encoder\.layer\.(\d+)\.layernorm_before\.(.*)", r"encoder.blocks.\1.norm1.\2"),
    (r"(?:vit\.)?encoder\.layer\.(\d+)\.layernorm_after\.(.*)", r"encoder.blocks.\1.norm2.\2"),
    (r"(?:vit\.)?encoder\.layer\.(\d+)\.intermediate\.dense\.(.*)", r"encoder.blocks.\1.mlp.fc1.\2"),
    (r"(?:vit\.)?encoder\.layer\.(\d+)\.output\.dense\.(.*)", r"encoder.blocks.\1.mlp.fc2.\2"),
    (r"(?:vit\.)?layernorm\.(.*)", r"norm.\1"),
    (r"(?:vit\.)?pooler\.dense\.(.*)", r"pooler.\1"),
]


def config_from_hf(hf: dict, state_dict: StateDict) -> dict:
    if hf.get("hidden_act", "gelu") != "gelu":
        raise ValueError(f"ViT activation {hf.get('hidden_act')!r} is not supported")
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
        norm_eps=hf.get("layer_norm_eps", 1e-12),
        qkv_bias=hf.get("qkv_bias", True),
        dropout=hf.get("hidden_dropout_prob", 0.0),
        pooler=any(k.endswith("pooler.dense.weight") for k in state_dict),
    )


def state_dict_from_hf(state_dict: StateDict) -> StateDict:
    return fuse(rename_keys(state_dict, _RULES), "qkv", ("q", "k", "v"))
