"""HF transformers ViLT (ViltModel, ViltForMaskedLM, ViltForQuestionAnswering,
ViltForImageAndTextRetrieval) <-> vlkit Vilt, both ways.

Each HF class holds the joint encoder and at most one head: the masked-LM head (``mlm_score``),
the VQA classifier (``classifier``, its answers in ``id2label``) or the rank head
(``rank_output``); ``config_from_hf`` records which the weights hold. HF has no class with ViLT's
image-text matching head (the original checkpoints' ``itm_score``), so a vlkit ViLT read from HF
has none, and writing one leaves it out. A vlkit ViLT with several HF heads is written as one HF
folder per head: the main one (VQA, else retrieval, else MLM, else the bare ViltModel) at the top,
the others in sub-folders named ``mlm``, ``retrieval`` (:func:`hf_parts`).

HF samples the image patches in a random order (``max_image_length`` of them, all by default);
vlkit keeps all of them in order, so a checkpoint with ``max_image_length`` > 0 loads with a
ValueError only if it would drop patches of a full-size image.
"""

from __future__ import annotations

import dataclasses

from .keys import StateDict, add_prefix, fuse, pair_rules, rename_keys, split, strip_prefix

MODEL_TYPE = "vilt"  # the vlkit family it loads into
ARCHITECTURES = ("ViltModel", "ViltForMaskedLM", "ViltForQuestionAnswering", "ViltForImageAndTextRetrieval")
TOKENIZER_CLASS = "BertTokenizer"

# (vlkit field, HF config.json field, transformers' ViltConfig default), read both ways
_FIELDS = (
    ("vocab_size", "vocab_size", 30522),
    ("type_vocab_size", "type_vocab_size", 2),
    ("modality_type_vocab_size", "modality_type_vocab_size", 2),
    ("max_positions", "max_position_embeddings", 40),
    ("hidden_size", "hidden_size", 768),
    ("num_layers", "num_hidden_layers", 12),
    ("num_heads", "num_attention_heads", 12),
    ("intermediate_size", "intermediate_size", 3072),
    ("act", "hidden_act", "gelu"),
    ("norm_eps", "layer_norm_eps", 1e-12),
    ("qkv_bias", "qkv_bias", True),
    ("dropout", "hidden_dropout_prob", 0.0),
    ("attn_dropout", "attention_probs_dropout_prob", 0.0),
    ("image_size", "image_size", 384),
    ("patch_size", "patch_size", 32),
    ("in_channels", "num_channels", 3),
)
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
_TEXT = [
    ("embeddings.text_embeddings.word_embeddings", "text_embeddings.tokens"),
    ("embeddings.text_embeddings.position_embeddings", "text_embeddings.positions"),
    ("embeddings.text_embeddings.token_type_embeddings", "text_embeddings.segments"),
    ("embeddings.text_embeddings.LayerNorm", "text_embeddings.norm"),
]
_PAIRS = (
    [(f"vilt.{a}", b) for a, b in _TEXT]
    + [
        ("vilt.embeddings.cls_token", "cls_token"),
        ("vilt.embeddings.position_embeddings", "pos_embed"),
        ("vilt.embeddings.patch_embeddings.projection", "patch_embed.proj"),
        ("vilt.embeddings.token_type_embeddings", "modality_embed"),
        ("vilt.layernorm", "norm"),
        ("vilt.pooler.dense", "pooler"),
        ("mlm_score.transform.dense", "mlm_head.dense"),
        ("mlm_score.transform.LayerNorm", "mlm_head.norm"),
        ("mlm_score.decoder.bias", "mlm_head.bias"),
        ("rank_output", "rank_head"),
    ]
    + [(f"classifier.{i}", f"vqa_head.{i}") for i in (0, 1, 3)]
    + [(f"vilt.encoder.layer.#.{a}", f"encoder.blocks.#.{b}") for a, b in _LAYER]
)
_HEADS = ("mlm_score.", "classifier.", "rank_output.")
# position_ids buffers of old checkpoints; the MLM decoder weight is tied to the word embedding
_DROP = (r".*position_ids", r".*token_type_ids", r"mlm_score\.decoder\.weight")


