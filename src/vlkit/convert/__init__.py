"""Maps outside checkpoints (HF transformers, open_clip) to vlkit configs and keys, and back.

Converters work on plain dicts (config fields, state dicts); they never build models.
Each HF converter module names the vlkit family it loads into (``MODEL_TYPE``), the HF
architectures it reads (``ARCHITECTURES``) and provides ``config_from_hf(hf_config, state_dict)``
and ``state_dict_from_hf(state_dict)``; for writing (``hf_export.save_hf``) it adds
``config_to_hf(config)``, ``state_dict_to_hf(state_dict, config)``, its HF ``TOKENIZER_CLASS``
(None for image models) and, for image models, ``image_processor_config(config)``. The key names
of both directions come from one table of (HF name, vlkit name) pairs (``keys.pair_rules``).
``open_clip`` reads and writes open_clip folders the same way. ``hf_clip`` and ``hf_blip`` also
read and write their config fields through one table of (vlkit field, HF field, HF default) rows,
and take the image tower's fixed options from the family's vision config
(``constants.CLIP_VISION``, ``constants.BLIP_VISION``, which the model files build theirs from): a
checkpoint gives its sizes.
"""

from . import hf_bert, hf_blip, hf_blip2, hf_clip, hf_gpt2, hf_llama, hf_llava, hf_opt, hf_siglip, hf_vilt, hf_vit

# HF config.json "model_type" -> converter module
HF_CONVERTERS = {
    "bert": hf_bert,
    "blip": hf_blip,
    "blip-2": hf_blip2,
    "clip": hf_clip,
    "gpt2": hf_gpt2,
    "llava": hf_llava,
    "opt": hf_opt,
    "siglip": hf_siglip,
    "vilt": hf_vilt,
    "vit": hf_vit,
    **{model_type: hf_llama for model_type in hf_llama.HF_MODEL_TYPES},
}
