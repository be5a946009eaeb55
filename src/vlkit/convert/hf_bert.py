"""HF transformers BERT (BertModel, BertForPreTraining, BertForMaskedLM) <-> vlkit BERT, both ways.

The name tables of BERT's embeddings and layers also serve BLIP's text towers (``hf_blip``).
"""

from __future__ import annotations

from .keys import StateDict, add_prefix, fuse, pair_rules, prefixed, rename_keys, split, strip_prefix

MODEL_TYPE = "bert"  # the vlkit family it loads into
ARCHITECTURES = ("BertModel", "BertForPreTraining", "BertForMaskedLM")
TOKENIZER_CLASS = "BertTokenizer"

EMBEDDING_PAIRS = [
    ("embeddings.word_embeddings", "embeddings.tokens"),
    ("embeddings.position_embeddings", "embeddings.positions"),
    ("embeddings.token_type_embeddings", "embeddings.segments"),
    ("embeddings.LayerNorm", "embeddings.norm"),
]
_ATTENTION = [("self.query", "qkv.q"), ("self.key", "qkv.k"), ("self.value", "qkv.v"), ("output.dense", "proj")]
_CROSS = [("self.query", "q"), ("self.key", "kv.k"), ("self.value", "kv.v"), ("output.dense", "proj")]


def layer_pairs(hf_layers: str, vlkit_blocks: str, cross_attention: bool = False) -> list[tuple[str, str]]:
    """BERT's post-norm layer (``<hf_layers>.#.attention...``) <-> vlkit blocks (``<vlkit_blocks>.#.attn...``)."""
    pairs = [(f"attention.{a}", f"attn.{b}") for a, b in _ATTENTION] + [("attention.output.LayerNorm", "norm1")]
    if cross_attention:
        pairs += [(f"crossattention.{a}", f"cross_attn.{b}") for a, b in _CROSS]
        pairs += [("crossattention.output.LayerNorm", "norm_cross")]
    pairs += [("intermediate.dense", "mlp.fc1"), ("output.dense", "mlp.fc2"), ("output.LayerNorm", "norm2")]
    return [(f"{hf_layers}.#.{a}", f"{vlkit_blocks}.#.{b}") for a, b in pairs]


def mlm_head_pairs(hf: str, vlkit: str) -> list[tuple[str, str]]:
    """BERT's masked-LM head (``<hf>.predictions...``) <-> vlkit's MLMHead; the decoder is tied."""
    return [
        (f"{hf}.predictions.transform.dense", f"{vlkit}.dense"),
        (f"{hf}.predictions.transform.LayerNorm", f"{vlkit}.norm"),
        (f"{hf}.predictions.bias", f"{vlkit}.bias"),
    ]


_PAIRS = (
    prefixed(
        EMBEDDING_PAIRS + layer_pairs("encoder.layer", "encoder.blocks") + [("pooler.dense", "pooler")], outside="bert."
    )
    + mlm_head_pairs("cls", "mlm_head")
    + [
        ("cls.predictions.decoder.bias", "mlm_head.bias"),  # read only: older checkpoints hold the bias twice
        ("cls.seq_relationship", "nsp_head"),
    ]
)
# position_ids buffers of old checkpoints; the decoder weight is tied to the token embedding.
_DROP = (r".*position_ids", r"cls\.predictions\.decoder\.weight")
_ACT_TO_HF = {"gelu": "gelu", "gelu_tanh": "gelu_new"}


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
    state = add_prefix(state_dict, "bert.", keep=("cls.",))  # BertModel's keys are the bert. part's
    return fuse(rename_keys(state, pair_rules(_PAIRS), _DROP), "qkv", ("q", "k", "v"))


def architecture(config) -> str:
    """The HF class holding the parts of ``config``: BertForPreTraining (MLM + NSP heads),
    BertForMaskedLM (MLM head; a pooler, which that class lacks, stays in the file for vlkit)
    or BertModel (no head; HF adds a pooler of its own when the model has none)."""
    if config.nsp_head and not config.mlm_head:
        raise ValueError("HF has no BERT class with the NSP head but no MLM head (mlm_head=False, nsp_head=True)")
    if config.mlm_head:
        return "BertForPreTraining" if config.nsp_head else "BertForMaskedLM"
    return "BertModel"


def config_to_hf(config) -> dict:
    """vlkit BertConfig -> an HF BERT config.json dict."""
    if config.act not in _ACT_TO_HF:
        raise ValueError(f"BERT activation {config.act!r} has no HF equivalent; expected one of {sorted(_ACT_TO_HF)}")
    if config.type_vocab_size < 1:
        raise ValueError("HF BERT needs segment embeddings (type_vocab_size >= 1)")
    return {
        "architectures": [architecture(config)],
        "model_type": "bert",
        "vocab_size": config.vocab_size,
        "hidden_size": config.hidden_size,
        "num_hidden_layers": config.num_layers,
        "num_attention_heads": config.num_heads,
        "intermediate_size": config.intermediate_size,
        "max_position_embeddings": config.max_positions,
        "type_vocab_size": config.type_vocab_size,
        "layer_norm_eps": config.norm_eps,
        "hidden_act": _ACT_TO_HF[config.act],
        "hidden_dropout_prob": config.dropout,
        "attention_probs_dropout_prob": config.attn_dropout,
        "pad_token_id": config.pad_token_id,
        "position_embedding_type": "absolute",
        "tie_word_embeddings": True,
    }


def state_dict_to_hf(state_dict: StateDict, config) -> StateDict:
    """vlkit BERT state dict -> the keys of :func:`architecture`'s class (q, k, v split)."""
    state = rename_keys(split(state_dict, "qkv", ("q", "k", "v")), pair_rules(_PAIRS, reverse=True))
    return strip_prefix(state, "bert.") if architecture(config) == "BertModel" else state
