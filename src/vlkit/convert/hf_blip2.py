"""HF transformers BLIP-2 (Blip2ForConditionalGeneration, Blip2Model, Blip2ForImageTextRetrieval)
<-> vlkit Blip2.

The language model is read and written by its own converter (``HF_CONVERTERS[text_config
model_type]``: GPT-2, OPT, ...) under the ``language_model.`` prefix; T5 is refused. The Q-Former's
text parts (embeddings, the text feed-forward) exist in retrieval checkpoints only: a captioning
checkpoint's Q-Former runs queries alone (``qformer.text_input=False``), and its blocks' only
feed-forward is the queries' (HF's ``intermediate_query``/``output_query``). A vlkit model with
both an LLM and retrieval heads is written as two HF folders: the captioner at the top and a
``Blip2ForImageTextRetrieval`` in ``retrieval/``.

transformers 5 finds the image by ``num_query_tokens`` placeholder tokens in ``input_ids``
(``image_token_index``); vlkit keeps that id (``image_token_id``) only to write folders back and
refuses it in ``input_ids``.
"""

from __future__ import annotations

import dataclasses
import re

from ..constants import BLIP2_VISION
from .hf_blip import VISION_LAYER
from .hf_image_processor import image_processor_to_hf
from .keys import StateDict, fields_from_hf, fields_to_hf, fuse, pair_rules, prefixed, rename_keys, split

MODEL_TYPE = "blip2"  # the vlkit family it loads into
ARCHITECTURES = ("Blip2ForConditionalGeneration", "Blip2Model", "Blip2ForImageTextRetrieval")
TOKENIZER_CLASS = None  # the LLM's (or the Q-Former's BERT) tokenizer; not written with the model
ENCODER_DECODER = ("t5", "mt5", "umt5")
LLM = "language_model."

# (vlkit field, HF field, transformers' default) of Blip2VisionConfig and Blip2QFormerConfig
_VISION_FIELDS = (
    ("width", "hidden_size", 1408),
    ("mlp_dim", "intermediate_size", 6144),
    ("depth", "num_hidden_layers", 39),
    ("num_heads", "num_attention_heads", 16),
    ("image_size", "image_size", 224),
    ("patch_size", "patch_size", 14),
    ("act", "hidden_act", "gelu"),
    ("norm_eps", "layer_norm_eps", 1e-6),
    ("qkv_bias", "qkv_bias", True),
)
_QFORMER_FIELDS = (
    ("vocab_size", "vocab_size", 30522),
    ("hidden_size", "hidden_size", 768),
    ("intermediate_size", "intermediate_size", 3072),
    ("num_layers", "num_hidden_layers", 12),
    ("num_heads", "num_attention_heads", 12),
    ("max_positions", "max_position_embeddings", 512),
    ("norm_eps", "layer_norm_eps", 1e-12),
    ("act", "hidden_act", "gelu"),
    ("dropout", "hidden_dropout_prob", 0.1),
    ("attn_dropout", "attention_probs_dropout_prob", 0.1),
    ("pad_token_id", "pad_token_id", 0),
    ("cross_attention_frequency", "cross_attention_frequency", 2),
)

_ATTENTION = [("query", "q"), ("key", "k"), ("value", "v")]


