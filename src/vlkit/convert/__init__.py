"""Maps outside checkpoints (HF transformers, open_clip) to vlkit configs and keys, and back.

Converters work on plain dicts (config fields, state dicts); they never build models.
Each HF converter module names the vlkit family it loads into (``MODEL_TYPE``), the HF
architectures it reads (``ARCHITECTURES``) and provides ``config_from_hf(hf_config, state_dict)``
and ``state_dict_from_hf(state_dict)``.
"""
from . import hf_bert, hf_blip, hf_clip, hf_gpt2, hf_vit

# HF config.json "model_type" -> converter module
HF_CONVERTERS = {
    "bert": hf_bert,
    "blip": hf_blip,
    "clip": hf_clip,
    "gpt2": hf_gpt2,
    "vit": hf_vit,
}
