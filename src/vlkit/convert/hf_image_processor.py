"""HF ``preprocessor_config.json`` -> the image fields of a vlkit vision config."""
from __future__ import annotations

_RESAMPLE = {2: "bilinear", 3: "bicubic"}  # PIL.Image.Resampling values


def image_fields_from_hf(pre: dict) -> dict:
    """image_mean / image_std / interpolation / resize_mode from an HF image processor config.

    A processor that center-crops resizes the short side first ("shortest"); one that does not
    resizes straight to the square ("squash").
    """
    out: dict = {}
    for key in ("image_mean", "image_std"):
        if key in pre:
            value = pre[key]
            if not (isinstance(value, (list, tuple)) and len(value) == 3):
                raise ValueError(f"preprocessor_config.json: {key} must be 3 numbers, got {value!r}")
            out[key] = tuple(float(v) for v in value)
    if pre.get("resample") in _RESAMPLE:
        out["interpolation"] = _RESAMPLE[pre["resample"]]
    if "do_center_crop" in pre:
        out["resize_mode"] = "shortest" if pre["do_center_crop"] else "squash"
    return out
