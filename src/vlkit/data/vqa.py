"""Questions about images: a user's (image, question, answers) annotations, and batching that
tokenizes questions and answers.

Annotation files are CSV (with a header), TSV or JSONL, as for image-caption pairs
(:func:`vlkit.data.annotations.read_annotations`): an image column (``image``, ``filepath``,
``file``, ``path`` or ``image_path``), a ``question`` column and the answers, either ``answers``
(a JSON list of strings in JSONL; ``|``-separated text, as several annotators' answers) or
``answer`` (one).

    image,question,answer
    photos/001.jpg,what is the dog doing?,running
    {"image": "photos/002.jpg", "question": "how many cups?", "answers": ["2", "two", "2"]}

Rows with an empty question or no answer, a question or answer that is not text (a JSON number,
dict, or a list holding one), missing and zero-size files are left out when the file is read
(``skipped_at_load``); unreadable images when they are loaded (a skip record, as
:class:`vlkit.data.ImageTextFolder` does).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from .annotations import IMAGE_KEYS, AnnotatedImages, image_path, pick_key, text_cell, text_list
from .skips import Skipped, start_batch

QUESTION_KEYS = ("question",)
ANSWER_KEYS = ("answers", "answer")


def _row_answers(row: dict[str, Any], keys: Sequence[str]) -> list[str] | None:
    """The answers of the first of ``keys`` that has some; None when one is not text."""
    for key in keys:
        answers = text_list(row.get(key), separator="|")
        if answers is None or answers:
            return answers
    return []


def _row_problem(question: str | None, answers: list[str] | None) -> str | None:
    if question is None:
        return "non-text question"
    if not question:
        return "empty question"
    if answers is None:
        return "non-text answer"
    return None if answers else "missing answer"


def majority_answer(answers: Sequence[str]) -> str:
    """The most common answer (the first one on ties): the training target of a question."""
    return Counter(answers).most_common(1)[0][0]


class VQAFolder(AnnotatedImages):
    """(image, question, answers) rows from an annotation file; a map-style dataset.

    ``__getitem__`` returns ``{"image" or "pixel_values", "question", "answer" (the most common
    answer), "answers" (all of them), "index", "path"}``, or ``{"skipped": Skipped}`` when the
    image cannot be decoded.
    """

    what, unit = "(image, question, answer) rows", "questions"

    def __init__(
        self,
        annotations: str | os.PathLike,
        root: str | os.PathLike | None = None,
        transform: Callable[[Image.Image], Any] | None = None,
        image_key: str | None = None,
        question_key: str | None = None,
        answer_key: str | None = None,
    ) -> None:
        self.image_key, self.question_key, self.answer_key = image_key, question_key, answer_key
        super().__init__(annotations, root, transform)

    def choose_columns(self, columns) -> None:
        self.image_key = pick_key(columns, self.image_key, IMAGE_KEYS, "image", self.annotations)
        self.question_key = pick_key(columns, self.question_key, QUESTION_KEYS, "question", self.annotations)
        pick_key(columns, self.answer_key, ANSWER_KEYS, "answer", self.annotations)
        # per row: the given column, else "answers", else "answer"
        self.answer_keys = (self.answer_key,) if self.answer_key is not None else ANSWER_KEYS

    def read_row(self, row: dict[str, Any]) -> list[tuple[Path, str, list[str]]] | Skipped:
        rel, path, file_problem = image_path(row.get(self.image_key), self.root)
        question, answers = text_cell(row.get(self.question_key)), _row_answers(row, self.answer_keys)
        problem = _row_problem(question, answers) or file_problem
        return Skipped(rel or "<no image>", problem) if problem else [(path, question, answers)]

    def item_fields(self, index: int) -> dict[str, Any]:
        path, question, answers = self.samples[index]
        return {
            "question": question,
            "answer": majority_answer(answers),
            "answers": list(answers),
            "index": index,
            "path": str(path),
        }

    def questions(self) -> list[str]:
        return [q for _, q, _ in self.samples]

    def answer_lists(self) -> list[list[str]]:
        return [list(a) for _, _, a in self.samples]


def tokenize_qa(
    tokenizer: Callable[..., dict[str, torch.Tensor]], questions: Sequence[str], answers: Sequence[str] | None = None
) -> dict[str, torch.Tensor]:
    """``question_input_ids`` / ``question_attention_mask`` (B, Tq) and, with ``answers``,
    ``answer_input_ids`` / ``answer_attention_mask`` (B, Ta), each padded to its longest row."""
    out = {}
    q = tokenizer(list(questions), padding="longest")
    out["question_input_ids"], out["question_attention_mask"] = q["input_ids"], q["attention_mask"]
    if answers is not None:
        a = tokenizer(list(answers), padding="longest")
        out["answer_input_ids"], out["answer_attention_mask"] = a["input_ids"], a["attention_mask"]
    return out


class QuestionAnswerCollator:
    """Batches of items with ``question`` and ``answer`` (and ``pixel_values``).

    Returns ``{"pixel_values": (B, 3, H, W), "question_input_ids", "question_attention_mask"
    (B, Tq), "answer_input_ids", "answer_attention_mask" (B, Ta), "questions": [str],
    "answers": [str] (the targets), "answer_lists": [[str]] (every annotator's answer, or the
    target alone), "index": (B,), "skipped": [Skipped]}``, plus ``question_type`` when the items
    have one (the built-in shapes). Skip records are dropped and passed on under ``skipped``.
    """

    def __init__(self, tokenizer: Callable[..., dict[str, torch.Tensor]]) -> None:
        self.tokenizer = tokenizer

    def __call__(self, items: Sequence[dict[str, Any]]) -> dict[str, Any]:
        batch, items = start_batch(items)
        if not items:
            batch.update(questions=[], answers=[], answer_lists=[])
            return batch
        for key in ("pixel_values", "question", "answer"):
            if key not in items[0]:
                raise TypeError(f"dataset items have no {key!r}: expected items with pixel_values, question and answer")
        batch["pixel_values"] = torch.stack([it["pixel_values"] for it in items])  # (B, 3, H, W)
        batch["questions"] = [it["question"] for it in items]
        batch["answers"] = [it["answer"] for it in items]
        batch["answer_lists"] = [list(it.get("answers") or [it["answer"]]) for it in items]
        if "question_type" in items[0]:
            batch["question_type"] = [it["question_type"] for it in items]
        batch.update(tokenize_qa(self.tokenizer, batch["questions"], batch["answers"]))
        return batch