def _pairs(text_input: bool) -> list[tuple[str, str]]:
    """(HF, vlkit) names; with ``text_input`` the queries' feed-forward is ``mlp_query`` beside the
    text's ``mlp``, without it the queries' is the blocks' only one."""
    layer = [(f"attention.attention.{a}", f"attn.qkv.{b}") for a, b in _ATTENTION]
    layer += [("attention.output.dense", "attn.proj"), ("attention.output.LayerNorm", "norm1")]
    layer += [("crossattention.attention.query", "cross_attn.q")]
    layer += [(f"crossattention.attention.{a}", f"cross_attn.kv.{b}") for a, b in _ATTENTION[1:]]
    layer += [("crossattention.output.dense", "cross_attn.proj"), ("crossattention.output.LayerNorm", "norm_cross")]
    query = "_query" if text_input else ""
    layer += [("intermediate_query.dense", f"mlp{query}.fc1"), ("output_query.dense", f"mlp{query}.fc2")]
    layer += [("output_query.LayerNorm", f"norm2{query}")]
    if text_input:
        layer += [("intermediate.dense", "mlp.fc1"), ("output.dense", "mlp.fc2"), ("output.LayerNorm", "norm2")]
    pairs = prefixed(
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
    pairs += [
        ("query_tokens", "qformer.query_tokens"),
        ("qformer.layernorm", "qformer.norm"),
        ("embeddings.word_embeddings", "qformer.tokens"),
        ("embeddings.position_embeddings", "qformer.positions"),
    ]
    pairs += [(f"qformer.encoder.layer.#.{a}", f"qformer.transformer.blocks.#.{b}") for a, b in layer]
    pairs += [("language_projection", "language_projection"), ("vision_projection", "vision_proj")]
    pairs += [("text_projection", "text_proj"), ("itm_head", "itm_head")]
    return pairs


_DROP = (r".*position_ids",)
_TEXT_FFN = r"qformer\.encoder\.layer\.\d+\.(intermediate|output)\..*"  # HF's text feed-forward of the Q-Former


def _llm_converter(text_config: dict):
    """The converter of the HF language model a BLIP-2 config names (T5 refused by name)."""
    from . import HF_CONVERTERS

    model_type = text_config.get("model_type", "opt")  # transformers' default text_config is OPT's
    if model_type in ENCODER_DECODER:
        raise ValueError(
            f"BLIP-2 with an encoder-decoder language model ({model_type!r}, T5) is not supported; "
            "vlkit drives decoder-only LLMs (OPT, GPT-2, ...)"
        )
    conv = HF_CONVERTERS.get(model_type)
    if conv is None:
        raise ValueError(f"BLIP-2 language model {model_type!r} is not supported; vlkit reads {sorted(HF_CONVERTERS)}")
    return conv


def _llm_part(state_dict: StateDict) -> StateDict:
    return {k[len(LLM) :]: v for k, v in state_dict.items() if k.startswith(LLM)}


def config_from_hf(hf: dict, state_dict: StateDict) -> dict:
    """vlkit Blip2Config fields from an HF config.json; the parts present follow the weights."""
    vision = fields_from_hf(hf.get("vision_config"), _VISION_FIELDS)
    qformer = fields_from_hf(hf.get("qformer_config"), _QFORMER_FIELDS)
    for name, act in (("vision", vision["act"]), ("Q-Former", qformer["act"])):
        if act != "gelu":
            raise ValueError(f"BLIP-2 {name} activation {act!r} is not supported (expected 'gelu')")
    if isinstance(vision["image_size"], (list, tuple)) or isinstance(vision["patch_size"], (list, tuple)):
        raise ValueError("only square images and patches are supported for BLIP-2 checkpoints")
    fields: dict = dict(
        vision={**BLIP2_VISION, **vision},
        qformer=dict(
            qformer,
            num_query_tokens=hf.get("num_query_tokens", 32),
            text_input="embeddings.word_embeddings.weight" in state_dict,
        ),
        image_token_id=hf.get("image_token_index"),
        retrieval_heads="itm_head.weight" in state_dict,
        embed_dim=hf.get("image_text_hidden_size", 256),
    )
    llm_state = _llm_part(state_dict)
    if llm_state:
        text_config = hf.get("text_config") or {}
        conv = _llm_converter(text_config)
        fields.update(llm_type=conv.MODEL_TYPE, llm=conv.config_from_hf(text_config, llm_state))
    return fields


def state_dict_from_hf_config(state_dict: StateDict, hf_config: dict) -> StateDict:
    """HF BLIP-2 keys -> vlkit's; the LLM's through its own converter, the one the config names
    (so ``from_pretrained`` passes the config, as for LLaVA)."""
    text_input = "embeddings.word_embeddings.weight" in state_dict
    drop = _DROP if text_input else (*_DROP, _TEXT_FFN)  # a captioner's unused text feed-forward
    own = {k: v for k, v in state_dict.items() if not k.startswith(LLM)}
    out = rename_keys(own, pair_rules(_pairs(text_input)), drop)
    out = fuse(fuse(out, "qkv", ("q", "k", "v")), "kv", ("k", "v"))
    llm_state = _llm_part(state_dict)
    if llm_state:
        conv = _llm_converter(hf_config.get("text_config") or {})
        out.update({LLM + k: v for k, v in conv.state_dict_from_hf(llm_state).items()})
    return out


# --- writing -------------------------------------------------------------------------------------
def architecture(config) -> str:
    return "Blip2ForConditionalGeneration" if config.llm is not None else "Blip2ForImageTextRetrieval"


def hf_parts(config) -> dict[str, object]:
    """The HF folders a BLIP-2 is written as (sub-folder -> the part's config): the captioner (queries
    only, no retrieval heads) at the top when there is an LLM, the retrieval model in ``retrieval/``
    beside it (or at the top when there is no LLM)."""
    replace = dataclasses.replace
    config = replace(config, itg_head=False)  # HF has no ITG head
    if config.llm is None:
        return {"": config}
    parts = {"": replace(config, retrieval_heads=False, qformer=replace(config.qformer, text_input=False))}
    if config.retrieval_heads:
        parts["retrieval"] = replace(config, llm_type=None, llm=None)
    return parts


def config_to_hf(config) -> dict:
    """vlkit Blip2Config (one of :func:`hf_parts`) -> an HF BLIP-2 config.json dict."""
    v, q = config.vision, config.qformer
    unsupported = [
        name
        for name, bad in (
            ("vision.pre_norm=True", v.pre_norm),
            ("vision.patch_bias=False", not v.patch_bias),
            ("vision.pooler=True", v.pooler),
            (f"vision.act={v.act!r}", v.act != "gelu"),
            (f"qformer.act={q.act!r}", q.act != "gelu"),
        )
        if bad
    ]
    if unsupported:
        raise ValueError(f"HF BLIP-2 cannot represent {', '.join(unsupported)}")
    out = {
        "architectures": [architecture(config)],
        "model_type": "blip-2",
        "num_query_tokens": q.num_query_tokens,
        "image_text_hidden_size": config.embed_dim,
        "vision_config": {**fields_to_hf(v, _VISION_FIELDS), "model_type": "blip_2_vision_model"},
        "qformer_config": {
            **fields_to_hf(q, _QFORMER_FIELDS),
            "model_type": "blip_2_qformer",
            "encoder_hidden_size": v.width,
            "use_qformer_text_input": q.text_input,
        },
    }
    if config.llm is not None:
        if config.image_token_id is None:
            raise ValueError(
                "HF BLIP-2 (transformers 5) finds the image by placeholder tokens in input_ids: set the "
                "model's image_token_id (an id of the LLM's vocabulary kept for it) before writing"
            )
        from . import hf_export

        out["text_config"] = hf_export.hf_writer(config.llm_type).config_to_hf(config.llm)
        out["image_token_index"] = config.image_token_id
    return out


def state_dict_to_hf(state_dict: StateDict, config) -> StateDict:
    """vlkit Blip2 state dict -> HF keys of the parts ``config`` (one of :func:`hf_parts`) has."""
    dropped = ["temp", "itg_head."]  # HF's BLIP-2 has neither the ITC temperature nor the ITG head
    if config.llm is None:
        dropped += [LLM, "language_projection."]
    if not config.retrieval_heads:
        dropped += ["vision_proj.", "text_proj.", "itm_head."]
    state = {k: v for k, v in state_dict.items() if not k.startswith(tuple(dropped))}
    if not config.qformer.text_input:  # queries only: their feed-forward becomes the blocks' only one
        text = re.compile(r"qformer\.(tokens|positions)\..*|qformer\.transformer\.blocks\.\d+\.(mlp|norm2)\..*")
        if any("mlp_query." in k for k in state):
            state = {k: v for k, v in state.items() if not text.fullmatch(k)}
            state = {k.replace("mlp_query.", "mlp.").replace("norm2_query.", "norm2."): v for k, v in state.items()}
    own = {k: v for k, v in state.items() if not k.startswith(LLM)}
    qformer = {k: v for k, v in own.items() if k.startswith("qformer.")}  # HF's image tower keeps qkv fused
    own = {
        **{k: v for k, v in own.items() if k not in qformer},
        **split(split(qformer, "qkv", ("q", "k", "v")), "kv", ("k", "v")),
    }
    out = rename_keys(own, pair_rules(_pairs(config.qformer.text_input), reverse=True))
    llm_state = _llm_part(state)
    if llm_state:
        from . import hf_export

        conv = hf_export.hf_writer(config.llm_type)
        out.update({LLM + k: v for k, v in conv.state_dict_to_hf(llm_state, config.llm).items()})
    return out


def image_processor_config(config) -> dict:
    if config.vision.resize_mode != "squash":
        raise ValueError(
            f"HF's BlipImageProcessor squashes images to a square; this BLIP-2 was trained with "
            f"resize_mode={config.vision.resize_mode!r}"
        )
    return image_processor_to_hf(config.vision, "BlipImageProcessor")
