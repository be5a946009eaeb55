"""HF transformers BLIP (BlipForImageTextRetrieval, BlipForConditionalGeneration,
BlipForQuestionAnswering) <-> vlkit Blip.

The three HF heads hold different parts: retrieval has the text encoder, the ITC projections and
the ITM head; captioning has the text decoder; VQA has both towers and no retrieval heads.
``config_from_hf`` records which parts the weights hold. HF stores ``text_encoder`` and
``text_decoder`` apart, so a loaded model never shares them (``share_encoder_decoder=False``).
"""

from __future__ import annotations

import dataclasses

from ..constants import BLIP_VISION
from .hf_bert import EMBEDDING_PAIRS, layer_pairs, mlm_head_pairs
from .hf_image_processor import image_processor_to_hf
from .keys import StateDict, fields_from_hf, fields_to_hf, fuse, pair_rules, prefixed, rename_keys, split

MODEL_TYPE = "blip"  # the vlkit family it loads into
ARCHITECTURES = ("BlipForImageTextRetrieval", "BlipForConditionalGeneration", "BlipForQuestionAnswering")
TOKENIZER_CLASS = "BertTokenizer"
DECODER_TOKENS = ("[DEC]", "[ENC]")  # BLIP's two tokens after the BERT vocabulary: bos_token_id, enc_token_id

# (vlkit field, HF config.json field, the default of transformers' BlipTextConfig / BlipVisionConfig
# where a config.json omits it or gives null), read both ways
_TEXT_FIELDS = (
    ("vocab_size", "vocab_size", 30524),
    ("hidden_size", "hidden_size", 768),
    ("intermediate_size", "intermediate_size", 3072),
    ("num_layers", "num_hidden_layers", 12),
    ("num_heads", "num_attention_heads", 8),
    ("max_positions", "max_position_embeddings", 512),
    ("norm_eps", "layer_norm_eps", 1e-12),
    ("act", "hidden_act", "gelu"),
    ("dropout", "hidden_dropout_prob", 0.0),
    ("attn_dropout", "attention_probs_dropout_prob", 0.0),
    ("pad_token_id", "pad_token_id", 0),
    ("bos_token_id", "bos_token_id", 30522),
    ("sep_token_id", "sep_token_id", 102),
)
_VISION_FIELDS = (
    ("width", "hidden_size", 768),
    ("mlp_dim", "intermediate_size", 3072),
    ("depth", "num_hidden_layers", 12),
    ("num_heads", "num_attention_heads", 12),
    ("image_size", "image_size", 384),
    ("patch_size", "patch_size", 16),
    ("act", "hidden_act", "gelu"),
    ("norm_eps", "layer_norm_eps", 1e-5),
)

VISION_LAYER = [
    ("self_attn.qkv", "attn.qkv"),
    ("self_attn.projection", "attn.proj"),
    ("layer_norm1", "norm1"),
    ("layer_norm2", "norm2"),
    ("mlp.fc1", "mlp.fc1"),
    ("mlp.fc2", "mlp.fc2"),
]
_PAIRS = prefixed(
    [
        ("embeddings.class_embedding", "cls_token"),
        ("embeddings.position_embedding", "pos_embed"),
        ("embeddings.patch_embedding", "patch_embed.proj"),
        ("post_layernorm", "norm"),
    ]
    + [(f"encoder.layers.#.{a}", f"encoder.blocks.#.{b}") for a, b in VISION_LAYER],
    "vision_model.",
    "vision.",
)
for _hf, _vl in (("text_encoder", "text_encoder"), ("text_decoder.bert", "text_decoder")):
    _PAIRS += prefixed(
        EMBEDDING_PAIRS + layer_pairs("encoder.layer", "transformer.blocks", cross_attention=True), f"{_hf}.", f"{_vl}."
    )
_PAIRS += mlm_head_pairs("text_decoder.cls", "lm_head")
# position_ids buffers of old checkpoints; the LM decoder weight and bias are tied to the token
# embedding and to cls.predictions.bias.
_DROP = (r".*position_ids", r"text_decoder\.cls\.predictions\.decoder\.(weight|bias)")


