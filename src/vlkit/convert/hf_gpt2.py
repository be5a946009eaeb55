"""HF transformers GPT-2 (GPT2Model, GPT2LMHeadModel) <-> vlkit GPT."""
from __future__ import annotations

from .keys import StateDict, rename_keys, transpose

MODEL_TYPE = "gpt"  # the vlkit family it loads into
ARCHITECTURES = ("GPT2Model", "GPT2LMHeadModel")

_RULES = [
    (r"(?:transformer\.)?wte\.(.*)", r"tokens.\1"),
    (r"(?:transformer\.)?wpe\.(.*)", r"positions.\1"),
    (r"(?:transformer\.)?h\.(\d+)\.ln_1\.(.*)", r"decoder.blocks.\1.norm1.\2"),
    (r"(?:transformer\.)?h\.(\d+)\.attn\.c_attn\.(.*)", r"decoder.blocks.\1.attn.qkv.\2"),
    (r"(?:transformer\.)?h\.(\d+)\.attn\.c_proj\.(.*)", r"decoder.blocks.\1.attn.proj.\2"),
    (r"(?:transformer\.)?h\.(\d+)\.ln_2\.(.*)", r"decoder.blocks.\1.norm2.\2"),
    (r"(?:transformer\.)?h\.(\d+)\.mlp\.c_fc\.(.*)", r"decoder.blocks.\1.mlp.fc1.\2"),
    (r"(?:transformer\.)?h\.(\d+)\.mlp\.c_proj\.(.*)", r"decoder.blocks.\1.mlp.fc2.\2"),
    (r"(?:transformer\.)?ln_f\.(.*)", r"norm.\1"),
]
# Causal-mask buffers of old checkpoints; lm_head is tied to the token embedding.
_DROP = (r".*\.attn\.bias", r".*\.attn\.masked_bias", r"lm_head\.weight")

_ACTS = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu": "gelu", "quick_gelu": "quick_gelu", "relu": "relu"}


def config_from_hf(hf: dict, state_dict: StateDict) -> dict:
    if hf.get("scale_attn_by_inverse_layer_idx") or hf.get("reorder_and_upcast_attn"):
        raise ValueError("GPT-2 checkpoints with scale_attn_by_inverse_layer_idx/reorder_and_upcast_attn are not supported")
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
    sd = rename_keys(state_dict, _RULES, _DROP)
    return transpose(sd, r".*\.(attn\.qkv|attn\.proj|mlp\.fc1|mlp\.fc2)\.weight")
