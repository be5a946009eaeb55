"""Reading images: one decoder for training, evaluation, embedding, ``vlkit caption`` and ``vqa``.

:func:`load_image` reads a file into a PIL RGB image; :func:`to_rgb` is the conversion it
applies, and :func:`vlkit.image_transform` applies the same conversion to any PIL image it is
given, so a file gives the same tensor whichever way it was opened. The rules:

- EXIF orientation is applied (the pixels as a photo viewer shows them) and the tag dropped;
- transparency (RGBA, LA, PA, a palette or a grey/RGB image with a transparent colour) is
  composited onto :data:`BACKGROUND`, white, as HF's ``CLIPImageProcessor`` and OpenAI's CLIP
  ``preprocess`` do;
- 16-bit greyscale (modes ``I;16``, ``I;16L``, ``I;16B`` and ``I``, which is how PIL decodes 16-bit
  PNG and TIFF) is scaled to 8 bits: ``v -> round(v * 255 / 65535)``, so 0 -> 0 and 65535 -> 255
  (PIL's own conversion clips everything above 255 to white); ``I`` values outside 0-65535 are
  clipped first;
- every other mode (``L``, ``1``, ``P``, ``CMYK``, ``YCbCr``, ``F``...) goes through PIL's
  ``convert("RGB")``.

:func:`load_image` decodes the whole file, so a truncated or corrupt file fails there, and refuses
an image of more than ``PIL.Image.MAX_IMAGE_PIXELS`` pixels (a possible decompression bomb)
before decoding it. Every failure is an :class:`ImageError` (a ``ValueError``) naming the file; a
path that does not exist is an :class:`ImageNotFoundError`, which is also a ``FileNotFoundError``.
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path
from typing import IO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

BACKGROUND = (255, 255, 255)  # what transparent pixels become
_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N", "I")
_ORIENTATION = 0x0112  # the EXIF tag


class ImageError(ValueError):
    """An image file that cannot be used: ``str(e)`` is ``"<path>: <reason>"``."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = path, reason


class ImageNotFoundError(ImageError, FileNotFoundError):
    """An image path that does not exist (or is not a file)."""


def _from_array(array: np.ndarray) -> Image.Image:
    if array.ndim not in (2, 3) or array.dtype not in (np.uint8, np.uint16):
        raise TypeError(f"expected a (H, W) or (H, W, C) uint8 or uint16 array, got {array.dtype} {array.shape}")
    if array.dtype == np.uint16:
        array = _scale_16_to_8(array)
    return Image.fromarray(array)


def _scale_16_to_8(values: np.ndarray) -> np.ndarray:
    """0-65535 -> 0-255, rounded to nearest (65535 / 255 = 257 exactly, so there are no ties)."""
    values = np.clip(values.astype(np.float64), 0, 65535)
    return np.rint(values / 257.0).astype(np.uint8)


def _apply_orientation(image: Image.Image) -> Image.Image:
    if image.getexif().get(_ORIENTATION, 1) in (2, 3, 4, 5, 6, 7, 8):
        return ImageOps.exif_transpose(image)
    return image


def to_rgb(image: Image.Image | np.ndarray) -> Image.Image:
    """A PIL RGB image of a PIL image of any mode, or of a uint8/uint16 array (H, W) or (H, W, C),
    by the rules of this module; an RGB image without EXIF rotation is returned as it is."""
    if isinstance(image, np.ndarray):
        image = _from_array(image)
    if not isinstance(image, Image.Image):
        raise TypeError(f"expected a PIL image or a uint8 numpy array, got {type(image).__name__}")
    image = _apply_orientation(image)
    if image.mode in _SIXTEEN_BIT:
        image = Image.fromarray(_scale_16_to_8(np.asarray(image)))  # (H, W) uint8, mode L
    if image.mode == "RGB" and image.info.get("transparency") is None:
        return image
    if "A" in image.getbands() or "a" in image.getbands() or image.info.get("transparency") is not None:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*BACKGROUND, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _bomb_message(error: Exception) -> str:
    found = re.search(r"(\d+) pixels", str(error))
    size = f"{int(found.group(1)):,} pixels" if found else "the image"
    return (
        f"{size} is more than the limit of {Image.MAX_IMAGE_PIXELS:,} (PIL.Image.MAX_IMAGE_PIXELS): "
        "refused as a possible decompression bomb"
    )


def load_image(source: str | os.PathLike | IO[bytes]) -> Image.Image:
    """A PIL RGB image from a file path or a binary file object, fully decoded (see the module)."""
    name = str(getattr(source, "name", "<image data>")) if hasattr(source, "read") else str(source)
    if not hasattr(source, "read") and not Path(source).is_file():
        raise ImageNotFoundError(name, "does not exist" if not Path(source).exists() else "not a file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)  # refuse, not warn, above the limit
            with Image.open(source) as image:
                image.load()
                rgb = to_rgb(image)
                return rgb.copy() if rgb is image else rgb  # closing `image` invalidates it
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageError(name, _bomb_message(e)) from None
    except UnidentifiedImageError:
        raise ImageError(name, "not an image file PIL can read") from None
    except Exception as e:  # truncated data, a broken stream, a mode PIL cannot convert: all say the file
        raise ImageError(name, f"cannot decode the image ({type(e).__name__}: {e})") from None
