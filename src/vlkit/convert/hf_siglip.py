"""HF transformers SiglipModel <-> vlkit Siglip, both directions.

HF keeps q, k and v projections apart (vlkit fuses them into ``qkv``), stores position embeddings
as an ``nn.Embedding`` (vlkit's image positions: (1, N, C)) and ``logit_scale`` / ``logit_bias``
as (1,) tensors (vlkit: scalars). The attention-pooling head is stored as
``torch.nn.MultiheadAttention`` (``in_proj_weight``, ``in_proj_bias``, ``out_proj``) on both sides.
SigLIP's tokenizer is SentencePiece (``spiece.model``), which vlkit cannot read: a loaded model
has no tokenizer (tokenize with transformers' ``SiglipTokenizer`` and pass the ids), and a written
folder carries the vlkit tokenizer given to ``save_hf`` as ``tokenizer.json``.
"""

from __future__ import annotations

from .hf_image_processor import image_processor_to_hf
from .keys import StateDict, fuse, pair_rules, rename_keys, split

MODEL_TYPE = "siglip"
ARCHITECTURES = ("SiglipModel",)
TOKENIZER_CLASS = "SiglipTokenizer"  # a vlkit tokenizer is written as the generic class (tokenizer.json)

# HF name <-> vlkit name; "#" is a layer index, a trailing ".weight"/".bias" is carried over.
_PAIRS = [
    ("text_model.embeddings.token_embedding", "text.token_embed"),
    ("text_model.embeddings.position_embedding", "text.pos_embed"),
    ("text_model.final_layer_norm", "text.norm"),
    ("text_model.head", "text.head"),
    ("vision_model.embeddings.patch_embedding", "visual.patch_embed.proj"),
    ("vision_model.embeddings.position_embedding.weight", "visual.pos_embed"),
    ("vision_model.post_layernorm", "visual.norm"),
    ("vision_model.head.probe", "visual.head.probe"),
    ("vision_model.head.attention.in_proj_weight", "visual.head.attention.in_proj_weight"),
    ("vision_model.head.attention.in_proj_bias", "visual.head.attention.in_proj_bias"),
    ("vision_model.head.attention.out_proj", "visual.head.attention.out_proj"),
    ("vision_model.head.layernorm", "visual.head.norm"),
    ("vision_model.head.mlp.fc1", "visual.head.mlp.fc1"),
    ("vision_model.head.mlp.fc2", "visual.head.mlp.fc2"),
    ("logit_scale", "logit_scale"),
    ("logit_bias", "logit_bias"),
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

_ACT_FROM_HF = {"gelu_pytorch_tanh": "gelu_tanh", "gelu_new": "gelu_tanh", "gelu": "gelu", "quick_gelu": "quick_gelu"}
_ACT_TO_HF = {"gelu_tanh": "gelu_pytorch_tanh", "gelu": "gelu", "quick_gelu": "quick_gelu"}

# (vlkit field, HF config.json field, HF's default where a config.json omits it), read both ways
_TOWER_FIELDS = (
    ("width", "hidden_size", 768),
    ("mlp_dim", "intermediate_size", 3072),
    ("depth", "num_hidden_layers", 12),
    ("num_heads", "num_attention_heads", 12),
    ("norm_eps", "layer_norm_eps", 1e-6),
)
_VISION_FIELDS = _TOWER_FIELDS + (
    ("image_size", "image_size", 224),
    ("patch_size", "patch_size", 16),
    ("in_channels", "num_channels", 3),
)
_TEXT_FIELDS = _TOWER_FIELDS + (
    ("vocab_size", "vocab_size", 32000),
    ("context_length", "max_position_embeddings", 64),
)


def _act(name: str, tower: str) -> str:
    if name not in _ACT_FROM_HF:
        raise ValueError(f"SigLIP {tower} activation {name!r} is not supported; expected one of {sorted(_ACT_FROM_HF)}")
    return _ACT_FROM_HF[name]


def config_from_hf(hf: dict, state_dict: StateDict) -> dict:
    """HF SiglipConfig (config.json as a dict) -> vlkit SiglipConfig fields (HF's defaults where absent)."""
    t, v = hf.get("text_config") or {}, hf.get("vision_config") or {}
    vision = {name: v.get(hf_name, default) for name, hf_name, default in _VISION_FIELDS}
    text = {name: t.get(hf_name, default) for name, hf_name, default in _TEXT_FIELDS}
    if isinstance(vision["image_size"], (list, tuple)) or isinstance(vision["patch_size"], (list, tuple)):
        raise ValueError("only square images and patches are supported for SigLIP checkpoints")
    if not v.get("vision_use_head", True):
        raise ValueError(
            "SigLIP vision towers without the attention-pooling head (vision_use_head=false) are not supported"
        )
    projection = t.get("projection_size") or text["width"]
    if projection != vision["width"]:
        raise ValueError(f"text projection_size {projection} must equal the vision hidden_size {vision['width']}")
    return dict(
        vision=dict(vision, act=_act(v.get("hidden_act", "gelu_pytorch_tanh"), "vision")),
        text=dict(
            text,
            act=_act(t.get("hidden_act", "gelu_pytorch_tanh"), "text"),
            pad_token_id=t.get("pad_token_id", 1),
        ),
    )


def state_dict_from_hf(state_dict: StateDict) -> StateDict:
    state = rename_keys(state_dict, pair_rules(_PAIRS), drop=(r".*position_ids",))
    state = fuse(state, "qkv", ("q", "k", "v"))
    if "visual.pos_embed" in state:
        state["visual.pos_embed"] = state["visual.pos_embed"].unsqueeze(0)  # (N, C) -> (1, N, C)
    for name in ("logit_scale", "logit_bias"):
        if name in state:
            state[name] = state[name].reshape(())  # (1,) -> ()
    return state


def config_to_hf(config) -> dict:
    """vlkit SiglipConfig -> an HF SiglipModel config.json dict."""
    v, t = config.vision, config.text
    for tower, act in (("vision", v.act), ("text", t.act)):
        if act not in _ACT_TO_HF:
            raise ValueError(f"SigLIP {tower} activation {act!r} has no HF equivalent")
    tower = lambda c, fields: {hf_name: getattr(c, name) for name, hf_name, _ in fields}
    return {
        "architectures": list(ARCHITECTURES),
        "model_type": "siglip",
        "text_config": {
            **tower(t, _TEXT_FIELDS),
            "hidden_act": _ACT_TO_HF[t.act],
            "projection_size": config.embed_dim,
            "model_type": "siglip_text_model",
            # SiglipModel reads none of these; HF's defaults (CLIP's 49406, 49407) may lie outside the vocabulary
            "bos_token_id": None,
            "eos_token_id": None,
            "pad_token_id": t.pad_token_id,
        },
        "vision_config": {
            **tower(v, _VISION_FIELDS),
            "hidden_act": _ACT_TO_HF[v.act],
            "vision_use_head": True,
            "model_type": "siglip_vision_model",
        },
    }


def state_dict_to_hf(state_dict: StateDict, config=None) -> StateDict:
    """vlkit Siglip state dict -> HF SiglipModel keys (q, k, v split, positions and scalars reshaped)."""
    state = dict(state_dict)
    if "visual.pos_embed" in state:
        state["visual.pos_embed"] = state["visual.pos_embed"].squeeze(0)  # (1, N, C) -> (N, C)
    for name in ("logit_scale", "logit_bias"):
        if name in state:
            state[name] = state[name].reshape(1)  # () -> (1,)
    state = split(state, "qkv", ("q", "k", "v"))
    return {k: t.contiguous() for k, t in rename_keys(state, pair_rules(_PAIRS, reverse=True)).items()}


def image_processor_config(config) -> dict:
    """The SiglipImageProcessor config matching the model's image transform."""
    return image_processor_to_hf(config.vision, "SiglipImageProcessor")
