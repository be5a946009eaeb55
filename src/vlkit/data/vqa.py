"""Questions about images: a user's (image, question, answers) annotations, and batching that
tokenizes questions and answers.

Annotation files are CSV (with a header), TSV or JSONL, as for image-caption pairs
(:func:`vlkit.data.folder.read_annotations`): an image column (``image``, ``filepath``, ``file``,
``path`` or ``image_path``), a ``question`` column and the answers, either ``answers`` (a JSON
list in JSONL; ``|``-separated in CSV, as several annotators' answers) or ``answer`` (one).

    image,question,answer
    photos/001.jpg,what is the dog doing?,running
    {"image": "photos/002.jpg", "question": "how many cups?", "answers": ["2", "two", "2"]}

Rows with an empty question or no answer, missing and zero-size files are left out when the file
is read (``skipped_at_load``); unreadable images when they are loaded (a skip record, as
:class:`vlkit.data.ImageTextFolder` does).
"""
from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image, UnidentifiedImageError

from .folder import IMAGE_KEYS, SkipReport, Skipped, _pick_key, image_file_problem, load_image, read_annotations

QUESTION_KEYS = ("question",)
ANSWER_KEYS = ("answers", "answer")


def _answers(value: Any) -> list[str]:
    if isinstance(value, (list, tuple)):
        items = value
    else:
        items = str(value or "").split("|")
    return [str(a).strip() for a in items if str(a).strip()]


def majority_answer(answers: Sequence[str]) -> str:
    """The most common answer (the first one on ties): the training target of a question."""
    return Counter(answers).most_common(1)[0][0]


class VQAFolder:
    """(image, question, answers) rows from an annotation file; a map-style dataset.

    ``__getitem__`` returns ``{"image" or "pixel_values", "question", "answer" (the most common
    answer), "answers" (all of them), "index", "path"}``, or ``{"skipped": Skipped}`` when the
    image cannot be decoded.
    """

    def __init__(
        self,
        annotations: str | os.PathLike,
        root: str | os.PathLike | None = None,
        transform: Callable[[Image.Image], Any] | None = None,
        image_key: str | None = None,
        question_key: str | None = None,
        answer_key: str | None = None,
    ) -> None:
        self.annotations = Path(annotations)
        rows = read_annotations(self.annotations)
        if not rows:
            raise ValueError(f"annotation file {self.annotations} has no rows")
        self.root = Path(root) if root is not None else self.annotations.parent
        if not self.root.is_dir():
            raise FileNotFoundError(f"image folder {self.root} does not exist")
        self.transform = transform
        ikey = _pick_key(rows[0].keys(), image_key, IMAGE_KEYS, "image", self.annotations)
        qkey = _pick_key(rows[0].keys(), question_key, QUESTION_KEYS, "question", self.annotations)
        _pick_key(rows[0].keys(), answer_key, ANSWER_KEYS, "answer", self.annotations)
        akeys = (answer_key,) if answer_key is not None else ANSWER_KEYS  # per row: answers, else answer
        self.samples: list[tuple[Path, str, list[str]]] = []
        self.skipped_at_load: list[Skipped] = []
        for row in rows:
            rel = str(row.get(ikey) or "").strip()
            question = str(row.get(qkey) or "").strip()
            answers = next((a for a in (_answers(row.get(k)) for k in akeys) if a), [])
            path = self.root / rel
            problem = ("empty question" if not question else "no answer" if not answers
                       else image_file_problem(path, rel))
            if problem:
                self.skipped_at_load.append(Skipped(rel or "<no image>", problem))
            else:
                self.samples.append((path, question, answers))
        if not self.samples:
            report = SkipReport(list(self.skipped_at_load))
            raise ValueError(f"{self.annotations}: no usable (image, question, answer) rows ({report.summary(len(rows))})")
        self.rows_read = len(rows)

    def __len__(self) -> int:
        return len(self.samples)

    def questions(self) -> list[str]:
        return [q for _, q, _ in self.samples]

    def answer_lists(self) -> list[list[str]]:
        return [list(a) for _, _, a in self.samples]

    def __getitem__(self, index: int) -> dict[str, Any]:
        path, question, answers = self.samples[index]
        try:
            img = load_image(path)
        except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as e:
            rel = os.path.relpath(path, self.root)
            return {"skipped": Skipped(rel, "unreadable image", f"{type(e).__name__}: {e}"), "index": index}
        item: dict[str, Any] = {"question": question, "answer": majority_answer(answers), "answers": list(answers),
                                "index": index, "path": str(path)}
        if self.transform is None:
            item["image"] = img
        else:
            item["pixel_values"] = self.transform(img)
        return item

    def __repr__(self) -> str:
        return f"VQAFolder({str(self.annotations)!r}, {len(self)} questions, {len(self.skipped_at_load)} skipped)"


def tokenize_qa(tokenizer: Callable[..., dict[str, torch.Tensor]], questions: Sequence[str],
                answers: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
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
        skipped = [it["skipped"] for it in items if "skipped" in it]
        items = [it for it in items if "skipped" not in it]
        batch: dict[str, Any] = {"skipped": skipped, "index": torch.tensor([it["index"] for it in items], dtype=torch.long)}
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
