"""HF transformers LlavaForConditionalGeneration <-> vlkit VLM, both ways.

The three parts convert apart: the CLIP vision tower through ``hf_clip``'s tables, the projector
by name, and the language model through the converter of its ``text_config`` model type (any
causal LM vlkit reads: GPT-2, OPT, Llama), so the text part's keys and fields stay that family's.

Key layouts read: transformers 4 / the hub (``vision_tower.vision_model.*``,
``multi_modal_projector.*``, ``language_model.model.*`` + ``language_model.lm_head.weight``), what
transformers 5 writes (``vision_tower.*`` without ``vision_model.``, the language model's base
keys under ``language_model.model.``) and its in-memory names (``model.vision_tower.*``,
``model.language_model.*``, ``lm_head.weight``). Written: transformers 5's layout. transformers
ties LLaVA's LM head only for Llama-style names, so an export writes the head out, untied.
"""

from __future__ import annotations

import torch

from . import hf_clip
from .hf_image_processor import image_processor_to_hf
from .keys import StateDict, add_prefix, pair_rules, rename_keys

MODEL_TYPE = "vlm"
ARCHITECTURES = ("LlavaForConditionalGeneration",)
TOKENIZER_CLASS = "GPT2Tokenizer"  # preferred; the generic class is written when the tokenizer is another

_VISION_TYPES = ("clip_vision_model",)
_PROJECTOR = [("linear_1", "fc1"), ("linear_2", "fc2")]
_PARTS = ("vision_tower.", "multi_modal_projector.", "language_model.")


def _converters() -> dict:
    from . import HF_CONVERTERS  # the package imports this module: look up at call time

    return HF_CONVERTERS


def _text_converter(text_config: dict):
    kind = text_config.get("model_type")
    convs = _converters()
    if kind not in convs:
        raise ValueError(
            f"LLaVA text_config model_type {kind!r} is not one vlkit reads; expected one of {sorted(convs)}"
        )
    return convs[kind]


def _writer(model_type: str):
    """The converter that writes vlkit family ``model_type`` (e.g. "opt" -> hf_opt)."""
    for conv in _converters().values():
        if model_type == conv.MODEL_TYPE:
            return conv
    raise ValueError(f"a VLM whose LLM is a {model_type!r} model cannot be written as HF LLaVA")


def _parts(state_dict: StateDict) -> dict[str, StateDict]:
    """Split an HF LLaVA state dict (any layout) into its vision tower (CLIPVisionModel keys with
    ``vision_model.``), projector and language model (its base model's keys, or its causal LM's,
    with ``lm_head.weight``)."""
    out: dict[str, StateDict] = {part: {} for part in _PARTS}
    for key, value in state_dict.items():
        if key == "lm_head.weight":  # transformers 5's in-memory name
            out["language_model."][key] = value
            continue
        name = key.removeprefix("model.")
        part = next((p for p in _PARTS if name.startswith(p)), None)
        if part is None:
            raise ValueError(f"LLaVA checkpoint key {key!r} belongs to none of {[p[:-1] for p in _PARTS]}")
        out[part][name[len(part) :]] = value
    text = out["language_model."]
    out["language_model."] = {k.removeprefix("model."): v for k, v in text.items()}  # base keys (+ lm_head)
    out["vision_tower."] = add_prefix(out["vision_tower."], "vision_model.")
    return out


def config_from_hf(hf: dict, state_dict: StateDict) -> dict:
    """vlkit VLMConfig fields from an HF LlavaConfig (config.json as a dict)."""
    v, t = dict(hf.get("vision_config") or {}), dict(hf.get("text_config") or {})
    if v.get("model_type", "clip_vision_model") not in _VISION_TYPES:
        raise ValueError(
            f"LLaVA vision tower {v.get('model_type')!r} is not supported; expected one of {_VISION_TYPES}"
        )
    layer = hf.get("vision_feature_layer", -2)
    if not isinstance(layer, int):
        raise ValueError(f"LLaVA vision_feature_layer {layer!r}: only one layer (an integer) is supported")
    act = hf.get("projector_hidden_act", "gelu")
    if act != "gelu":
        raise ValueError(f"LLaVA projector_hidden_act {act!r} is not supported; expected 'gelu'")
    if hf.get("tie_word_embeddings"):
        t["tie_word_embeddings"] = True  # LlavaConfig ties when either level says so
    conv = _text_converter(t)
    return dict(
        vision=hf_clip.config_from_hf({"vision_config": v}, {})["vision"],
        text=conv.config_from_hf(t, _parts(state_dict)["language_model."]),
        text_model_type=conv.MODEL_TYPE,
        image_token_id=hf.get("image_token_index", hf.get("image_token_id", 32000)),
        vision_feature_layer=layer,
        vision_feature_select_strategy=hf.get("vision_feature_select_strategy", "default"),
        projector="mlp2x_gelu",
        projector_bias=hf.get("multimodal_projector_bias", True),
    )


