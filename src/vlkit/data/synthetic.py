"""Built-in synthetic image-text data: coloured shapes rendered on the fly, captions from templates.

Every sample is a pure function of ``(seed, split, index)``: the same three always give the same
image, caption and attributes, in any process and in any order, so nothing is ever downloaded and
training resumes exactly. The ``train`` and ``validation`` splits draw from different random
streams, so validation images are held out.

Each sample keeps its attributes (shape, colour, size, position, and the exact geometry), so a
task can ask for other targets than the caption: zero-shot labels here, later captioning
targets or questions with answers ("what colour is the square?").
"""
from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle", "star", "cross")
COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (50, 90, 235),
    "yellow": (235, 215, 40),
    "purple": (150, 60, 200),
    "white": (235, 235, 235),
}
SIZES = {"small": (0.13, 0.17), "large": (0.24, 0.30)}  # radius as a fraction of the image side
POSITIONS = {  # centre (x, y) as fractions of the image side
    "left": (0.27, 0.5),
    "right": (0.73, 0.5),
    "top": (0.5, 0.27),
    "bottom": (0.5, 0.73),
    "middle": (0.5, 0.5),
}
POSITION_PHRASES = {
    "left": "on the left",
    "right": "on the right",
    "top": "at the top",
    "bottom": "at the bottom",
    "middle": "in the middle",
}
SPLITS = ("train", "validation")
CAPTION_STYLES = ("random", "full")
CAPTION_PREFIXES = ("", "", "a photo of ", "a picture of ", "an image of ")

# Zero-shot prompts: class name x template, averaged (see vlkit.eval.zeroshot).
SHAPE_TEMPLATES = ("a {}.", "a photo of a {}.", "a picture of a {}.", "an image of a {}.")
COLOUR_TEMPLATES = ("a {} shape.", "a {} object.", "a photo of a {} shape.", "a picture of a {} object.")


@dataclass(frozen=True)
class ShapeAttributes:
    """What one synthetic image shows: the named attributes and the exact geometry drawn."""

    shape: str
    colour: str
    size: str
    position: str
    centre: tuple[float, float]  # pixels
    radius: float  # pixels
    rotation: float  # degrees
    rgb: tuple[int, int, int]
    background: tuple[int, int, int]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


def full_caption(a: ShapeAttributes) -> str:
    """The canonical caption naming every attribute: "a small red circle on the left"."""
    return f"a {a.size} {a.colour} {a.shape} {POSITION_PHRASES[a.position]}"


def random_caption(a: ShapeAttributes, rng: random.Random) -> str:
    """A caption naming a random subset of the attributes (always the shape or the colour)."""
    use_shape = rng.random() < 0.8
    use_colour = rng.random() < 0.8 or not use_shape
    words = []
    if rng.random() < 0.5:
        words.append(a.size)
    if use_colour:
        words.append(a.colour)
    words.append(a.shape if use_shape else rng.choice(("shape", "object")))
    text = f"{_article(words[0])} {' '.join(words)}"
    if rng.random() < 0.5:
        text += " " + POSITION_PHRASES[a.position]
    prefix = rng.choice(CAPTION_PREFIXES)
    return prefix + text


def _polygon(shape: str, cx: float, cy: float, r: float, rotation: float) -> list[tuple[float, float]]:
    """Corner points of a polygonal shape of circumradius ``r`` around (cx, cy)."""
    if shape == "square":
        pts = [(math.cos(math.radians(45 + 90 * k)), math.sin(math.radians(45 + 90 * k))) for k in range(4)]
        pts = [(x * 0.9, y * 0.9) for x, y in pts]
    elif shape == "triangle":
        pts = [(math.cos(math.radians(-90 + 120 * k)), math.sin(math.radians(-90 + 120 * k))) for k in range(3)]
    elif shape == "star":
        pts = []
        for k in range(10):
            rad = 1.0 if k % 2 == 0 else 0.42
            ang = math.radians(-90 + 36 * k)
            pts.append((rad * math.cos(ang), rad * math.sin(ang)))
    elif shape == "cross":
        w = 0.33
        pts = [(-w, -1), (w, -1), (w, -w), (1, -w), (1, w), (w, w), (w, 1), (-w, 1), (-w, w), (-1, w), (-1, -w), (-w, -w)]
    else:
        raise ValueError(f"no polygon for shape {shape!r}")
    c, s = math.cos(math.radians(rotation)), math.sin(math.radians(rotation))
    return [(cx + r * (x * c - y * s), cy + r * (x * s + y * c)) for x, y in pts]


