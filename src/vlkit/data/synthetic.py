"""Built-in synthetic image-text data: coloured shapes rendered on the fly, captions from templates.

Every sample is a pure function of ``(seed, split, index)``: the same three always give the same
image, caption and attributes, in any process and in any order, so nothing is ever downloaded and
training resumes exactly. The ``train`` and ``validation`` splits draw from different random
streams, so validation images are held out.

Each sample keeps its attributes (shape, colour, size, position, and the exact geometry), so it
serves other targets than the caption: zero-shot labels, captioning targets (the canonical full
caption, ``captions="full"``) and a question with its answer per image ("what colour is the
square?" -> "red"), drawn from its own random stream so that asking questions changes no image
or caption. Every word the captions, questions, answers and zero-shot
prompts use is in :data:`VOCABULARY`; :func:`shapes_tokenizer` is a WordPiece tokenizer of just
those words, small enough that a captioning decoder's softmax costs almost nothing on a CPU.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Callable
from dataclasses import dataclass, fields
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
POSITION_ANSWERS = {"left": "left", "right": "right", "top": "top", "bottom": "bottom", "middle": "middle"}
SPLITS = ("train", "validation")
CAPTION_STYLES = ("random", "full")
CAPTION_PREFIXES = ("", "", "a photo of ", "a picture of ", "an image of ")

# Zero-shot prompts: class name x template, averaged (see vlkit.eval.zeroshot).
SHAPE_TEMPLATES = ("a {}.", "a photo of a {}.", "a picture of a {}.", "an image of a {}.")
COLOUR_TEMPLATES = ("a {} shape.", "a {} object.", "a photo of a {} shape.", "a picture of a {} object.")

# Questions: the type decides the answer set. Templates name only true attributes, except the one
# attribute a yes/no question asks about (true half of the time).
QUESTION_TYPES = ("colour", "shape", "size", "position", "yes/no")
QUESTION_TEMPLATES = {
    "colour": (
        "what colour is the {shape}?",
        "what color is the {shape}?",
        "what colour is the shape {where}?",
        "what colour is the {size} {shape}?",
    ),
    "shape": (
        "what shape is {where}?",
        "what shape is the {colour} object?",
        "which shape is {colour}?",
        "what shape is in the picture?",
    ),
    "size": (
        "is the {shape} small or large?",
        "is the {colour} shape large or small?",
        "what size is the {colour} {shape}?",
    ),
    "position": ("where is the {shape}?", "where is the {colour} {shape}?", "where is the {size} shape?"),
}
YES_NO_TEMPLATES = {  # the asked-about attribute is {value}
    "colour": ("is the {shape} {value}?", "is the shape {where} {value}?"),
    "shape": ("is there {article} {value}?", "is the {colour} shape {article} {value}?"),
    "size": ("is the {shape} {value}?", "is the {colour} {shape} {value}?"),
    "position": ("is the {shape} {value}?", "is the {colour} shape {value}?"),
}
ANSWERS = (*COLOURS, *SHAPES, *SIZES, *POSITION_ANSWERS.values(), "yes", "no")


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
        # the same dict as dataclasses.asdict (every field is a str, float or tuple of numbers),
        # without its recursive deep copy: five times faster, and it runs for every item served
        return {f.name: getattr(self, f.name) for f in _ATTRIBUTE_FIELDS}


_ATTRIBUTE_FIELDS = fields(ShapeAttributes)


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


@dataclass(frozen=True)
class ShapeQuestion:
    """A question about one image, its answer and its type (one of :data:`QUESTION_TYPES`)."""

    question: str
    answer: str
    type: str


_VALUES = {"colour": tuple(COLOURS), "shape": SHAPES, "size": tuple(SIZES), "position": tuple(POSITIONS)}


def random_question(a: ShapeAttributes, rng: random.Random, type: str | None = None) -> ShapeQuestion:
    """A question about the image ``a`` describes, of a random (or the given) type.

    Types are equally likely; yes/no questions ask about one attribute (colour, shape, size or
    position) and are true half of the time, a false one naming another value of that attribute.
    """
    if type is None:
        type = rng.choice(QUESTION_TYPES)
    if type not in QUESTION_TYPES:
        raise ValueError(f"question type must be one of {QUESTION_TYPES}, got {type!r}")
    words = {"shape": a.shape, "colour": a.colour, "size": a.size, "where": POSITION_PHRASES[a.position]}
    if type != "yes/no":
        template = rng.choice(QUESTION_TEMPLATES[type])
        answer = POSITION_ANSWERS[a.position] if type == "position" else getattr(a, type)
        return ShapeQuestion(template.format(**words), answer, type)
    attribute = rng.choice(tuple(YES_NO_TEMPLATES))
    truth = getattr(a, attribute)
    yes = rng.random() < 0.5
    value = truth if yes else rng.choice([v for v in _VALUES[attribute] if v != truth])
    template = rng.choice(YES_NO_TEMPLATES[attribute])
    shown = POSITION_PHRASES[value] if attribute == "position" else value
    text = template.format(**words, value=shown, article=_article(value))
    return ShapeQuestion(text, "yes" if yes else "no", type)


def _words(text: str) -> list[str]:
    """Lower-cased words and punctuation marks of a text or template (``{fields}`` left out)."""
    return re.findall(r"[a-z]+|[^a-z\s]", re.sub(r"\{\w*\}", " ", text.lower()))


def _vocabulary() -> tuple[str, ...]:
    texts = [
        *SHAPES,
        *COLOURS,
        *SIZES,
        *POSITION_PHRASES.values(),
        *ANSWERS,
        *CAPTION_PREFIXES,
        "a an shape object",
        *SHAPE_TEMPLATES,
        *COLOUR_TEMPLATES,
        *YES_NO_TEMPLATES["shape"],
    ]
    texts += [t for group in (*QUESTION_TEMPLATES.values(), *YES_NO_TEMPLATES.values()) for t in group]
    return tuple(sorted({w for t in texts for w in _words(t)}))


# Every word of the captions, questions, answers and zero-shot prompts, and their punctuation.
VOCABULARY = _vocabulary()
TOKENIZER_SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def shapes_tokenizer(context_length: int = 32):
    """A WordPiece tokenizer (BERT's [PAD] [UNK] [CLS] [SEP] [MASK], then :data:`VOCABULARY`) that
    covers every text of the built-in shapes without [UNK]; ids 0-4 are the specials."""
    from ..tokenizers.wordpiece import WordPieceTokenizer

    return WordPieceTokenizer([*TOKENIZER_SPECIALS, *VOCABULARY], context_length=context_length)


def _unit_polygon(shape: str) -> tuple[tuple[float, float], ...]:
    """Corner points of a polygonal shape of circumradius 1 around the origin, before rotation."""
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
        pts = [
            (-w, -1),
            (w, -1),
            (w, -w),
            (1, -w),
            (1, w),
            (w, w),
            (w, 1),
            (-w, 1),
            (-w, w),
            (-1, w),
            (-1, -w),
            (-w, -w),
        ]
    else:
        raise ValueError(f"no polygon for shape {shape!r}")
    return tuple(pts)


_UNIT_POLYGONS = {shape: _unit_polygon(shape) for shape in SHAPES if shape != "circle"}  # computed once


def _polygon(shape: str, cx: float, cy: float, r: float, rotation: float) -> list[tuple[float, float]]:
    """Corner points of a polygonal shape of circumradius ``r`` around (cx, cy)."""
    pts = _UNIT_POLYGONS.get(shape) or _unit_polygon(shape)
    c, s = math.cos(math.radians(rotation)), math.sin(math.radians(rotation))
    return [(cx + r * (x * c - y * s), cy + r * (x * s + y * c)) for x, y in pts]


def render(a: ShapeAttributes, image_size: int, supersample: int = 4) -> Image.Image:
    """Draw the shape at ``supersample`` times the size and downsample (anti-aliased edges).

    Only the blocks around the shape are downsampled (the rest is background either way): PIL's
    box filter averages each output pixel's own ``supersample`` x ``supersample`` block, so the
    pixels are those of downsampling the whole canvas (tests/test_data_synthetic.py), and a
    32-pixel image takes about two thirds of the time.
    """
    big = image_size * supersample
    img = Image.new("RGB", (big, big), a.background)
    draw = ImageDraw.Draw(img)
    cx, cy, r = a.centre[0] * supersample, a.centre[1] * supersample, a.radius * supersample
    if a.shape == "circle":
        corners = [(cx - r, cy - r), (cx + r, cy + r)]
        draw.ellipse([*corners[0], *corners[1]], fill=a.rgb)
    else:
        corners = _polygon(a.shape, cx, cy, r, a.rotation)
        draw.polygon(corners, fill=a.rgb)
    if supersample == 1:
        return img
    # the shape's box in whole blocks, with a block to spare on each side, within the canvas
    k = supersample
    left = max(0, (math.floor(min(x for x, _ in corners)) // k - 1) * k)
    top = max(0, (math.floor(min(y for _, y in corners)) // k - 1) * k)
    right = min(big, (math.ceil(max(x for x, _ in corners)) // k + 2) * k)
    bottom = min(big, (math.ceil(max(y for _, y in corners)) // k + 2) * k)
    out = Image.new("RGB", (image_size, image_size), a.background)
    if right > left and bottom > top:
        size = ((right - left) // k, (bottom - top) // k)
        out.paste(img.resize(size, Image.BOX, box=(left, top, right, bottom)), (left // k, top // k))
    return out


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
    ``"full"`` gives the canonical caption naming all of them (retrieval evaluation, and the
    captioning target: one exact caption per image).

    ``"target_caption"`` is the canonical caption whatever ``captions`` says: the target a
    captioning decoder learns to write. Every item also asks a question about its image: ``"question"``, ``"answer"`` (one of
    :data:`ANSWERS`) and ``"question_type"`` (one of :data:`QUESTION_TYPES`). Like the image, the
    question is a pure function of ``(seed, split, index)``, so validation questions are about
    held-out images.
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

    def question(self, index: int) -> ShapeQuestion:
        """The question asked about sample ``index``."""
        index = self._check(index)
        return random_question(self.attributes(index), self._rng(index, "question"))

    @staticmethod
    def answer_list() -> tuple[str, ...]:
        """Every answer a question can have (the closed answer set for ranking)."""
        return ANSWERS

    def image(self, index: int) -> Image.Image:
        return render(self.attributes(index), self.image_size)

    def __getitem__(self, index: int) -> dict[str, Any]:
        index = self._check(index)
        a = self.attributes(index)
        img = render(a, self.image_size)
        caption = full_caption(a) if self.captions == "full" else random_caption(a, self._rng(index, "caption"))
        item: dict[str, Any] = {
            "caption": caption,
            "target_caption": full_caption(a),
            "index": index,
            "attributes": a.to_dict(),
        }
        q = random_question(a, self._rng(index, "question"))
        item.update(question=q.question, answer=q.answer, question_type=q.type)
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