def state_dict_from_hf_config(state_dict: StateDict, hf: dict) -> StateDict:
    """HF LLaVA keys -> vlkit VLM keys (``visual.*``, ``projector.*``, ``llm.*``); the language
    model's part converted by its own family's converter."""
    parts = _parts(state_dict)
    conv = _text_converter(hf.get("text_config") or {})
    text_hf = parts["language_model."]
    text = conv.state_dict_from_hf(text_hf)
    head = text_hf.get("lm_head.weight")
    if head is not None and "lm_head.weight" not in text and not any(torch.equal(head, w) for w in text.values()):
        raise ValueError(
            f"the LLaVA checkpoint's lm_head differs from its token embedding, but vlkit's {conv.MODEL_TYPE} "
            "ties the two"
        )
    vision = hf_clip.state_dict_from_hf(parts["vision_tower."])
    projector = rename_keys(parts["multi_modal_projector."], pair_rules(_PROJECTOR))
    return {
        **vision,
        **{f"projector.{k}": w for k, w in projector.items()},
        **{f"llm.{k}": w for k, w in text.items()},
    }


def config_to_hf(config) -> dict:
    """vlkit VLMConfig -> an HF LlavaForConditionalGeneration config.json dict."""
    if config.projector != "mlp2x_gelu":
        raise ValueError(f"HF LLaVA has no {config.projector!r} projector; its projector is 'mlp2x_gelu'")
    from ..models.clip import CLIPConfig

    vision = hf_clip.config_to_hf(CLIPConfig(vision=config.vision))["vision_config"]  # the CLIP tower's fields
    text = {**_writer(config.text_model_type).config_to_hf(config.text), "tie_word_embeddings": False}
    text.pop("architectures", None)
    return {
        "architectures": list(ARCHITECTURES),
        "model_type": "llava",
        "vision_config": {**vision, "model_type": "clip_vision_model"},
        "text_config": text,
        "image_token_index": config.image_token_id,
        "image_seq_length": config.num_image_tokens,
        "projector_hidden_act": "gelu",
        "vision_feature_layer": config.vision_feature_layer,
        "vision_feature_select_strategy": config.vision_feature_select_strategy,
        "multimodal_projector_bias": config.projector_bias,
        "tie_word_embeddings": False,
    }


def _base_keys(state: StateDict) -> StateDict:
    """A causal LM's keys -> its base model's: the prefix every key but ``lm_head`` shares
    (``model.``, ``transformer.``) taken off."""
    body = [k for k in state if not k.startswith("lm_head.")]
    prefix = body[0].split(".", 1)[0] + "." if body else ""
    if not prefix or not all(k.startswith(prefix) for k in body):
        return state
    return {(k if k.startswith("lm_head.") else k[len(prefix) :]): v for k, v in state.items()}


def state_dict_to_hf(state_dict: StateDict, config=None) -> StateDict:
    """vlkit VLM state dict -> transformers 5's LLaVA layout, the LM head written out."""
    if config is None:
        raise ValueError("writing a VLM needs its config (the language model's family)")
    vision = {k: v for k, v in state_dict.items() if k.startswith("visual.")}
    projector = {k.removeprefix("projector."): v for k, v in state_dict.items() if k.startswith("projector.")}
    llm = {k.removeprefix("llm."): v for k, v in state_dict.items() if k.startswith("llm.")}
    text = _base_keys(_writer(config.text_model_type).state_dict_to_hf(llm, config.text))
    if "lm_head.weight" not in text:
        text["lm_head.weight"] = _tied_embedding(llm, config.text)
    out = {k.replace("vision_model.", "vision_tower.", 1): v for k, v in hf_clip.state_dict_to_hf(vision).items()}
    out.update(
        {f"multi_modal_projector.{k}": v for k, v in rename_keys(projector, pair_rules(_PROJECTOR, True)).items()}
    )
    out.update({("language_model.lm_head.weight" if k == "lm_head.weight" else f"language_model.model.{k}"): v
                for k, v in text.items()})  # fmt: skip
    return out


def _tied_embedding(llm: StateDict, text) -> torch.Tensor:
    """The token embedding of a tied LLM: its one (vocab_size, hidden_size) tensor."""
    shape = (text.vocab_size, text.hidden_size)
    found = [w for w in llm.values() if tuple(w.shape) == shape]
    if len(found) != 1:
        raise ValueError(f"the LLM has {len(found)} tensors of the token embedding's shape {shape}; expected one")
    return found[0].clone()  # its own storage: safetensors refuses shared tensors


def image_processor_config(config) -> dict:
    """The CLIPImageProcessor config matching the vision tower's image transform."""
    return image_processor_to_hf(config.vision, "CLIPImageProcessor")