def config_from_hf(hf: dict, state_dict: StateDict) -> dict:
    """vlkit BlipConfig fields from an HF config.json; the parts present follow the weights."""
    text = fields_from_hf(hf.get("text_config"), _TEXT_FIELDS)
    vision = fields_from_hf(hf.get("vision_config"), _VISION_FIELDS)
    for name, act in (("text", text["act"]), ("vision", vision["act"])):
        if act != "gelu":
            raise ValueError(f"BLIP {name} activation {act!r} is not supported (expected 'gelu')")
    if isinstance(vision["image_size"], (list, tuple)) or isinstance(vision["patch_size"], (list, tuple)):
        raise ValueError("only square images and patches are supported for BLIP checkpoints")
    keys = set(state_dict)
    has_encoder = any(k.startswith("text_encoder.") for k in keys)
    has_decoder = any(k.startswith("text_decoder.") for k in keys)
    for tower in ("text_encoder", "text_decoder.bert"):
        if any(k.startswith(tower + ".encoder.layer.") for k in keys) and not any(
            k.startswith(tower + ".encoder.layer.0.crossattention.") for k in keys
        ):
            raise ValueError(
                f"BLIP {tower} has no cross-attention layers (text_config.is_decoder=False?); "
                "vlkit's BLIP needs them in every layer"
            )
    bos = text["bos_token_id"]
    return dict(
        vision={**BLIP_VISION, **vision},  # BLIP's image tower with the checkpoint's sizes
        text=dict(text, enc_token_id=bos + 1 if bos + 1 < text["vocab_size"] else bos),
        embed_dim=hf.get("image_text_hidden_size", 256),
        text_encoder=has_encoder,
        text_decoder=has_decoder,
        retrieval_heads="itm_head.weight" in keys,
        share_encoder_decoder=False,
        # BlipForQuestionAnswering's decoder cross-attends to the encoded question
        decoder_context="question" if "BlipForQuestionAnswering" in (hf.get("architectures") or []) else "image",
    )


def state_dict_from_hf(state_dict: StateDict) -> StateDict:
    out = fuse(rename_keys(state_dict, pair_rules(_PAIRS), _DROP), "qkv", ("q", "k", "v"))
    return fuse(out, "kv", ("k", "v"))


def architecture(config) -> str:
    """The HF class of a BLIP's main use: VQA (decoder reading the question), captioning, or retrieval."""
    if config.decoder_context == "question":
        return "BlipForQuestionAnswering"
    return "BlipForConditionalGeneration" if config.text_decoder else "BlipForImageTextRetrieval"


def hf_parts(config) -> dict[str, object]:
    """The HF checkpoints a BLIP is written as (sub-folder -> the part's config): its main use at the
    top (:func:`architecture`), and a ``BlipForImageTextRetrieval`` in ``retrieval/`` when the model
    also has retrieval heads beside a decoder, so that every HF folder holds exactly its class's
    weights. HF BLIP has no ITC temperature: ``temp`` is not written."""
    replace = dataclasses.replace
    if config.text_encoder and not config.retrieval_heads and config.decoder_context == "image" and config.text_decoder:
        raise ValueError("HF BLIP has no class for a text encoder without retrieval heads beside a captioning decoder")
    if not config.text_decoder:
        return {"": config}
    if config.decoder_context == "question":
        main = replace(config, retrieval_heads=False)
    else:
        main = replace(config, text_encoder=False, retrieval_heads=False, share_encoder_decoder=False)
    parts = {"": main}
    if config.retrieval_heads:
        parts["retrieval"] = replace(config, text_decoder=False, share_encoder_decoder=False, decoder_context="image")
    return parts


