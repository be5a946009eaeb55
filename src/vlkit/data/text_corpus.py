"""Text-only data for training a language model: the built-in shapes' texts (nothing is rendered)
and plain text files, one sample per line.

:class:`ShapesText` gives, for each index, one of four texts about the shape that
:class:`~vlkit.data.synthetic.ShapesDataset` would draw there (``kind``, chosen per index):

- ``caption``: the dataset's random-style caption ("a photo of a red circle on the left");
- ``chat``: a shapes conversation (:func:`~vlkit.data.conversations.shapes_conversation`, or a
  ``describe`` of the time the stage-1 "describe the image." one) in the LLaVA chat template
  ("USER: what colour is the star? ASSISTANT: red</s>USER: and its size? ASSISTANT: small</s>");
- ``qa``: BLIP-2 style "question: what colour is the star? answer: red", one to three of them, or
  ``describe`` of the time the BLIP-2 demo's captioning prompt and the full caption, the caption
  always before it too ("a small red star on the left question: describe the image. answer: a small
  red star on the left", :data:`DESCRIBE_PROMPT`): the exact repeat teaches the LLM to copy from
  its context, what lets a soft prompt stand for the caption;
- ``compare``: the full caption, then two to four questions that compare it with what they name
  (yes/no about any attribute, "how many red shapes are there?"), as a chat or as BLIP-2's texts
  ("a small red star on the left question: is the star blue? answer: no question: how many red
  shapes are there? answer: one"): the drill that teaches the frozen LLM to compare, which a few
  such questions among the others did not (docs/vlm.md).

In ``chat`` and ``qa`` texts the image is, most of the time (``described``), the full caption in
its place ("USER: a small red star on the left\nwhat colour is the star? ASSISTANT: red</s>",
"a small red star on the left question: ... answer: red"), else left out: a language model that
learned to answer from a description in its context is one a projector (a VLM's, BLIP-2's
queries) can steer with image features standing where the description stood. The questions that
compare (yes/no, and the chat's "how many red shapes are there?") are asked more often
(``compare``: the chance that a question is drawn among them), as they are the hardest to learn.

Like the images, every text is a pure function of ``(seed, split, index)``. Every word of them is
in :func:`~vlkit.data.conversations.conversation_tokenizer`. Items are ``{"text", "kind", "index"}``.

:class:`TextLines` reads a UTF-8 file, one sample per line; empty lines and lines that are not
UTF-8 are left out (``skipped_at_load``) and counted.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

from ..tokenizers.chat import IMAGE_TOKEN, apply_chat_template
from .conversations import (
    CAPTION_INSTRUCTION,
    CHAT_SPECIALS,
    QA_TEMPLATE,
    _first_turn,
    caption_conversation,
    shapes_conversation,
)
from .skips import Skipped, SkipReport
from .synthetic import ShapeAttributes, ShapesDataset, full_caption, random_caption, random_question

TEXT_KINDS = ("caption", "chat", "qa", "compare")
COMPARE_TYPES = ("yes/no", "count")  # the questions whose answer compares the question with the image
COMPARE_TURNS = (2, 4)  # questions per text of kind "compare"
DESCRIBE_PROMPT = QA_TEMPLATE.format(CAPTION_INSTRUCTION, "").rstrip()  # "question: describe the image. answer:"


def chat_text(turns: list[dict], image_text: str | None = None, eos_token: str = CHAT_SPECIALS["eos"]) -> str:
    """A conversation in the LLaVA chat template with ``image_text`` in place of its image token
    (None: the image token left out)."""
    text = apply_chat_template(turns, eos_token=eos_token).text
    return text.replace(IMAGE_TOKEN + "\n", "" if image_text is None else image_text + "\n")


def compare_question(a: ShapeAttributes, rng: random.Random) -> tuple[str, str, str]:
    """(question, answer, type) of a question that compares: yes/no about any attribute (two times
    in three) or "how many red shapes are there?"."""
    kind = "count" if rng.random() < 1 / 3 else "yes/no"
    question, answer = _first_turn(a, rng, kind)
    return question, answer, kind


def compare_conversation(a: ShapeAttributes, rng: random.Random, turns_range: tuple[int, int] = (1, 3)) -> list[dict]:
    """``turns_range`` yes/no and count questions about the image ``a`` describes, the first with the image."""
    turns: list[dict] = []
    for i in range(rng.randint(*turns_range)):
        question, answer, kind = compare_question(a, rng)
        turns += [
            {"from": "human", "value": f"{IMAGE_TOKEN}\n{question}" if i == 0 else question},
            {"from": "gpt", "value": answer, "type": kind},
        ]
    return turns


class ShapesText:
    """The shapes' texts, ``size`` samples of a split (see the module docs); ``kinds`` are drawn
    with equal chance, the image described in ``described`` of the chat and qa texts, ``describe``
    of them the captioning prompt, a question one that compares (:data:`COMPARE_TYPES`) with chance
    ``compare`` (else of any type)."""

    def __init__(
        self,
        split: str = "train",
        size: int = 10_000,
        seed: int = 0,
        kinds=TEXT_KINDS,
        described: float = 0.85,
        compare: float = 0.4,
        describe: float = 0.5,
    ) -> None:
        kinds = tuple(kinds)
        if not kinds or any(k not in TEXT_KINDS for k in kinds):
            raise ValueError(f"kinds must be a non-empty subset of {TEXT_KINDS}, got {kinds!r}")
        for name, value in (("described", described), ("compare", compare), ("describe", describe)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be a fraction in [0, 1], got {value}")
        self.shapes = ShapesDataset(split, size=size, seed=seed)  # its attributes and captions only
        self.split, self.size, self.seed, self.kinds = split, size, seed, kinds
        self.described, self.compare, self.describe = described, compare, describe

    def __len__(self) -> int:
        return self.size

    def text(self, index: int) -> tuple[str, str]:
        """(kind, text) of sample ``index``."""
        a = self.shapes.attributes(index)
        index %= self.size
        rng = random.Random(f"vlkit-shapes-text/{self.seed}/{self.split}/{index}")
        kind = rng.choice(self.kinds)
        if kind == "caption":
            return kind, self.shapes.caption(index)
        if kind == "compare":  # the full caption, then 2-4 questions that compare, as a chat or as BLIP-2's texts
            scene = full_caption(a)
            if rng.random() < 0.5:
                return kind, chat_text(compare_conversation(a, rng, COMPARE_TURNS), scene)
            qs = [compare_question(a, rng) for _ in range(rng.randint(*COMPARE_TURNS))]
            return kind, " ".join([scene, *(QA_TEMPLATE.format(q, answer) for q, answer, _ in qs)])
        scene = full_caption(a) if rng.random() < self.described else None
        describe = rng.random() < self.describe  # the captioning prompts of the VLM's stage 1 and of BLIP-2
        if kind == "chat":
            if describe:
                turns = caption_conversation(random_caption(a, rng))
            elif rng.random() < self.compare:
                turns = compare_conversation(a, rng)
            else:
                turns = shapes_conversation(a.to_dict(), rng)
            return kind, chat_text(turns, scene)
        if describe:  # always after the caption: the frozen LLM learns to copy what stands in its context
            scene = full_caption(a)
            text = f"{DESCRIBE_PROMPT} {scene}"
        else:
            types = ["yes/no" if rng.random() < self.compare else None for _ in range(rng.randint(1, 3))]
            text = " ".join(
                QA_TEMPLATE.format(q.question, q.answer) for q in (random_question(a, rng, t) for t in types)
            )
        return kind, text if scene is None else f"{scene} {text}"

    def length(self, index: int) -> int:
        """Words of sample ``index`` (what ``data.group_by_length`` groups batches by)."""
        return len(self.text(index)[1].split())

    def __getitem__(self, index: int) -> dict[str, Any]:
        kind, text = self.text(index)
        return {"text": text, "kind": kind, "index": index % self.size}

    def __repr__(self) -> str:
        return (
            f"ShapesText(split={self.split!r}, size={self.size}, seed={self.seed}, kinds={self.kinds}, "
            f"described={self.described}, compare={self.compare}, describe={self.describe})"
        )


class TextLines:
    """The lines of a UTF-8 text file, one sample each (line ends and outer spaces stripped);
    empty and undecodable lines are skipped (``skipped_at_load``, ``rows_read`` lines in all)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"text file {self.path} does not exist")
        self.lines: list[str] = []
        self.skipped_at_load: list[Skipped] = []
        raw = self.path.read_bytes().splitlines()
        self.rows_read = len(raw)
        for number, line in enumerate(raw, start=1):
            where = f"{self.path}:{number}"
            try:
                text = line.decode("utf-8").strip()
            except UnicodeDecodeError as e:
                self.skipped_at_load.append(Skipped(where, "undecodable line", str(e)))
                continue
            if not text:
                self.skipped_at_load.append(Skipped(where, "empty line"))
                continue
            self.lines.append(text)
        if not self.lines:
            report = SkipReport(list(self.skipped_at_load)).summary(self.rows_read)
            raise ValueError(f"text file {self.path} has no usable line ({report})")

    def __len__(self) -> int:
        return len(self.lines)

    def length(self, index: int) -> int:
        """Words of line ``index`` (what ``data.group_by_length`` groups batches by)."""
        return len(self.lines[index].split())

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {"text": self.lines[index], "index": index}

    def __repr__(self) -> str:
        return f"TextLines({str(self.path)!r}, {len(self.lines)} lines, {len(self.skipped_at_load)} skipped)"