def render(a: ShapeAttributes, image_size: int, supersample: int = 4) -> Image.Image:
    """Draw the shape at ``supersample`` times the size and downsample (anti-aliased edges)."""
    big = image_size * supersample
    img = Image.new("RGB", (big, big), a.background)
    draw = ImageDraw.Draw(img)
    cx, cy, r = a.centre[0] * supersample, a.centre[1] * supersample, a.radius * supersample
    if a.shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=a.rgb)
    else:
        draw.polygon(_polygon(a.shape, cx, cy, r, a.rotation), fill=a.rgb)
    return img.resize((image_size, image_size), Image.BOX) if supersample > 1 else img


@dataclass(frozen=True)
class ZeroShotTask:
    """A zero-shot classification problem: class names, prompt templates and true labels."""

    classnames: tuple[str, ...]
    templates: tuple[str, ...]
    labels: tuple[int, ...]


class ShapesDataset:
    """Coloured shapes with captions, rendered on the fly; a map-style dataset of ``size`` samples.

    ``__getitem__`` returns ``{"image": PIL image or transform(image), "caption": str, "index": int,
    "attributes": dict}``; pass ``transform`` (e.g. ``vlkit.image_transform(model)``) to get tensors
    under ``"pixel_values"`` instead of the PIL image under ``"image"``.

    ``captions="random"`` names a random subset of the attributes with varied wording (training);
    ``"full"`` gives the canonical caption naming all of them (retrieval evaluation).
    """

    def __init__(
        self,
        split: str = "train",
        size: int = 10_000,
        seed: int = 0,
        image_size: int = 64,
        transform: Callable[[Image.Image], Any] | None = None,
        captions: str = "random",
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        if captions not in CAPTION_STYLES:
            raise ValueError(f"captions must be one of {CAPTION_STYLES}, got {captions!r}")
        if size < 1:
            raise ValueError(f"size must be positive, got {size}")
        if image_size < 8:
            raise ValueError(f"image_size must be at least 8 pixels, got {image_size}")
        self.split, self.size, self.seed, self.image_size = split, size, seed, image_size
        self.transform, self.captions = transform, captions

    def __len__(self) -> int:
        return self.size

    def _rng(self, index: int, stream: str) -> random.Random:
        # str seeds are hashed with SHA-512 by random.Random: stable across processes and runs
        return random.Random(f"vlkit-shapes/{self.seed}/{self.split}/{index}/{stream}")

    def _check(self, index: int) -> int:
        if not -self.size <= index < self.size:
            raise IndexError(f"index {index} out of range for {self.size} samples")
        return index % self.size

    def attributes(self, index: int) -> ShapeAttributes:
        """The attributes of sample ``index`` (cheap: nothing is drawn)."""
        rng = self._rng(self._check(index), "image")
        n = self.image_size
        shape = rng.choice(SHAPES)
        colour = rng.choice(list(COLOURS))
        size = rng.choice(list(SIZES))
        position = rng.choice(list(POSITIONS))
        lo, hi = SIZES[size]
        radius = rng.uniform(lo, hi) * n
        px, py = POSITIONS[position]
        centre = ((px + rng.uniform(-0.05, 0.05)) * n, (py + rng.uniform(-0.05, 0.05)) * n)
        rotation = rng.uniform(-15.0, 15.0)
        rgb = tuple(min(255, max(0, c + rng.randint(-20, 20))) for c in COLOURS[colour])
        grey = rng.randint(20, 70)
        background = tuple(min(255, max(0, grey + rng.randint(-8, 8))) for _ in range(3))
        return ShapeAttributes(shape, colour, size, position, centre, radius, rotation, rgb, background)

    def caption(self, index: int) -> str:
        a = self.attributes(index)
        if self.captions == "full":
            return full_caption(a)
        return random_caption(a, self._rng(self._check(index), "caption"))

    def image(self, index: int) -> Image.Image:
        return render(self.attributes(index), self.image_size)

    def __getitem__(self, index: int) -> dict[str, Any]:
        index = self._check(index)
        a = self.attributes(index)
        img = render(a, self.image_size)
        caption = full_caption(a) if self.captions == "full" else random_caption(a, self._rng(index, "caption"))
        item: dict[str, Any] = {"caption": caption, "index": index, "attributes": a.to_dict()}
        if self.transform is None:
            item["image"] = img
        else:
            item["pixel_values"] = self.transform(img)
        return item

    def zeroshot_tasks(self) -> dict[str, ZeroShotTask]:
        """Zero-shot classification of every sample by shape and by colour."""
        attrs = [self.attributes(i) for i in range(self.size)]
        colours = tuple(COLOURS)
        return {
            "shape": ZeroShotTask(SHAPES, SHAPE_TEMPLATES, tuple(SHAPES.index(a.shape) for a in attrs)),
            "colour": ZeroShotTask(colours, COLOUR_TEMPLATES, tuple(colours.index(a.colour) for a in attrs)),
        }

    def __repr__(self) -> str:
        return (
            f"ShapesDataset(split={self.split!r}, size={self.size}, seed={self.seed}, "
            f"image_size={self.image_size}, captions={self.captions!r})"
        )
