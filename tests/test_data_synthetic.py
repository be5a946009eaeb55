"""Built-in shapes: deterministic, held-out splits, captions that tell the truth about the image."""

import dataclasses
import hashlib

import numpy as np
import pytest
from PIL import Image, ImageDraw

from vlkit.data import ShapesDataset
from vlkit.data.synthetic import COLOURS, POSITION_PHRASES, POSITIONS, SHAPES, SIZES, _polygon, full_caption, render

# area of each shape at circumradius 1 (square: corners at 0.9; star: inner radius 0.42; cross: arms 0.66 wide)
UNIT_AREA = {
    "circle": np.pi,
    "square": 2 * 0.9**2,
    "triangle": 3 * np.sqrt(3) / 4,
    "star": 10 * 0.5 * 0.42 * np.sin(np.pi / 5),
    "cross": 2 * 0.66 * 2 - 0.66**2,
}


def pixels(img):
    return np.asarray(img, dtype=np.int16)


def test_same_seed_same_samples_in_any_order():
    a, b = ShapesDataset(size=50, seed=3), ShapesDataset(size=50, seed=3)
    for i in (7, 0, 49, 7):
        x, y = a[i], b[i]
        assert x["caption"] == y["caption"] and x["attributes"] == y["attributes"]
        assert np.array_equal(pixels(x["image"]), pixels(y["image"]))
    assert a[-1]["index"] == 49


def test_seeds_and_splits_differ():
    train, val, other = (
        ShapesDataset("train", 200),
        ShapesDataset("validation", 200),
        ShapesDataset("train", 200, seed=1),
    )
    ta = [train.attributes(i) for i in range(200)]
    assert all(ta[i] != val.attributes(i) for i in range(200))
    assert sum(ta[i] == other.attributes(i) for i in range(200)) == 0
    # every value of every attribute shows up
    for name, values in (("shape", SHAPES), ("colour", COLOURS), ("size", SIZES), ("position", POSITIONS)):
        assert {getattr(a, name) for a in ta} == set(values)


def test_image_shows_the_attributes():
    ds = ShapesDataset(size=60, image_size=64)
    for i in range(60):
        a = ds.attributes(i)
        img = pixels(ds.image(i))
        cx, cy = (int(round(c)) for c in a.centre)
        # the shape covers its centre with its colour; a corner shows the background
        assert np.abs(img[cy, cx] - np.array(a.rgb)).max() <= 2, (i, a)
        assert np.abs(img[0, 0] - np.array(a.background)).max() <= 2 or a.radius > 14
        # position: the centre lies in the named region
        px, py = POSITIONS[a.position]
        assert abs(a.centre[0] / 64 - px) <= 0.05 + 1e-9 and abs(a.centre[1] / 64 - py) <= 0.05 + 1e-9
        # size: the radius lies in the named range, and the drawn area is the shape's area at that radius
        lo, hi = SIZES[a.size]
        assert lo * 64 <= a.radius <= hi * 64
        if min(a.centre) - a.radius > 0 and max(a.centre) + a.radius < 64:  # not clipped by the border
            fg, bg = np.array(a.rgb, dtype=float), np.array(a.background, dtype=float)
            coverage = ((img - bg) @ (fg - bg) / ((fg - bg) @ (fg - bg))).clip(0, 1)  # anti-aliased edges count partly
            assert 0.9 < coverage.sum() / (UNIT_AREA[a.shape] * a.radius**2) < 1.1, (i, a.shape, coverage.sum())


def test_captions_name_only_true_attributes():
    ds = ShapesDataset(size=300)
    styles = set()
    for i in range(300):
        a, cap = ds.attributes(i), ds[i]["caption"]
        words = cap.split()
        assert a.shape in words or a.colour in words
        for other in set(SHAPES) - {a.shape}:
            assert other not in words
        for other in set(COLOURS) - {a.colour}:
            assert other not in words
        for pos, phrase in POSITION_PHRASES.items():
            if pos != a.position:
                assert phrase not in cap
        styles.add((a.shape in words, a.colour in words, POSITION_PHRASES[a.position] in cap))
    assert len(styles) >= 5  # varied wording


def test_full_captions_and_transform():
    ds = ShapesDataset("validation", size=5, captions="full", transform=lambda img: np.asarray(img).shape)
    item = ds[2]
    a = ds.attributes(2)
    assert item["caption"] == full_caption(a) == f"a {a.size} {a.colour} {a.shape} {POSITION_PHRASES[a.position]}"
    assert item["pixel_values"] == (64, 64, 3) and "image" not in item
    assert item["attributes"]["shape"] == a.shape  # attributes stay available (captioning, VQA targets)


