"""HF transformers Llama, Mistral and Qwen2 (``*ForCausalLM``, ``*Model``) <-> vlkit Llama, both ways.

The three share one layout: separate q/k/v projections (fused into vlkit's ``attn.qkv``, rows q,
k, v), gate/up/down feed-forward projections (gate and up fused into ``mlp.fc1``), RMSNorms and
an LM head that may be tied to the token embedding. Qwen2 adds biases to q/k/v; which biases a
checkpoint has is read from its weights. Rotary scaling (``rope_scaling`` / ``rope_parameters``
other than the default) is refused by name. Mistral's sliding-window attention equals full
attention on sequences no longer than the window, so such a model is limited to the window
(``max_positions``). A list of end tokens (Llama 3) keeps its first. An LM head stored beside
the embedding it equals is read as tied (older HF files store tied weights twice).

Written back, a model is an HF ``LlamaForCausalLM`` (``Qwen2ForCausalLM`` when it has q/k/v
biases and no output-projection bias, which ``LlamaConfig`` cannot say).
"""

from __future__ import annotations

import re

import torch

from .keys import StateDict, add_prefix, fuse, pair_rules, prefixed, rename_keys

MODEL_TYPE = "llama"  # the vlkit family it loads into
HF_MODEL_TYPES = ("llama", "mistral", "qwen2")
ARCHITECTURES = tuple(f"{n}{k}" for n in ("Llama", "Mistral", "Qwen2") for k in ("ForCausalLM", "Model"))
TOKENIZER_CLASS = "PreTrainedTokenizerFast"  # vlkit writes byte-level BPE as tokenizer.json

_QKV = ("q_proj", "k_proj", "v_proj")
_GATE_UP = ("gate_proj", "up_proj")
_LAYER = [
    ("input_layernorm", "norm1"),
    ("self_attn", "attn.qkv"),  # q_proj, k_proj, v_proj fused
    ("self_attn.o_proj", "attn.proj"),
    ("post_attention_layernorm", "norm2"),
    ("mlp", "mlp.fc1"),  # gate_proj, up_proj fused
    ("mlp.down_proj", "mlp.fc2"),
]
_PAIRS = prefixed(
    [("embed_tokens", "tokens"), ("norm", "norm")] + [(f"layers.#.{a}", f"decoder.blocks.#.{b}") for a, b in _LAYER],
    outside="model.",
) + [("lm_head", "lm_head")]
_DROP = (r".*\.rotary_emb\.inv_freq",)  # a buffer older checkpoints saved


def _rope_theta(hf: dict) -> float:
    rope = hf.get("rope_parameters") or hf.get("rope_scaling") or {}
    kind = rope.get("rope_type", rope.get("type", "default"))
    if kind != "default":
        raise ValueError(f"{kind} rope scaling is not supported (only the default rotary embedding is)")
    return float(rope.get("rope_theta", hf.get("rope_theta", 10000.0)))


def _max_positions(hf: dict) -> int:
    n = hf.get("max_position_embeddings", 2048)
    window = hf.get("sliding_window")
    uses_window = hf.get("use_sliding_window", hf["model_type"] == "mistral")
    return min(n, window) if uses_window and isinstance(window, int) else n


def _first(token_id):
    return token_id[0] if isinstance(token_id, list) and token_id else token_id


def _tied(state: StateDict) -> bool:
    """No LM head of its own: none stored, or one equal to the token embedding."""
    head, embed = state.get("lm_head.weight"), state.get("model.embed_tokens.weight")
    return head is None or (embed is not None and head.shape == embed.shape and torch.equal(head, embed))


