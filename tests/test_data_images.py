"""One image decoder for every path: known answers for each kind of file, and the same pixels
whether a file reaches the model through a dataset, `vlkit embed`, `vlkit caption` or
`vlkit.image_transform` on a PIL image."""

import io

import numpy as np
import pytest
import torch
from PIL import Image

import vlkit
from vlkit.cli import main
from vlkit.cli.caption import read_images
from vlkit.cli.embed import _ImageFiles
from vlkit.data import ImageTextFolder
from vlkit.data.images import BACKGROUND, ImageError, ImageNotFoundError, load_image, to_rgb
from vlkit.data.vqa import VQAFolder


def pixels(image: Image.Image) -> np.ndarray:
    assert image.mode == "RGB"
    return np.asarray(image)


def transparent_png(path):
    """Row 0: fully transparent red, half-transparent black, opaque (200, 100, 50)."""
    im = Image.new("RGBA", (3, 1))
    for x, rgba in enumerate([(255, 0, 0, 0), (0, 0, 0, 128), (200, 100, 50, 255)]):
        im.putpixel((x, 0), rgba)
    im.save(path)
    return path


def gradient16_png(path):
    """A 16-bit greyscale ramp over the whole range: v = 64 * i for i in 0..1023."""
    Image.fromarray((np.arange(1024, dtype=np.uint16) * 64).reshape(4, 256)).save(path)
    return path


def palette_png(path):
    """Palette index 0 transparent, index 1 red: [transparent, red]."""
    im = Image.new("P", (2, 1))
    im.putpalette([10, 20, 30, 200, 0, 0])
    im.putpixel((1, 0), 1)
    im.save(path, transparency=0)
    return path


def rotated_jpeg(path):
    """16x8 stored pixels, left half red and right half blue, EXIF orientation 6 (show rotated 90
    degrees clockwise): a viewer shows 8x16, red on top."""
    im = Image.new("RGB", (16, 8), (0, 0, 255))
    im.paste((255, 0, 0), (0, 0, 8, 8))
    exif = Image.Exif()
    exif[0x0112] = 6
    im.save(path, exif=exif, quality=100)
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("kinds")
    return {
        "transparent": transparent_png(folder / "transparent.png"),
        "gradient16": gradient16_png(folder / "gradient16.png"),
        "palette": palette_png(folder / "palette.png"),
        "rotated": rotated_jpeg(folder / "rotated.jpg"),
    }


def test_transparency_is_composited_onto_white(files):
    assert BACKGROUND == (255, 255, 255)
    # alpha 128 over white: 255 * (1 - 128 / 255) = 127
    assert pixels(load_image(files["transparent"])).tolist() == [[[255, 255, 255], [127, 127, 127], [200, 100, 50]]]
    assert pixels(load_image(files["palette"])).tolist() == [[[255, 255, 255], [200, 0, 0]]]
    assert pixels(to_rgb(Image.new("LA", (1, 1), (0, 0)))).tolist() == [[[255, 255, 255]]]
    assert pixels(to_rgb(Image.new("PA", (1, 1), (0, 0)))).tolist() == [[[255, 255, 255]]]


def test_sixteen_bit_is_scaled_not_clipped(files):
    grey = pixels(load_image(files["gradient16"]))[..., 0].reshape(-1)
    expected = np.rint(np.arange(1024) * 64 / 257).astype(np.uint8)
    assert np.array_equal(grey, expected)
    assert (grey == 255).sum() == 2  # 65472 / 257 = 254.75 and 65408 / 257 = 254.5: only the top 2 of 1024
    counts = np.bincount(grey, minlength=256)
    assert counts.min() >= 2 and counts.max() <= 5  # every level used, evenly (4 of 1024 each, +-2 at the ends)
    # every 16-bit mode PIL has, and 32-bit I (how 16-bit PNGs used to open): 257 k -> k, rounding at 128.5
    values = np.array([[0, 257 * 3, 257 * 3 + 128, 257 * 3 + 129, 65535]], dtype=np.uint16)
    for array in (values, values.astype(">u2"), values.astype(np.int32)):
        assert pixels(to_rgb(Image.fromarray(array)))[0, :, 0].tolist() == [0, 3, 3, 4, 255]
    assert pixels(to_rgb(values))[0, :, 0].tolist() == [0, 3, 3, 4, 255]  # a uint16 array too


def test_exif_orientation_is_applied(files):
    image = load_image(files["rotated"])
    assert image.size == (8, 16)
    top, bottom = pixels(image)[4, 4].astype(int), pixels(image)[12, 4].astype(int)
    assert top[0] > 240 and top[2] < 15 and bottom[2] > 240 and bottom[0] < 15
    assert image.getexif().get(0x0112, 1) == 1  # applied once: the tag is gone


def test_other_modes_become_rgb():
    assert pixels(to_rgb(Image.new("CMYK", (1, 1), (0, 255, 255, 0)))).tolist() == [[[255, 0, 0]]]
    assert pixels(to_rgb(Image.new("L", (1, 1), 77))).tolist() == [[[77, 77, 77]]]
    assert pixels(to_rgb(Image.new("1", (1, 1), 1))).tolist() == [[[255, 255, 255]]]
    rgb = Image.new("RGB", (2, 2), (1, 2, 3))
    assert to_rgb(rgb) is rgb  # nothing to do: no copy
    with pytest.raises(TypeError, match="uint8 or uint16"):
        to_rgb(np.zeros((2, 2), dtype=np.float32))