def config_from_hf(hf: dict, state_dict: StateDict) -> dict:
    """vlkit ViltConfig fields from an HF config.json; the heads present follow the weights."""
    given = {k: v for k, v in hf.items() if v is not None}
    fields = {name: given.get(hf_name, default) for name, hf_name, default in _FIELDS}
    if fields["act"] != "gelu":
        raise ValueError(f"ViLT activation {fields['act']!r} is not supported (expected 'gelu')")
    if isinstance(fields["image_size"], (list, tuple)) or isinstance(fields["patch_size"], (list, tuple)):
        raise ValueError("only square images and patches are supported for ViLT checkpoints")
    num_patches = (fields["image_size"] // fields["patch_size"]) ** 2
    max_length = hf.get("max_image_length", -1)
    if isinstance(max_length, int) and 0 < max_length < num_patches:
        raise ValueError(
            f"this ViLT samples max_image_length={max_length} of its {num_patches} patches; vlkit keeps every patch"
        )
    keys = set(state_dict)
    answers: tuple[str, ...] = ()
    classifier = state_dict.get("classifier.3.weight")
    if classifier is not None:
        labels = {str(k): v for k, v in (hf.get("id2label") or {}).items()}
        answers = tuple(labels.get(str(i), f"LABEL_{i}") for i in range(classifier.shape[0]))
    return dict(
        fields,
        pad_token_id=hf.get("pad_token_id") or 0,
        itm_head=False,
        mlm_head=any(k.startswith("mlm_score.") for k in keys),
        rank_head="rank_output.weight" in keys,
        answers=answers,
    )


def state_dict_from_hf(state_dict: StateDict) -> StateDict:
    state = add_prefix(state_dict, "vilt.", keep=_HEADS)  # ViltModel's keys are the vilt. part's
    return fuse(rename_keys(state, pair_rules(_PAIRS), _DROP), "qkv", ("q", "k", "v"))


def architecture(config) -> str:
    """The HF class of a ViLT holding at most one of its HF heads (see :func:`hf_parts`)."""
    if config.answers:
        return "ViltForQuestionAnswering"
    if config.rank_head:
        return "ViltForImageAndTextRetrieval"
    return "ViltForMaskedLM" if config.mlm_head else "ViltModel"


def hf_parts(config) -> dict[str, object]:
    """The HF folders a ViLT is written as (sub-folder -> a config with one head): the main head
    (VQA, else retrieval, else MLM) at the top, each other head in its own sub-folder."""
    bare = dataclasses.replace(config, itm_head=False, mlm_head=False, rank_head=False, answers=())
    heads = [
        ("vqa", dataclasses.replace(bare, answers=config.answers), bool(config.answers)),
        ("retrieval", dataclasses.replace(bare, rank_head=True), config.rank_head),
        ("mlm", dataclasses.replace(bare, mlm_head=True), config.mlm_head),
    ]
    present = [(name, part) for name, part, has in heads if has]
    if not present:
        return {"": bare}
    return {("" if i == 0 else name): part for i, (name, part) in enumerate(present)}


def config_to_hf(config) -> dict:
    """vlkit ViltConfig (one HF head at most, see :func:`hf_parts`) -> an HF ViLT config.json dict."""
    if config.act != "gelu":
        raise ValueError(f"HF ViLT cannot represent act={config.act!r} (it uses 'gelu')")
    out = {
        "architectures": [architecture(config)],
        "model_type": "vilt",
        **{hf_name: getattr(config, name) for name, hf_name, _ in _FIELDS},
        "max_image_length": -1,
        "pad_token_id": config.pad_token_id,
        "tie_word_embeddings": True,
    }
    if config.answers:
        out["id2label"] = {str(i): a for i, a in enumerate(config.answers)}
        out["label2id"] = {a: i for i, a in enumerate(config.answers)}
    return out


def state_dict_to_hf(state_dict: StateDict, config) -> StateDict:
    """vlkit ViLT state dict -> the keys of :func:`architecture`'s class (q, k, v split), holding
    the heads ``config`` has (one of :func:`hf_parts`); the ITM head is never written."""
    dropped = ["itm_head."]
    if not config.mlm_head:
        dropped.append("mlm_head.")
    if not config.answers:
        dropped.append("vqa_head.")
    if not config.rank_head:
        dropped.append("rank_head.")
    state = {k: v for k, v in state_dict.items() if not k.startswith(tuple(dropped))}
    state = rename_keys(split(state, "qkv", ("q", "k", "v")), pair_rules(_PAIRS, reverse=True))
    return strip_prefix(state, "vilt.") if architecture(config) == "ViltModel" else state


def image_processor_config(config) -> dict:
    """HF's ViltImageProcessor: the short side resized to ``image_size`` (a square image: the
    square vlkit squashes to), sizes a multiple of the patch, normalised with the model's mean/std."""
    return {
        "image_processor_type": "ViltImageProcessor",
        "do_resize": True,
        "size": {"shortest_edge": config.image_size},
        "size_divisor": config.patch_size,
        "resample": {"nearest": 0, "lanczos": 1, "bilinear": 2, "bicubic": 3}[config.interpolation],
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": list(config.image_mean),
        "image_std": list(config.image_std),
        "do_pad": True,
        "do_convert_rgb": True,
    }