def config_from_hf(hf: dict, state_dict: StateDict) -> dict:
    if hf.get("hidden_act", "silu") != "silu":
        raise ValueError(f"Llama-family activation {hf['hidden_act']!r} is not supported (silu is)")
    hidden, heads = hf["hidden_size"], hf["num_attention_heads"]
    if hf.get("head_dim") not in (None, hidden // heads):
        raise ValueError(f"head_dim {hf['head_dim']} other than hidden_size / num_attention_heads is not supported")
    state = add_prefix(state_dict, "model.", keep=("lm_head.",))
    return dict(
        vocab_size=hf["vocab_size"],
        hidden_size=hidden,
        intermediate_size=hf["intermediate_size"],
        num_layers=hf["num_hidden_layers"],
        num_heads=heads,
        num_kv_heads=hf.get("num_key_value_heads") or heads,
        rope_theta=_rope_theta(hf),
        rms_norm_eps=hf.get("rms_norm_eps", 1e-6),
        max_positions=_max_positions(hf),
        tie_word_embeddings=bool(hf.get("tie_word_embeddings", False)) or _tied(state),
        qkv_bias="model.layers.0.self_attn.q_proj.bias" in state,
        proj_bias="model.layers.0.self_attn.o_proj.bias" in state,
        mlp_bias="model.layers.0.mlp.gate_proj.bias" in state,
        attention_dropout=hf.get("attention_dropout", 0.0),
        initializer_range=hf.get("initializer_range", 0.02),
        bos_token_id=_first(hf.get("bos_token_id")),
        eos_token_id=_first(hf.get("eos_token_id")),
        pad_token_id=_first(hf.get("pad_token_id")),
    )


def state_dict_from_hf(state_dict: StateDict) -> StateDict:
    state = add_prefix(state_dict, "model.", keep=("lm_head.",))  # LlamaModel's keys are the model. part's
    if "lm_head.weight" in state and _tied(state):
        state.pop("lm_head.weight")
    state = fuse(fuse(state, "self_attn", _QKV), "mlp", _GATE_UP)
    return rename_keys(state, pair_rules(_PAIRS), _DROP)


def config_to_hf(config) -> dict:
    """vlkit LlamaConfig -> an HF LlamaForCausalLM (or Qwen2ForCausalLM) config.json dict."""
    qwen2 = config.qkv_bias and not config.proj_bias
    if qwen2 and config.mlp_bias:
        raise ValueError("a Llama with q/k/v and feed-forward biases but no output-projection bias has no HF class")
    if not qwen2 and config.qkv_bias != config.proj_bias:
        raise ValueError("HF Llama has biases on all of q/k/v/o or none; this model has them on the output only")
    out = {
        "architectures": ["Qwen2ForCausalLM" if qwen2 else "LlamaForCausalLM"],
        "model_type": "qwen2" if qwen2 else "llama",
        "vocab_size": config.vocab_size,
        "hidden_size": config.hidden_size,
        "intermediate_size": config.intermediate_size,
        "num_hidden_layers": config.num_layers,
        "num_attention_heads": config.num_heads,
        "num_key_value_heads": config.num_kv_heads,
        "head_dim": config.head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": config.max_positions,
        "rms_norm_eps": config.rms_norm_eps,
        "rope_theta": config.rope_theta,
        "rope_parameters": {"rope_type": "default", "rope_theta": config.rope_theta},
        "tie_word_embeddings": config.tie_word_embeddings,
        "attention_dropout": config.attention_dropout,
        "initializer_range": config.initializer_range,
        "bos_token_id": config.bos_token_id,
        "eos_token_id": config.eos_token_id,
        "pad_token_id": config.pad_token_id,
    }
    if not qwen2:
        out.update(attention_bias=config.qkv_bias, mlp_bias=config.mlp_bias)
    return out


def _split(state_dict: StateDict, name: str, parts: tuple[str, ...], sizes: list[int]) -> StateDict:
    """``<prefix>.<name>.weight`` (rows of ``sizes``) -> ``<prefix>.<name>.<part>.weight``, one per part."""
    pattern = re.compile(rf"(.*)\.{name}\.(weight|bias)")
    out = {}
    for key, value in state_dict.items():
        m = pattern.fullmatch(key)
        if m:
            for part, chunk in zip(parts, torch.split(value, sizes, dim=0)):
                out[f"{m[1]}.{name}.{part}.{m[2]}"] = chunk.contiguous()
        else:
            out[key] = value
    return out


def state_dict_to_hf(state_dict: StateDict, config) -> StateDict:
    """vlkit Llama state dict -> LlamaForCausalLM keys (the tied LM head is left out, as HF saves it)."""
    state = rename_keys(state_dict, pair_rules(_PAIRS, reverse=True))
    kv = config.num_kv_heads * config.head_dim
    state = _split(state, "self_attn", _QKV, [config.hidden_size, kv, kv])
    state = _split(state, "mlp", _GATE_UP, [config.intermediate_size, config.intermediate_size])
    if config.tie_word_embeddings:
        state.pop("lm_head.weight", None)
    return state
