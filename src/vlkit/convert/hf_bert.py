"""HF transformers BERT (BertModel, BertForPreTraining, BertForMaskedLM) <-> vlkit BERT."""
from __future__ import annotations

from .keys import StateDict, fuse, rename_keys

MODEL_TYPE = "bert"  # the vlkit family it loads into
ARCHITECTURES = ("BertModel", "BertForPreTraining", "BertForMaskedLM")

_RULES = [
    (r"(?:bert\.)?embeddings\.word_embeddings\.(.*)", r"embeddings.tokens.\1"),
    (r"(?:bert\.)?embeddings\.position_embeddings\.(.*)", r"embeddings.positions.\1"),
    (r"(?:bert\.)?embeddings\.token_type_embeddings\.(.*)", r"embeddings.segments.\1"),
    (r"(?:bert\.)?embeddings\.LayerNorm\.(.*)", r"embeddings.norm.\1"),
    (r"(?:bert\.)?encoder\.layer\.(\d+)\.attention\.self\.query\.(.*)", r"encoder.blocks.\1.attn.qkv.q.\2"),
    (r"(?:bert\.)?encoder\.layer\.(\d+)\.attention\.self\.key\.(.*)", r"encoder.blocks.\1.attn.qkv.k.\2"),
    (r"(?:bert\.)?encoder\.layer\.(\d+)\.attention\.self\.value\.(.*)", r"encoder.blocks.\1.attn.qkv.v.\2"),
    (r"(?:bert\.)?encoder\.layer\.(\d+)\.attention\.output\.dense\.(.*)", r"encoder.blocks.\1.attn.proj.\2"),
    (r"(?:bert\.)?encoder\.layer\.(\d+)\.attention\.output\.LayerNorm\.(.*)", r"encoder.blocks.\1.norm1.\2"),
    (r"(?:bert\.)?encoder\.layer\.(\d+)\.intermediate\.dense\.(.*)", r"encoder.blocks.\1.mlp.fc1.\2"),
    (r"(?:bert\.)?encoder\.layer\.(\d+)\.output\.dense\.(.*)", r"encoder.blocks.\1.mlp.fc2.\2"),
    (r"(?:bert\.)?encoder\.layer\.(\d+)\.output\.LayerNorm\.(.*)", r"encoder.blocks.\1.norm2.\2"),
    (r"(?:bert\.)?pooler\.dense\.(.*)", r"pooler.\1"),
    (r"cls\.predictions\.transform\.dense\.(.*)", r"mlm_head.dense.\1"),
    (r"cls\.predictions\.transform\.LayerNorm\.(.*)", r"mlm_head.norm.\1"),
    (r"cls\.predictions\.bias", r"mlm_head.bias"),
    (r"cls\.predictions\.decoder\.bias", r"mlm_head.bias"),
    (r"cls\.seq_relationship\.(.*)", r"nsp_head.\1"),
]
# position_ids buffers of old checkpoints; the decoder weight is tied to the token embedding.
_DROP = (r".*position_ids", r"cls\.predictions\.decoder\.weight")


def config_from_hf(hf: dict, state_dict: StateDict) -> dict:
    """vlkit BertConfig fields from an HF config.json (heads present as the weights say)."""
    if hf.get("hidden_act", "gelu") not in ("gelu", "gelu_new", "gelu_pytorch_tanh"):
        raise ValueError(f"BERT activation {hf.get('hidden_act')!r} is not supported")
    if hf.get("position_embedding_type", "absolute") != "absolute":
        raise ValueError("only absolute position embeddings are supported for BERT checkpoints")
    keys = set(state_dict)
    return dict(
        vocab_size=hf["vocab_size"],
        hidden_size=hf["hidden_size"],
        num_layers=hf["num_hidden_layers"],
        num_heads=hf["num_attention_heads"],
        intermediate_size=hf["intermediate_size"],
        max_positions=hf.get("max_position_embeddings", 512),
        type_vocab_size=hf.get("type_vocab_size", 2),
        norm_eps=hf.get("layer_norm_eps", 1e-12),
        act="gelu" if hf.get("hidden_act", "gelu") == "gelu" else "gelu_tanh",
        dropout=hf.get("hidden_dropout_prob", 0.1),
        attn_dropout=hf.get("attention_probs_dropout_prob", 0.1),
        pad_token_id=hf.get("pad_token_id", 0) or 0,
        pooler=any(k.endswith("pooler.dense.weight") for k in keys),
        mlm_head=any(k.startswith("cls.predictions.") for k in keys),
        nsp_head=any(k.startswith("cls.seq_relationship.") for k in keys),
    )


def state_dict_from_hf(state_dict: StateDict) -> StateDict:
    return fuse(rename_keys(state_dict, _RULES, _DROP), "qkv", ("q", "k", "v"))
