"""HF transformers OPT (OPTForCausalLM, OPTModel) <-> vlkit OPT, both ways.

Meta's published folders hold the bare ``decoder.`` keys (an OPTModel layout) under the
OPTForCausalLM architecture, sometimes with the tied ``lm_head.weight`` written out; both read.
opt-350m's layout (post-norm layers, a 512-wide embedding projected in and out) is refused by name.
"""

from __future__ import annotations

import torch

from .keys import StateDict, add_prefix, fuse, pair_rules, prefixed, rename_keys, split

MODEL_TYPE = "opt"  # the vlkit family it loads into
ARCHITECTURES = ("OPTForCausalLM", "OPTModel")
TOKENIZER_CLASS = "GPT2Tokenizer"

_LAYER = [
    ("self_attn.q_proj", "attn.qkv.q"),
    ("self_attn.k_proj", "attn.qkv.k"),
    ("self_attn.v_proj", "attn.qkv.v"),
    ("self_attn.out_proj", "attn.proj"),
    ("self_attn_layer_norm", "norm1"),
    ("fc1", "mlp.fc1"),
    ("fc2", "mlp.fc2"),
    ("final_layer_norm", "norm2"),
]
_PAIRS = prefixed(
    [("embed_tokens", "tokens"), ("embed_positions", "positions"), ("final_layer_norm", "norm")]
    + [(f"layers.#.{a}", f"decoder.blocks.#.{b}") for a, b in _LAYER],
    outside="model.decoder.",
) + [("lm_head", "lm_head")]
_EMBEDDING = "model.decoder.embed_tokens.weight"


def _refuse_unsupported(hf: dict) -> None:
    """The OPT variants vlkit does not build, each named."""
    hidden = hf["hidden_size"]
    if not hf.get("do_layer_norm_before", True):
        raise ValueError("OPT with do_layer_norm_before=False (opt-350m's post-norm layers) is not supported")
    if hf.get("word_embed_proj_dim") not in (None, hidden):
        raise ValueError(
            f"OPT with word_embed_proj_dim {hf['word_embed_proj_dim']} != hidden_size {hidden} (opt-350m's "
            "projected embedding) is not supported"
        )
    if hf.get("_remove_final_layer_norm"):
        raise ValueError("OPT with _remove_final_layer_norm=True (no final layer norm) is not supported")
    if not hf.get("enable_bias", True):
        raise ValueError("OPT with enable_bias=False is not supported")
    if not hf.get("layer_norm_elementwise_affine", True):
        raise ValueError("OPT with layer_norm_elementwise_affine=False is not supported")
    if hf.get("activation_function", "relu") != "relu":
        raise ValueError(f"OPT activation {hf['activation_function']!r} is not supported; expected 'relu'")


def config_from_hf(hf: dict, state_dict: StateDict) -> dict:
    """vlkit OPTConfig fields from an HF config.json."""
    _refuse_unsupported(hf)
    eos = hf.get("eos_token_id", 2)
    if isinstance(eos, list):
        if len(eos) != 1:
            raise ValueError(f"OPT eos_token_id {eos}: vlkit decoders stop on one end token")
        eos = eos[0]
    return dict(
        vocab_size=hf["vocab_size"],
        hidden_size=hf["hidden_size"],
        num_layers=hf["num_hidden_layers"],
        num_heads=hf["num_attention_heads"],
        intermediate_size=hf["ffn_dim"],
        max_positions=hf.get("max_position_embeddings", 2048),
        dropout=float(hf.get("dropout", 0.1)),
        attention_dropout=float(hf.get("attention_dropout", 0.0)),
        tie_word_embeddings=_head_is_embedding(state_dict) or hf.get("tie_word_embeddings", True),
        pad_token_id=hf.get("pad_token_id", 1),
        bos_token_id=hf.get("bos_token_id", 2),
        eos_token_id=eos,
    )


def _head_is_embedding(state_dict: StateDict) -> bool:
    """Whether the file holds an ``lm_head.weight`` equal to the token embedding: the tied head
    written out (the model is tied whatever the config says)."""
    head = state_dict.get("lm_head.weight")
    embedding = state_dict.get(_EMBEDDING, state_dict.get(_EMBEDDING.removeprefix("model.")))
    return head is not None and embedding is not None and torch.equal(head, embedding)


def state_dict_from_hf(state_dict: StateDict) -> StateDict:
    """OPTForCausalLM or OPTModel keys -> vlkit OPT keys (q, k, v fused); a written-out tied head
    is left out."""
    state = add_prefix(state_dict, "model.", keep=("lm_head.",))
    if _head_is_embedding(state):
        state = {k: v for k, v in state.items() if k != "lm_head.weight"}
    return fuse(rename_keys(state, pair_rules(_PAIRS)), "qkv", ("q", "k", "v"))


def config_to_hf(config) -> dict:
    """vlkit OPTConfig -> an HF OPTForCausalLM config.json dict."""
    if config.act != "relu":
        raise ValueError(f"OPT activation {config.act!r} has no HF equivalent; HF OPT takes 'relu'")
    if config.norm_eps != 1e-5:
        raise ValueError(f"OPT norm_eps {config.norm_eps} has no HF equivalent; HF OPT's layer norms use 1e-5")
    return {
        "architectures": ["OPTForCausalLM"],
        "model_type": "opt",
        "vocab_size": config.vocab_size,
        "hidden_size": config.hidden_size,
        "num_hidden_layers": config.num_layers,
        "num_attention_heads": config.num_heads,
        "ffn_dim": config.intermediate_size,
        "max_position_embeddings": config.max_positions,
        "word_embed_proj_dim": config.hidden_size,
        "do_layer_norm_before": True,
        "activation_function": "relu",
        "dropout": config.dropout,
        "attention_dropout": config.attention_dropout,
        "enable_bias": True,
        "layer_norm_elementwise_affine": True,
        "tie_word_embeddings": config.tie_word_embeddings,
        "pad_token_id": config.pad_token_id,
        "bos_token_id": config.bos_token_id,
        "eos_token_id": config.eos_token_id,
    }


def state_dict_to_hf(state_dict: StateDict, config=None) -> StateDict:
    """vlkit OPT state dict -> OPTForCausalLM keys (q, k, v split)."""
    return rename_keys(split(state_dict, "qkv", ("q", "k", "v")), pair_rules(_PAIRS, reverse=True))