def config_to_hf(config) -> dict:
    """vlkit BlipConfig -> an HF BLIP config.json dict for :func:`architecture`'s class."""
    v, t = config.vision, config.text
    unsupported = [
        name
        for name, bad in (
            ("vision.pre_norm=True", v.pre_norm),
            ("vision.patch_bias=False", not v.patch_bias),
            ("vision.qkv_bias=False", not v.qkv_bias),
            ("vision.pooler=True", v.pooler),
            (f"vision.act={v.act!r}", v.act != "gelu"),
            (f"text.act={t.act!r}", t.act != "gelu"),
            (
                "a VQA decoder whose question width differs from the image width (HF sizes its cross-attention for the "
                "image)",
                config.decoder_context == "question" and t.hidden_size != v.width,
            ),
        )
        if bad
    ]
    if unsupported:
        raise ValueError(f"HF BLIP cannot represent {', '.join(unsupported)}")
    return {
        "architectures": [architecture(config)],
        "model_type": "blip",
        "image_text_hidden_size": config.embed_dim,
        "text_config": {
            **fields_to_hf(t, _TEXT_FIELDS),
            "eos_token_id": t.sep_token_id,
            "encoder_hidden_size": v.width,
            "is_decoder": True,
        },
        "vision_config": {**fields_to_hf(v, _VISION_FIELDS), "num_channels": v.in_channels},
    }


_PART_KEYS = {
    "text_encoder": ("text_encoder.",),
    "text_decoder": ("text_decoder.", "lm_head."),
    "retrieval_heads": ("vision_proj.", "text_proj.", "itm_head."),
}


def state_dict_to_hf(state_dict: StateDict, config) -> StateDict:
    """vlkit BLIP state dict -> HF BLIP keys of the parts ``config`` has (one of :func:`hf_parts`):
    the text towers' q, k, v and k, v split (HF's image tower keeps its qkv fused, as vlkit's)."""
    dropped = tuple(p for part, prefixes in _PART_KEYS.items() if not getattr(config, part) for p in prefixes)
    state_dict = {k: v for k, v in state_dict.items() if k != "temp" and not k.startswith(dropped)}
    text = {k: v for k, v in state_dict.items() if k.startswith(("text_encoder.", "text_decoder."))}
    rest = {k: v for k, v in state_dict.items() if k not in text}
    text = split(split(text, "qkv", ("q", "k", "v")), "kv", ("k", "v"))
    return rename_keys({**rest, **text}, pair_rules(_PAIRS, reverse=True))


def image_processor_config(config) -> dict:
    if config.vision.resize_mode != "squash":
        raise ValueError(
            f"HF's BlipImageProcessor squashes images to a square; this BLIP was trained with "
            f"resize_mode={config.vision.resize_mode!r}"
        )
    return image_processor_to_hf(config.vision, "BlipImageProcessor")


def hf_tokenizer(tok, config):
    """BLIP's tokenizer as HF reads it: a BERT WordPiece followed by ``[DEC]`` (the decoder's first
    token, ``bos_token_id``) and ``[ENC]`` (``enc_token_id``), which vlkit's BLIP recipes add to the
    tokenizer's vocabulary in the model (``vocab_size`` = tokens + 2)."""
    from ..tokenizers.wordpiece import WordPieceTokenizer

    t = config.text
    if tok.vocab_size != t.vocab_size - 2:
        return tok  # already holds them (a tokenizer read from an HF BLIP folder), or a mismatch named later
    if not isinstance(tok, WordPieceTokenizer):
        raise ValueError(f"HF BLIP reads a BERT WordPiece tokenizer; got {type(tok).__name__}")
    if (t.bos_token_id, t.enc_token_id) != (t.vocab_size - 2, t.vocab_size - 1):
        raise ValueError(
            f"this BLIP's bos/enc token ids {t.bos_token_id}, {t.enc_token_id} are not the two ids after "
            f"the tokenizer's {tok.vocab_size} tokens"
        )
    tokens = [tok.id_to_token(i) for i in range(tok.vocab_size)]
    return WordPieceTokenizer(
        [*tokens, *DECODER_TOKENS],
        {**tok.special_tokens, "bos": DECODER_TOKENS[0]},
        extra_special_tokens=[*tok.extra_special_tokens, DECODER_TOKENS[1]],
        prefix=tok.prefix,
        suffix=tok.suffix,
        context_length=tok.context_length,
        **tok._config(),
    )
