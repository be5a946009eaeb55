"""HF transformers GPT-2 (GPT2Model, GPT2LMHeadModel) <-> vlkit GPT, both ways."""

from __future__ import annotations

from .keys import StateDict, add_prefix, pair_rules, prefixed, rename_keys, transpose

MODEL_TYPE = "gpt"  # the vlkit family it loads into
ARCHITECTURES = ("GPT2Model", "GPT2LMHeadModel")
TOKENIZER_CLASS = "GPT2Tokenizer"

_LAYER = [
    ("ln_1", "norm1"),
    ("attn.c_attn", "attn.qkv"),
    ("attn.c_proj", "attn.proj"),
    ("ln_2", "norm2"),
    ("mlp.c_fc", "mlp.fc1"),
    ("mlp.c_proj", "mlp.fc2"),
]
_PAIRS = prefixed(
    [("wte", "tokens"), ("wpe", "positions"), ("ln_f", "norm")]
    + [(f"h.#.{a}", f"decoder.blocks.#.{b}") for a, b in _LAYER],
    outside="transformer.",
)
# Causal-mask buffers of old checkpoints; lm_head is tied to the token embedding.
_DROP = (r".*\.attn\.bias", r".*\.attn\.masked_bias", r"lm_head\.weight")
_CONV1D = r".*\.(attn\.qkv|attn\.proj|mlp\.fc1|mlp\.fc2)\.weight"  # vlkit names of HF's Conv1D layers

_ACTS = {
    "gelu_new": "gelu_tanh",
    "gelu_pytorch_tanh": "gelu_tanh",
    "gelu": "gelu",
    "quick_gelu": "quick_gelu",
    "relu": "relu",
}


def config_from_hf(hf: dict, state_dict: StateDict) -> dict:
    if hf.get("scale_attn_by_inverse_layer_idx") or hf.get("reorder_and_upcast_attn"):
        raise ValueError(
            "GPT-2 checkpoints with scale_attn_by_inverse_layer_idx/reorder_and_upcast_attn are not supported"
        )
    act = hf.get("activation_function", "gelu_new")
    if act not in _ACTS:
        raise ValueError(f"GPT-2 activation {act!r} is not supported")
    n_embd = hf["n_embd"]
    return dict(
        vocab_size=hf["vocab_size"],
        hidden_size=n_embd,
        num_layers=hf["n_layer"],
        num_heads=hf["n_head"],
        intermediate_size=hf.get("n_inner") or 4 * n_embd,
        max_positions=hf.get("n_positions", 1024),
        norm_eps=hf.get("layer_norm_epsilon", 1e-5),
        act=_ACTS[act],
        dropout=hf.get("resid_pdrop", 0.1),
        bos_token_id=hf.get("bos_token_id"),
        eos_token_id=hf.get("eos_token_id"),
    )


def state_dict_from_hf(state_dict: StateDict) -> StateDict:
    state = add_prefix(state_dict, "transformer.", keep=("lm_head.",))  # GPT2Model's keys are the transformer. part's
    return transpose(rename_keys(state, pair_rules(_PAIRS), _DROP), _CONV1D)  # Conv1D (in, out) -> Linear (out, in)


_ACTS_TO_HF = {"gelu_tanh": "gelu_new", "gelu": "gelu", "quick_gelu": "quick_gelu", "relu": "relu"}


def config_to_hf(config) -> dict:
    """vlkit GPTConfig -> an HF GPT2LMHeadModel config.json dict (the LM head tied to the embedding)."""
    if config.act not in _ACTS_TO_HF:
        raise ValueError(f"GPT activation {config.act!r} has no HF equivalent; expected one of {sorted(_ACTS_TO_HF)}")
    return {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": config.vocab_size,
        "n_embd": config.hidden_size,
        "n_layer": config.num_layers,
        "n_head": config.num_heads,
        "n_inner": config.intermediate_size,
        "n_positions": config.max_positions,
        "layer_norm_epsilon": config.norm_eps,
        "activation_function": _ACTS_TO_HF[config.act],
        "resid_pdrop": config.dropout,
        "embd_pdrop": config.dropout,
        "attn_pdrop": config.dropout,
        "bos_token_id": config.bos_token_id,
        "eos_token_id": config.eos_token_id,
        "tie_word_embeddings": True,
    }


def state_dict_to_hf(state_dict: StateDict, config=None) -> StateDict:
    """vlkit GPT state dict -> GPT2LMHeadModel keys (Linear weights stored as Conv1D's (in, out))."""
    return rename_keys(transpose(state_dict, _CONV1D), pair_rules(_PAIRS, reverse=True))
