"""vlkit.image_transform against transformers' CLIP image processors on real photos.

Measured (2026-11-27): against ``CLIPImageProcessorPil`` (HF's PIL path, the same PIL bicubic
resampler) the tensors agree to <= 2.4e-7 (float32 rounding of the normalisation; the uint8
pixels are identical). ``CLIPImageProcessor`` in transformers 5 resizes uint8 tensors with
torchvision's antialiased bicubic kernel instead of PIL's; its pixels differ from PIL's by at
most one uint8 level (= 1 / 255 / std <= 0.0151 after normalisation) in about 0.3% of values.
"""

import numpy as np
import pytest
import torch
import transformers
from PIL import Image
from skimage import data as skimage_data

import vlkit
from vlkit.data.transforms import ImageTransform, shortest_side_size

PHOTOS = ("astronaut", "chelsea", "coffee")  # 512x512, 451x300, 600x400
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
ONE_LEVEL = 1 / 255 / min(CLIP_STD)  # one uint8 step after normalisation


def _photo(name: str) -> Image.Image:
    return Image.fromarray(getattr(skimage_data, name)())


def _pil_processor(size: int):
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    return CLIPImageProcessorPil(size={"shortest_edge": size}, crop_size={"height": size, "width": size})


@pytest.mark.parametrize("name", PHOTOS)
@pytest.mark.parametrize("size", [224, 64])
def test_matches_hf_pil_clip_processor(name, size):
    transform = vlkit.image_transform(vlkit.create_model("clip-tiny", vision={"image_size": size}))
    ours = transform(_photo(name))
    ref = torch.from_numpy(_pil_processor(size)(images=_photo(name), return_tensors="np")["pixel_values"][0])
    assert ours.shape == ref.shape == (3, size, size) and ours.dtype == torch.float32
    assert (ours - ref).abs().max().item() <= 1e-6


@pytest.mark.parametrize("name", PHOTOS)
def test_torchvision_backed_clip_processor_within_one_level(name):
    """transformers 5's default CLIPImageProcessor resamples with torchvision, not PIL."""
    transform = vlkit.image_transform(vlkit.models.clip.clip_vit_b_16())
    ours = transform(_photo(name))
    ref = transformers.CLIPImageProcessor()(images=_photo(name), return_tensors="pt")["pixel_values"][0]
    diff = (ours - ref).abs()
    assert diff.max().item() <= ONE_LEVEL + 1e-5
    assert (diff > 1e-5).float().mean().item() < 0.01  # all but a few pixel values are identical


def test_resize_rounding_and_crop_offset():
    assert shortest_side_size(300, 451, 224) == (224, 336)  # int(224 * 451 / 300) = 336
    assert shortest_side_size(427, 640, 224) == (224, 335)
    # a 3x5 checkerboard-free ramp: with image_size equal to the short side only the crop acts,
    # and it starts at (5 - 3) // 2 = 1
    ramp = np.arange(15, dtype=np.uint8).reshape(3, 5)[..., None].repeat(3, axis=2) * 10
    t = ImageTransform(3, (0.0, 0.0, 0.0), (1 / 255, 1 / 255, 1 / 255))
    assert torch.equal(t(ramp)[0], torch.from_numpy(ramp[:, 1:4, 0]).float())


def test_squash_mode_and_image_modes():
    photo = _photo("chelsea")
    squash = ImageTransform(32, (0.5,) * 3, (0.5,) * 3, resize_mode="squash", interpolation="bilinear")
    expected = np.asarray(photo.resize((32, 32), Image.BILINEAR), dtype=np.float64) / 255 * 2 - 1
    assert torch.allclose(squash(photo), torch.from_numpy(expected).permute(2, 0, 1).float(), atol=1e-6)
    t = ImageTransform(16, (0.0,) * 3, (1.0,) * 3)
    grey = t(photo.convert("L"))
    assert torch.equal(grey[0], grey[1]) and torch.equal(grey[1], grey[2])
    transparent = Image.new("RGBA", (20, 20), (10, 20, 30, 0))  # fully transparent: white, as HF does
    assert torch.allclose(t(transparent), torch.ones(3, 16, 16))


def test_train_transform_random_resized_crop():
    photo = _photo("astronaut")  # square: a 3:2 photo at 90-100% area and ratio <= 4/3 always falls back to the center
    model = vlkit.create_model("clip-tiny")
    torch.manual_seed(0)
    a = vlkit.image_transform(model, train=True)(photo)
    torch.manual_seed(0)
    b = vlkit.image_transform(model, train=True)(photo)
    c = vlkit.image_transform(model, train=True, generator=torch.Generator().manual_seed(1))(photo)
    evaluation = vlkit.image_transform(model)(photo)
    assert a.shape == c.shape == evaluation.shape == (3, 32, 32)
    assert torch.equal(a, b) and not torch.equal(a, c)
    t = ImageTransform(32, (0.0,) * 3, (1.0,) * 3, train=True, generator=torch.Generator().manual_seed(0))
    for _ in range(50):  # boxes stay inside the image and cover 90-100% of its area (up to rounding)
        left, top, right, bottom = t.random_crop_box(500, 400)
        assert 0 <= left < right <= 500 and 0 <= top < bottom <= 400
        assert 0.89 <= (right - left) * (bottom - top) / (500 * 400) <= 1.0
    assert t.random_crop_box(600, 400) == (33, 0, 566, 400)  # no 90% box fits at ratio <= 4/3: central 4:3 crop


def test_errors_name_the_input():
    with pytest.raises(TypeError, match="PIL image"):
        vlkit.image_transform(vlkit.create_model("clip-tiny"))("not an image")
    with pytest.raises(TypeError, match="image fields"):
        vlkit.image_transform(vlkit.models.clip.CLIPTextConfig())
    with pytest.raises(ValueError, match="resize_mode"):
        ImageTransform(32, (0.0,) * 3, (1.0,) * 3, resize_mode="longest")