def test_attribute_dicts_are_dataclass_dicts():
    ds = ShapesDataset("train", size=300, image_size=32)
    for i in range(300):
        a = ds.attributes(i)
        d = ds[i]["attributes"]
        assert d == dataclasses.asdict(a) and list(d) == [f.name for f in dataclasses.fields(a)]
        assert isinstance(d["centre"], tuple) and isinstance(d["rgb"], tuple)


def test_zeroshot_labels_match_attributes():
    ds = ShapesDataset("validation", size=40)
    tasks = ds.zeroshot_tasks()
    assert set(tasks) == {"shape", "colour"}
    for i in range(40):
        a = ds.attributes(i)
        assert tasks["shape"].classnames[tasks["shape"].labels[i]] == a.shape
        assert tasks["colour"].classnames[tasks["colour"].labels[i]] == a.colour
    assert all("{}" in t for t in tasks["shape"].templates + tasks["colour"].templates)


@pytest.mark.parametrize("kwargs", [dict(split="test"), dict(size=0), dict(captions="short"), dict(image_size=4)])
def test_bad_arguments_raise(kwargs):
    with pytest.raises(ValueError):
        ShapesDataset(**kwargs)


def test_index_out_of_range():
    with pytest.raises(IndexError):
        ShapesDataset(size=3)[3]


def _items_digest(split, seed, image_size, n, captions="random", transform=None):
    """SHA-256 (first 16 hex digits) of the first n items: image bytes (or pixel values) and texts."""
    ds = ShapesDataset(split, size=200_000, seed=seed, image_size=image_size, transform=transform, captions=captions)
    h = hashlib.sha256()
    for i in range(n):
        it = ds[i]
        h.update(np.asarray(it["image"]).tobytes() if transform is None else it["pixel_values"].numpy().tobytes())
        texts = (it["caption"], it["target_caption"], it["question"], it["answer"], sorted(it["attributes"].items()))
        h.update(repr(texts).encode())
    return h.hexdigest()[:16]


@pytest.mark.parametrize(
    "split, seed, image_size, n, captions, expected",
    [
        ("train", 0, 32, 200, "random", "bd31da9655a4d043"),  # the CLIP demo's training images
        ("validation", 0, 32, 200, "full", "def6bb07b00c4655"),  # and its held-out ones
        ("train", 1, 64, 60, "random", "9c50cbcb26555635"),
        ("validation", 5, 17, 60, "random", "3291ac2d51e4be26"),
    ],
)
def test_rendered_items_are_those_before_the_faster_renderer(split, seed, image_size, n, captions, expected):
    """Digests recorded with the renderer before issue 14 (vlkit 1e66390, Pillow 13): the CLIP demo
    tower, and the BLIP-2 and VLM demos built on it, were trained on exactly these images."""
    assert _items_digest(split, seed, image_size, n, captions) == expected


def test_rendered_pixel_values_are_those_before_the_faster_renderer():
    import vlkit

    transform = vlkit.image_transform(vlkit.create_model("clip-tiny"))
    assert _items_digest("train", 0, 32, 100, transform=transform) == "888c18dfb3400918"


@pytest.mark.parametrize("supersample", [1, 2, 3, 4])
def test_downsampling_the_shape_alone_equals_downsampling_the_canvas(supersample):
    """The renderer downsamples only the blocks around the shape; the whole canvas gives the same
    pixels (checked on 43,300 images of sizes 8-224 while writing it)."""
    for split, image_size in (("train", 32), ("validation", 13), ("train", 64)):
        ds = ShapesDataset(split, size=1000, seed=supersample, image_size=image_size)
        for i in range(40):
            a = ds.attributes(i)
            big = image_size * supersample
            canvas = Image.new("RGB", (big, big), a.background)
            draw = ImageDraw.Draw(canvas)
            cx, cy, r = (c * supersample for c in (*a.centre, a.radius))
            if a.shape == "circle":
                draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=a.rgb)
            else:
                draw.polygon(_polygon(a.shape, cx, cy, r, a.rotation), fill=a.rgb)
            whole = canvas.resize((image_size, image_size), Image.BOX) if supersample > 1 else canvas
            assert np.array_equal(pixels(render(a, image_size, supersample)), pixels(whole)), (i, a)
