"""HF image processor configs <-> the image fields of a vlkit vision config.

vlkit's preprocessing (``vlkit.image_transform``) is HF's PIL path: resize with PIL's resampler
("shortest": the short side, then a center crop; "squash": straight to the square), scale to
[0, 1], normalise. HF's processors that center-crop take ``size={"shortest_edge": S}``; the others
``size={"height": S, "width": S}``.
"""

from __future__ import annotations

_RESAMPLE = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic"}  # PIL.Image.Resampling values
_RESAMPLE_CODES = {name: code for code, name in _RESAMPLE.items()}
CROPPING_PROCESSOR = "CLIPImageProcessor"  # the HF processor that resizes the short side and center-crops


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


def image_processor_to_hf(vision, squash_processor: str) -> dict:
    """The HF image processor config matching ``vlkit.image_transform`` for ``vision`` (a ViTConfig).

    ``squash_processor`` names the family's own HF processor (ViTImageProcessor,
    BlipImageProcessor, ...), used when images are squashed; "shortest" needs the center crop
    of :data:`CROPPING_PROCESSOR`.
    """
    S = vision.image_size
    shortest = vision.resize_mode == "shortest"
    out = {
        "image_processor_type": CROPPING_PROCESSOR if shortest else squash_processor,
        "do_resize": True,
        "size": {"shortest_edge": S} if shortest else {"height": S, "width": S},
        "resample": _RESAMPLE_CODES[vision.interpolation],
    }
    if shortest or squash_processor == CROPPING_PROCESSOR:
        out.update(do_center_crop=shortest, crop_size={"height": S, "width": S})
    return {
        **out,
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": list(vision.image_mean),
        "image_std": list(vision.image_std),
        "do_convert_rgb": True,
    }
