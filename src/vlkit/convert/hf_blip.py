"""HF transformers BLIP (BlipForImageTextRetrieval, BlipForConditionalGeneration,
BlipForQuestionAnswering) <-> vlkit Blip.

The three HF heads hold different parts: retrieval has the text encoder, the ITC projections and
the ITM head; captioning has the text decoder; VQA has both towers and no retrieval heads.
``config_from_hf`` records which parts the weights hold. HF stores ``text_encoder`` and
``text_decoder`` apart, so a loaded model never shares them (``share_encoder_decoder=False``).
"""
from __future__ import annotations

from ..constants import CLIP_MEAN, CLIP_STD
from .keys import StateDict, fuse, rename_keys

MODEL_TYPE = "blip"  # the vlkit family it loads into
ARCHITECTURES = ("BlipForImageTextRetrieval", "BlipForConditionalGeneration", "BlipForQuestionAnswering")

# OpenAI CLIP's normalisation, which BLIP's image processor uses

# defaults of transformers' BlipTextConfig / BlipVisionConfig for fields a config.json may omit
_TEXT_DEFAULTS = dict(vocab_size=30524, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                      num_attention_heads=8, max_position_embeddings=512, layer_norm_eps=1e-12, hidden_act="gelu",
                      hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, pad_token_id=0,
                      bos_token_id=30522, sep_token_id=102)
_VISION_DEFAULTS = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                        image_size=384, patch_size=16, hidden_act="gelu", layer_norm_eps=1e-5)

_TEXT = r"(text_encoder|text_decoder)(?:\.bert)?"
_LAYER = _TEXT + r"\.encoder\.layer\.(\d+)\."
_V = r"vision_model\."
_RULES = [
    (_V + r"embeddings\.class_embedding", r"vision.cls_token"),
    (_V + r"embeddings\.position_embedding", r"vision.pos_embed"),
    (_V + r"embeddings\.patch_embedding\.(.*)", r"vision.patch_embed.proj.\1"),
    (_V + r"encoder\.layers\.(\d+)\.self_attn\.qkv\.(.*)", r"vision.encoder.blocks.\1.attn.qkv.\2"),
    (_V + r"encoder\.layers\.(\d+)\.self_attn\.projection\.(.*)", r"vision.encoder.blocks.\1.attn.proj.\2"),
    (_V + r"encoder\.layers\.(\d+)\.layer_norm1\.(.*)", r"vision.encoder.blocks.\1.norm1.\2"),
    (_V + r"encoder\.layers\.(\d+)\.layer_norm2\.(.*)", r"vision.encoder.blocks.\1.norm2.\2"),
    (_V + r"encoder\.layers\.(\d+)\.mlp\.(fc1|fc2)\.(.*)", r"vision.encoder.blocks.\1.mlp.\2.\3"),
    (_V + r"post_layernorm\.(.*)", r"vision.norm.\1"),
    (_TEXT + r"\.embeddings\.word_embeddings\.(.*)", r"\1.embeddings.tokens.\2"),
    (_TEXT + r"\.embeddings\.position_embeddings\.(.*)", r"\1.embeddings.positions.\2"),
    (_TEXT + r"\.embeddings\.LayerNorm\.(.*)", r"\1.embeddings.norm.\2"),
    (_LAYER + r"attention\.self\.query\.(.*)", r"\1.transformer.blocks.\2.attn.qkv.q.\3"),
    (_LAYER + r"attention\.self\.key\.(.*)", r"\1.transformer.blocks.\2.attn.qkv.k.\3"),
    (_LAYER + r"attention\.self\.value\.(.*)", r"\1.transformer.blocks.\2.attn.qkv.v.\3"),
    (_LAYER + r"attention\.output\.dense\.(.*)", r"\1.transformer.blocks.\2.attn.proj.\3"),
    (_LAYER + r"attention\.output\.LayerNorm\.(.*)", r"\1.transformer.blocks.\2.norm1.\3"),
    (_LAYER + r"crossattention\.self\.query\.(.*)", r"\1.transformer.blocks.\2.cross_attn.q.\3"),
    (_LAYER + r"crossattention\.self\.key\.(.*)", r"\1.transformer.blocks.\2.cross_attn.kv.k.\3"),
    (_LAYER + r"crossattention\.self\.value\.(.*)", r"\1.transformer.blocks.\2.cross_attn.kv.v.\3"),
    (_LAYER + r"crossattention\.output\.dense\.(.*)", r"\1.transformer.blocks.\2.cross_attn.proj.\3"),
    (_LAYER + r"crossattention\.output\.LayerNorm\.(.*)", r"\1.transformer.blocks.\2.norm_cross.\3"),
    (_LAYER + r"intermediate\.dense\.(.*)", r"\1.transformer.blocks.\2.mlp.fc1.\3"),
    (_LAYER + r"output\.dense\.(.*)", r"\1.transformer.blocks.\2.mlp.fc2.\3"),
    (_LAYER + r"output\.LayerNorm\.(.*)", r"\1.transformer.blocks.\2.norm2.\3"),
    (r"text_decoder\.cls\.predictions\.transform\.dense\.(.*)", r"lm_head.dense.\1"),
    (r"text_decoder\.cls\.predictions\.transform\.LayerNorm\.(.*)", r"lm_head.norm.\1"),
    (r"text_decoder\.cls\.predictions\.bias", r"lm_head.bias"),
]
# position_ids buffers of old checkpoints; the LM decoder weight and bias are tied to the token
# embedding and to cls.predictions.bias.
_DROP = (r".*position_ids", r"text_decoder\.cls\.predictions\.decoder\.(weight|bias)")


