"""Conversations about images for VLM training: LLaVA's JSONL, the built-in shapes' generated
conversations, the word tokenizer that covers them, and batching with labels only on the
assistant's answers.

A JSONL row (LLaVA's format)::

    {"image": "photos/1.jpg", "conversations": [{"from": "human", "value": "<image>\\nWhat is it?"},
                                                {"from": "gpt", "value": "A cat."}, ...]}

Rows whose conversation is not a list of ``from``/``value`` turns, human first and alternating,
ending with an answer, or whose image is missing, are left out when the file is read
(``skipped_at_load``, counted by :class:`vlkit.data.skips.SkipReport`); unreadable images when
they are loaded.

The shapes' conversations (:func:`shapes_conversation`) ask about colour, shape, size, position,
counts and yes/no, and follow-up turns that need the earlier turn ("and its size?", "what did you
just say?"); each answer's ``type`` is kept for per-type accuracy.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from ..tokenizers.chat import IGNORE_INDEX, IMAGE_TOKEN, apply_chat_template, encode_chat
from .annotations import IMAGE_KEYS, AnnotatedImages, image_path, pick_key
from .skips import Skipped, start_batch
from .synthetic import (
    COLOURS,
    POSITION_ANSWERS,
    QUESTION_TYPES,
    VOCABULARY,
    ShapeAttributes,
    _words,
    random_question,
)

CONVERSATION_KEYS = ("conversations",)
CAPTION_INSTRUCTION = "describe the image."
CHAT_SPECIALS = {"pad": "[PAD]", "unk": "[UNK]", "bos": "<s>", "eos": "</s>"}
CONVERSATION_TYPES = (*QUESTION_TYPES, "count", "follow-up")
COUNT_WORDS = {True: "one", False: "zero"}
FOLLOW_UPS = {  # attribute -> elliptical question that needs the earlier turn
    "colour": "and its colour?",
    "shape": "and its shape?",
    "size": "and its size?",
    "position": "and where is it?",
}
REPEAT = "what did you just say?"
QA_TEMPLATE = "question: {} answer: {}"  # BLIP-2's VQA prompt and its answer, lower-cased for the word tokenizer


def _turns_problem(turns: Any) -> str | None:
    """Why ``turns`` is not a usable LLaVA conversation, or None."""
    if not isinstance(turns, list) or not turns:
        return "not a non-empty list of turns"
    for i, turn in enumerate(turns):
        if not isinstance(turn, Mapping) or not isinstance(turn.get("value"), str):
            return f"turn {i} is not a dict with a text 'value'"
        expected = ("human",) if i % 2 == 0 else ("gpt",)
        if turn.get("from") not in expected:
            return f"turn {i} is from {turn.get('from')!r}, expected {expected[0]!r} (human first, alternating)"
    if len(turns) % 2:
        return "it ends with a human turn (no answer to learn)"
    if sum(t["value"].count(IMAGE_TOKEN) for t in turns) != 1:
        return f"it must hold {IMAGE_TOKEN} exactly once (one image per row)"
    return None


class ConversationFolder(AnnotatedImages):
    """LLaVA-format rows (an image and its ``conversations``) from a JSONL file; a map-style
    dataset whose items are ``{"image" or "pixel_values", "conversations", "index", "path"}``."""

    what, unit = "(image, conversation) rows", "conversations"

    def __init__(
        self,
        annotations: str | os.PathLike,
        root: str | os.PathLike | None = None,
        transform: Callable | None = None,
        image_key: str | None = None,
    ) -> None:
        self.image_key = image_key
        super().__init__(annotations, root, transform)

    def choose_columns(self, columns) -> None:
        self.image_key = pick_key(columns, self.image_key, IMAGE_KEYS, "image", self.annotations)
        pick_key(columns, None, CONVERSATION_KEYS, "conversations", self.annotations)

    def read_row(self, row: dict[str, Any]) -> list[tuple] | Skipped:
        rel, path, file_problem = image_path(row.get(self.image_key), self.root)
        problem = _turns_problem(row.get("conversations"))
        if problem:
            return Skipped(rel or "<no image>", "bad conversation", problem)
        if file_problem:
            return Skipped(rel or "<no image>", file_problem)
        return [(path, [dict(from_=t["from"], value=t["value"]) for t in row["conversations"]])]

    def item_fields(self, index: int) -> dict[str, Any]:
        path, turns = self.samples[index]
        return {
            "conversations": [{"from": t["from_"], "value": t["value"]} for t in turns],
            "index": index,
            "path": str(path),
        }


# ----------------------------------------------------------------- the shapes' conversations
def _answer(a: ShapeAttributes, attribute: str) -> str:
    return POSITION_ANSWERS[a.position] if attribute == "position" else str(getattr(a, attribute))


def _first_turn(a: ShapeAttributes, rng: random.Random, kind: str) -> tuple[str, str]:
    if kind == "count":
        colour = a.colour if rng.random() < 0.5 else rng.choice([c for c in COLOURS if c != a.colour])
        return f"how many {colour} shapes are there?", COUNT_WORDS[colour == a.colour]
    q = random_question(a, rng, kind)
    return q.question, q.answer


def shapes_conversation(a: ShapeAttributes | Mapping, rng: random.Random, turns: int | None = None) -> list[dict]:
    """A conversation of ``turns`` (1-3, random when None) questions about the image ``a``
    describes: ``[{"from": "human", "value": "<image>\\n...", }, {"from": "gpt", "value": ...,
    "type": ...}, ...]``; the first question of a random type (:data:`CONVERSATION_TYPES` but
    follow-up), later ones follow-ups."""
    if isinstance(a, Mapping):
        a = ShapeAttributes(**{**a, "centre": tuple(a["centre"]), "rgb": tuple(a["rgb"])})
    turns = rng.randint(1, 3) if turns is None else turns
    kind = rng.choice((*QUESTION_TYPES, "count"))
    question, answer = _first_turn(a, rng, kind)
    out = [{"from": "human", "value": f"{IMAGE_TOKEN}\n{question}"}, {"from": "gpt", "value": answer, "type": kind}]
    for _ in range(turns - 1):
        if rng.random() < 0.25:
            question = REPEAT  # answered by the previous answer: needs the earlier turn
        else:
            attribute = rng.choice(tuple(FOLLOW_UPS))
            question, answer = FOLLOW_UPS[attribute], _answer(a, attribute)
        out += [{"from": "human", "value": question}, {"from": "gpt", "value": answer, "type": "follow-up"}]
    return out


def caption_conversation(caption: str) -> list[dict]:
    """Stage-1 alignment: the image, an instruction, and the caption as the answer."""
    return [{"from": "human", "value": f"{IMAGE_TOKEN}\n{CAPTION_INSTRUCTION}"}, {"from": "gpt", "value": caption}]


def conversation_tokenizer():
    """A word tokenizer covering every text of the shapes' captions and conversations, the chat
    template and :data:`QA_TEMPLATE`: [PAD] [UNK] <s> </s> <image> USER ASSISTANT, then the words
    (ids 0-4 the specials)."""
    from ..tokenizers.simple import WordTokenizer

    extra = [CAPTION_INSTRUCTION, REPEAT, *FOLLOW_UPS.values(), "how many shapes are there?", *COUNT_WORDS.values()]
    extra.append(QA_TEMPLATE)  # BLIP-2 style "question: ... answer: ..." (after the words above: their ids stay)
    words = [w for text in extra for w in _words(text)]
    tokens = [*CHAT_SPECIALS.values(), IMAGE_TOKEN, "USER", "ASSISTANT", ":"]
    tokens += [w for w in dict.fromkeys([*VOCABULARY, *words]) if w not in tokens]
    return WordTokenizer(tokens, dict(CHAT_SPECIALS), extra_special_tokens=[IMAGE_TOKEN])


# ----------------------------------------------------------------- batches
def encode_conversation(tokenizer, turns: Sequence[Mapping]) -> tuple[list[int], list[int]]:
    """Ids and labels (-100 outside the assistant's answers) of a conversation, in the chat template."""
    eos = tokenizer.special_tokens.get("eos", "</s>")
    return encode_chat(tokenizer, apply_chat_template(turns, eos_token=eos))


def pad_rows(rows: Sequence[Sequence[int]], value: int, *, left: bool = False) -> torch.Tensor:
    width = max(len(r) for r in rows)
    fill = [[value] * (width - len(r)) for r in rows]
    return torch.tensor([(f + list(r)) if left else (list(r) + f) for r, f in zip(rows, fill)], dtype=torch.long)


class ConversationCollator:
    """Items -> ``{"pixel_values" (N, 3, H, W), "input_ids", "attention_mask", "labels" (B, T)
    (right-padded; the image token once per image), "conversations", "index", "skipped"}``.

    An item's conversation: its ``conversations`` (JSONL), else with ``source="chat"`` one
    generated from its shape ``attributes``, else its ``caption`` (:func:`caption_conversation`)."""

    def __init__(self, tokenizer, *, source: str = "caption", seed: int = 0) -> None:
        if source not in ("caption", "chat"):
            raise ValueError(f"source must be 'caption' or 'chat', got {source!r}")
        self.tokenizer, self.source = tokenizer, source
        self.rng = random.Random(seed)

    def conversation(self, item: Mapping) -> list[dict]:
        if "conversations" in item:
            return list(item["conversations"])
        if self.source == "chat" and "attributes" in item:
            return shapes_conversation(item["attributes"], self.rng)
        if "caption" in item:
            return caption_conversation(item["caption"])
        raise TypeError("dataset items have no 'conversations', shape 'attributes' or 'caption'")

    def __call__(self, items: Sequence[dict[str, Any]]) -> dict[str, Any]:
        batch, items = start_batch(items)
        if not items:
            return batch
        conversations = [self.conversation(it) for it in items]
        encoded = [encode_conversation(self.tokenizer, c) for c in conversations]
        ids = pad_rows([e[0] for e in encoded], self.tokenizer.padding_id)
        batch.update(
            pixel_values=torch.stack([it["pixel_values"] for it in items]),  # (B, 3, H, W)
            input_ids=ids,  # (B, T)
            attention_mask=pad_rows([[1] * len(e[0]) for e in encoded], 0),
            labels=pad_rows([e[1] for e in encoded], IGNORE_INDEX),
            conversations=conversations,
        )
        return batch
