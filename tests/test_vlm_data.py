"""Conversation data for VLM training: LLaVA JSONL (bad rows skipped and counted), the shapes'
generated conversations, and labels only on the assistant's tokens."""

from __future__ import annotations

import json
import random

import pytest
import torch
from PIL import Image

from vlkit.data.conversations import (
    CONVERSATION_TYPES,
    REPEAT,
    ConversationCollator,
    ConversationFolder,
    conversation_tokenizer,
    encode_conversation,
    shapes_conversation,
)
from vlkit.data.skips import SkipReport
from vlkit.data.synthetic import ShapesDataset
from vlkit.tokenizers.chat import IGNORE_INDEX


def _rows(tmp_path):
    Image.new("RGB", (8, 8), "red").save(tmp_path / "a.png")
    good = {
        "image": "a.png",
        "conversations": [
            {"from": "human", "value": "<image>\nwhat colour is the circle?"},
            {"from": "gpt", "value": "red"},
            {"from": "human", "value": "and its size?"},
            {"from": "gpt", "value": "small"},
        ],
    }
    rows = [
        good,
        {"image": "a.png", "conversations": [{"from": "gpt", "value": "red"}]},  # answer first
        {"image": "a.png", "conversations": [{"from": "human", "value": "<image>\nwhat?"}]},  # no answer
        {"image": "a.png", "conversations": "red"},  # not a list
        {"image": "a.png", "conversations": [{"from": "human", "value": "what?"}, {"from": "gpt", "value": "x"}]},
        {"image": "gone.png", "conversations": good["conversations"]},  # missing file
    ]
    path = tmp_path / "train.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def test_jsonl_reader_skips_and_counts(tmp_path):
    ds = ConversationFolder(_rows(tmp_path), transform=lambda im: torch.zeros(3, 8, 8))
    assert len(ds) == 1 and ds.rows_read == 6
    item = ds[0]
    assert item["conversations"][1] == {"from": "gpt", "value": "red"} and item["pixel_values"].shape == (3, 8, 8)
    report = SkipReport(list(ds.skipped_at_load))
    assert report.counts() == {"bad conversation": 4, "missing file": 1}
    assert "skipped 5 samples of 6" in report.summary(ds.rows_read)


def test_labels_only_on_the_answers(tmp_path):
    tok = conversation_tokenizer()
    ds = ConversationFolder(_rows(tmp_path), transform=lambda im: torch.zeros(3, 8, 8))
    batch = ConversationCollator(tok)([ds[0], {"skipped": "x", "index": 9}])
    ids, labels = batch["input_ids"][0], batch["labels"][0]
    image = tok.token_to_id("<image>")
    assert int((ids == image).sum()) == 1 and labels[ids == image].item() == IGNORE_INDEX
    learned = [tok.id_to_token(int(i)) for i in ids[labels != IGNORE_INDEX]]
    assert learned == ["red", "</s>", "small", "</s>"]  # user turns, roles, bos and image carry -100
    user = tok.encode("what colour is the circle ?")
    start = ids.tolist().index(user[0])
    assert (labels[start : start + len(user)] == IGNORE_INDEX).all()
    assert torch.equal(labels[labels != IGNORE_INDEX], ids[labels != IGNORE_INDEX])
    assert batch["pixel_values"].shape == (1, 3, 8, 8) and batch["skipped"] == ["x"]


def test_shapes_conversations_cover_every_type_and_follow_ups():
    ds = ShapesDataset("train", size=40, image_size=32)
    rng, tok = random.Random(0), conversation_tokenizer()
    seen = set()
    for i in range(40):
        a = ds[i]["attributes"]
        turns = shapes_conversation(a, rng, turns=3)
        assert turns[0]["value"].startswith("<image>\n") and len(turns) == 6
        seen |= {t["type"] for t in turns[1::2]}
        for k in range(3, 6, 2):
            if turns[k - 1]["value"] == REPEAT:
                assert turns[k]["value"] == turns[k - 2]["value"]
        ids, _ = encode_conversation(tok, turns)
        assert tok.token_to_id("[UNK]") not in ids
    assert seen == set(CONVERSATION_TYPES)


def test_collator_sources():
    tok = conversation_tokenizer()
    ds = ShapesDataset("train", size=4, image_size=32, transform=lambda im: torch.zeros(3, 32, 32))
    items = [ds[i] for i in range(4)]
    caption = ConversationCollator(tok, source="caption")(items)
    assert caption["conversations"][0][1]["value"] == items[0]["caption"]
    chat = ConversationCollator(tok, source="chat", seed=1)(items)
    assert "type" in chat["conversations"][0][1]
    assert chat["input_ids"].shape == chat["labels"].shape == chat["attention_mask"].shape
    with pytest.raises(ValueError, match="source"):
        ConversationCollator(tok, source="x")