def config_from_hf(hf: dict, state_dict: StateDict) -> dict:
    """vlkit BlipConfig fields from an HF config.json; the parts present follow the weights."""
    tc = {**_TEXT_DEFAULTS, **{k: v for k, v in (hf.get("text_config") or {}).items() if v is not None}}
    vc = {**_VISION_DEFAULTS, **{k: v for k, v in (hf.get("vision_config") or {}).items() if v is not None}}
    for name, act in (("text", tc["hidden_act"]), ("vision", vc["hidden_act"])):
        if act != "gelu":
            raise ValueError(f"BLIP {name} activation {act!r} is not supported (expected 'gelu')")
    if isinstance(vc["image_size"], (list, tuple)) or isinstance(vc["patch_size"], (list, tuple)):
        raise ValueError("only square images and patches are supported for BLIP checkpoints")
    keys = set(state_dict)
    has_encoder = any(k.startswith("text_encoder.") for k in keys)
    has_decoder = any(k.startswith("text_decoder.") for k in keys)
    for tower in ("text_encoder", "text_decoder.bert"):
        if any(k.startswith(tower + ".encoder.layer.") for k in keys) and not any(
            k.startswith(tower + ".encoder.layer.0.crossattention.") for k in keys
        ):
            raise ValueError(f"BLIP {tower} has no cross-attention layers (text_config.is_decoder=False?); "
                             "vlkit's BLIP needs them in every layer")
    return dict(
        vision=dict(
            image_size=vc["image_size"], patch_size=vc["patch_size"], width=vc["hidden_size"],
            depth=vc["num_hidden_layers"], num_heads=vc["num_attention_heads"], mlp_dim=vc["intermediate_size"],
            act="gelu", norm_eps=vc["layer_norm_eps"], qkv_bias=True, patch_bias=True, pre_norm=False,
            image_mean=CLIP_MEAN, image_std=CLIP_STD, resize_mode="squash", interpolation="bicubic",
        ),
        text=dict(
            vocab_size=tc["vocab_size"], hidden_size=tc["hidden_size"], num_layers=tc["num_hidden_layers"],
            num_heads=tc["num_attention_heads"], intermediate_size=tc["intermediate_size"],
            max_positions=tc["max_position_embeddings"], norm_eps=tc["layer_norm_eps"], act="gelu",
            dropout=tc["hidden_dropout_prob"], attn_dropout=tc["attention_probs_dropout_prob"],
            pad_token_id=tc["pad_token_id"], bos_token_id=tc["bos_token_id"], sep_token_id=tc["sep_token_id"],
            enc_token_id=tc["bos_token_id"] + 1 if tc["bos_token_id"] + 1 < tc["vocab_size"] else tc["bos_token_id"],
        ),
        embed_dim=hf.get("image_text_hidden_size", 256),
        text_encoder=has_encoder,
        text_decoder=has_decoder,
        retrieval_heads="itm_head.weight" in keys,
        share_encoder_decoder=False,
        # BlipForQuestionAnswering's decoder cross-attends to the encoded question
        decoder_context="question" if "BlipForQuestionAnswering" in (hf.get("architectures") or []) else "image",
    )


def state_dict_from_hf(state_dict: StateDict) -> StateDict:
    out = fuse(rename_keys(state_dict, _RULES, _DROP), "qkv", ("q", "k", "v"))
    return fuse(out, "kv", ("k", "v"))