def test_every_failure_is_a_value_error_naming_the_file(tmp_path, monkeypatch):
    big = tmp_path / "big.png"
    Image.new("RGB", (12, 12)).save(big)  # 144 pixels
    huge = tmp_path / "huge.png"
    Image.new("RGB", (20, 20)).save(huge)  # 400 pixels: PIL's error (above twice the limit), not its warning
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    for path, count in ((big, "144"), (huge, "400")):
        with pytest.raises(ImageError, match=rf"{path.name}: {count} pixels is more than the limit of 100 .*bomb"):
            load_image(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    assert load_image(huge).size == (20, 20)
    monkeypatch.undo()

    full = tmp_path / "full.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(full)
    (tmp_path / "truncated.png").write_bytes(full.read_bytes()[: len(full.read_bytes()) // 2])
    with pytest.raises(ImageError, match="truncated.png: cannot decode the image"):
        load_image(tmp_path / "truncated.png")
    jpeg = io.BytesIO()
    Image.new("RGB", (64, 64), "white").save(jpeg, format="JPEG")
    (tmp_path / "truncated.jpg").write_bytes(jpeg.getvalue()[: len(jpeg.getvalue()) // 2])
    with pytest.raises(ImageError, match="(?i)truncated.jpg: cannot decode the image .*truncated"):
        load_image(tmp_path / "truncated.jpg")
    (tmp_path / "text.png").write_text("not an image")
    with pytest.raises(ImageError, match="text.png: not an image file PIL can read"):
        load_image(tmp_path / "text.png")
    with pytest.raises(ImageNotFoundError, match="nope.png: does not exist") as missing:
        load_image(tmp_path / "nope.png")
    assert isinstance(missing.value, FileNotFoundError) and isinstance(missing.value, ValueError)
    with pytest.raises(ImageError, match="not a file"):
        load_image(tmp_path)
    with open(full, "rb") as f:  # a file object works too, and is named in errors
        assert load_image(f).size == (64, 64)


@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory):
    torch.manual_seed(0)
    model = vlkit.create_model("clip-tiny").eval()
    return model, str(model.save_pretrained(tmp_path_factory.mktemp("clip")))


def test_every_path_gives_the_same_pixels(files, tmp_path, clip_folder):
    """Datasets, `vlkit embed`'s reader, `vlkit caption`'s reader and image_transform on a file
    opened by hand all decode through load_image (before: black vs white transparency, clipped 16-bit)."""
    model, _ = clip_folder
    transform = vlkit.image_transform(model)
    names = sorted(files)
    expected = torch.stack([transform(load_image(files[n])) for n in names])
    by_hand = torch.stack([transform(Image.open(files[n])) for n in names])
    assert torch.equal(by_hand, expected)
    (tmp_path / "pairs.csv").write_text("image,caption\n" + "".join(f"{files[n]},{n}\n" for n in names))
    folder = ImageTextFolder(tmp_path / "pairs.csv", transform=transform)
    assert torch.equal(torch.stack([folder[i]["pixel_values"] for i in range(len(names))]), expected)
    (tmp_path / "qa.csv").write_text("image,question,answer\n" + "".join(f"{files[n]},what?,{n}\n" for n in names))
    vqa = VQAFolder(tmp_path / "qa.csv", transform=transform)
    assert torch.equal(torch.stack([vqa[i]["pixel_values"] for i in range(len(names))]), expected)
    embed_files = _ImageFiles([files[n] for n in names], transform)
    assert torch.equal(torch.stack([embed_files[i]["pixel_values"] for i in range(len(names))]), expected)
    assert torch.equal(read_images([str(files[n]) for n in names], model), expected)
    white = transform(Image.new("RGB", (3, 1), (255, 255, 255)))
    assert not torch.equal(expected[names.index("transparent")], white)  # the opaque pixel shows
    assert torch.equal(transform(Image.new("RGBA", (5, 5), (0, 0, 0, 0))), transform(Image.new("RGB", (5, 5), "white")))


def test_embed_cli_decodes_transparency_and_16_bit(tmp_path, clip_folder, capsys):
    """`vlkit embed`: a transparent PNG embeds as white, a 16-bit ramp as its 8-bit equivalent."""
    _, folder = clip_folder
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    Image.new("RGBA", (8, 8), (0, 0, 0, 0)).save(imgs / "a_transparent.png")
    Image.new("RGB", (8, 8), "white").save(imgs / "b_white.png")
    ramp = np.arange(64, dtype=np.uint16).reshape(8, 8) * 1028  # 0 .. 64764
    Image.fromarray(ramp).save(imgs / "c_ramp16.png")
    Image.fromarray(np.rint(ramp / 257).astype(np.uint8)).save(imgs / "d_ramp8.png")
    assert (
        main(["embed", "--model", folder, "--images", str(imgs), "--out", str(tmp_path / "out"), "--device", "cpu"])
        == 0
    )
    emb = np.load(tmp_path / "out" / "image_embeddings.npy")
    assert emb.shape[0] == 4
    assert np.array_equal(emb[0], emb[1]) and np.array_equal(emb[2], emb[3])
    assert not np.allclose(emb[1], emb[3])


def test_caption_cli_errors_name_the_bad_image(tmp_path, monkeypatch, capsys):
    model = vlkit.create_model("blip-tiny", text_encoder=False, retrieval_heads=False)
    folder = str(model.save_pretrained(tmp_path / "blip"))
    Image.new("RGB", (20, 20)).save(tmp_path / "bomb.png")
    data = io.BytesIO()
    Image.new("RGB", (64, 64), "white").save(data, format="JPEG")
    (tmp_path / "cut.jpg").write_bytes(data.getvalue()[:300])
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    for name, message in (
        ("bomb.png", "400 pixels is more than the limit of 100"),
        ("cut.jpg", "cannot decode the image"),
        ("gone.png", "does not exist"),
    ):
        assert main(["caption", "--model", folder, str(tmp_path / name), "--max-new-tokens", "2"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("vlkit caption: error: ") and name in err and message in err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
