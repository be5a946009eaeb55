"""Questions about the built-in shapes (true answers, deterministic, held out, covered by the shapes
tokenizer), a user's (image, question, answers) files, and question-answer batches."""

import json
import random
import re
from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image

from vlkit.data import ShapesDataset
from vlkit.data.synthetic import (
    ANSWERS,
    COLOURS,
    POSITION_PHRASES,
    QUESTION_TYPES,
    SHAPES,
    SIZES,
    VOCABULARY,
    full_caption,
    random_question,
    shapes_tokenizer,
)
from vlkit.data.vqa import QuestionAnswerCollator, VQAFolder, majority_answer, tokenize_qa

VALUES = {"colour": tuple(COLOURS), "shape": SHAPES, "size": tuple(SIZES)}


def named(question: str) -> dict[str, set[str]]:
    """The attribute values a question names (positions by their phrases)."""
    words = set(re.findall(r"[a-z]+", question))
    out = {k: words & set(v) for k, v in VALUES.items()}
    out["position"] = {p for p, phrase in POSITION_PHRASES.items() if phrase in question}
    return out


def test_questions_are_true_to_the_image():
    ds = ShapesDataset(size=600, seed=2)
    seen = Counter()
    yes = Counter()
    for i in range(600):
        a, q = ds.attributes(i), ds.question(i)
        truth = {"colour": a.colour, "shape": a.shape, "size": a.size, "position": a.position}
        seen[q.type] += 1
        assert q.answer in ANSWERS and q.question.endswith("?")
        names = named(q.question)
        if q.type == "size":  # "small or large?" offers both sizes, or names none ("what size ...")
            assert names["size"] in (set(), set(SIZES)), q
            names["size"] = set()
        if q.type != "yes/no":
            expected = a.position if q.type == "position" else truth[q.type]
            assert q.answer == expected, (q, a)
            # every attribute the question names is true of the image (the premise holds)
            assert all(values <= {truth[k]} for k, values in names.items()), (q, a)
            assert not names[q.type], q  # it does not give its answer away
        else:
            assert q.answer in ("yes", "no")
            wrong = {k: values - {truth[k]} for k, values in names.items() if values - {truth[k]}}
            if q.answer == "yes":
                assert not wrong, (q, a)
            else:  # exactly one named value is false: the one asked about
                assert len(wrong) == 1 and len(next(iter(wrong.values()))) == 1, (q, a)
            yes[q.answer] += 1
    assert set(seen) == set(QUESTION_TYPES) and min(seen.values()) > 80  # about 120 each
    assert 0.35 < yes["yes"] / sum(yes.values()) < 0.65


def test_questions_are_deterministic_and_held_out():
    a, b = ShapesDataset("validation", 200, seed=1), ShapesDataset("validation", 200, seed=1)
    assert [a.question(i) for i in (5, 0, 199)] == [b.question(i) for i in (5, 0, 199)]
    item = a[7]
    q = a.question(7)
    assert (item["question"], item["answer"], item["question_type"]) == (q.question, q.answer, q.type)
    # asking questions changes neither image nor caption: the question has its own random stream
    assert item["caption"] == a.caption(7) and item["attributes"] == a.attributes(7).to_dict()
    train = ShapesDataset("train", 200, seed=1)
    assert all(train.attributes(i) != a.attributes(i) for i in range(200))
    # the same attributes always give the same question for the same stream
    rng1, rng2 = random.Random("x"), random.Random("x")
    assert random_question(a.attributes(3), rng1) == random_question(a.attributes(3), rng2)
    with pytest.raises(ValueError, match="question type"):
        random_question(a.attributes(3), rng1, "count")


def test_target_caption_is_the_canonical_caption():
    ds = ShapesDataset("train", 50, captions="random")
    for i in range(50):
        item = ds[i]
        assert item["target_caption"] == full_caption(ds.attributes(i))
    assert ShapesDataset.answer_list() == ANSWERS and len(set(ANSWERS)) == 20


def test_shapes_tokenizer_covers_every_text():
    tok = shapes_tokenizer()
    assert tok.vocab_size == 5 + len(VOCABULARY) == 48
    assert [tok.pad_token_id, tok.unk_token_id, tok.cls_token_id, tok.sep_token_id] == [0, 1, 2, 3]
    ds = ShapesDataset(size=300)
    texts = [t for i in range(300) for t in (ds[i]["caption"], ds[i]["target_caption"], ds[i]["question"])]
    texts += list(ANSWERS)
    for zs in ds.zeroshot_tasks().values():
        texts += [t.format(c) for t in zs.templates for c in zs.classnames]
    ids = tok(texts, padding="longest")["input_ids"]
    assert not (ids == tok.unk_token_id).any()
    assert (
        tok.decode(tok(["what colour is the square?"])["input_ids"][0].tolist(), skip_special_tokens=True)
        == "what colour is the square?"
    )


def write_images(folder, n):
    folder.mkdir(exist_ok=True)
    for i in range(n):
        Image.fromarray(np.full((8, 8, 3), 40 * i, dtype=np.uint8)).save(folder / f"{i}.png")


def test_vqa_folder_csv_and_jsonl(tmp_path):
    write_images(tmp_path / "img", 3)
    (tmp_path / "img" / "bad.png").write_bytes(b"not an image")
    (tmp_path / "img" / "empty.png").write_bytes(b"")
    (tmp_path / "qa.csv").write_text(
        "image,question,answers\n"
        "img/0.png,what is it?,cat|cat|dog\n"
        "img/1.png,,cat\n"  # empty question
        "img/2.png,how many?,\n"  # missing answer
        "img/9.png,where?,here\n"  # missing file
        "img/empty.png,what?,x\n"  # zero-size file
        "img/bad.png,what?,y\n"
    )  # unreadable: skipped when loaded
    ds = VQAFolder(tmp_path / "qa.csv")
    assert len(ds) == 2 and ds.questions() == ["what is it?", "what?"]
    assert sorted(s.reason for s in ds.skipped_at_load) == [
        "empty question",
        "missing answer",
        "missing file",
        "zero-size file",
    ]
    item = ds[0]
    assert item["answer"] == "cat" and item["answers"] == ["cat", "cat", "dog"] and item["image"].size == (8, 8)
    assert ds[1]["skipped"].reason == "unreadable image"

    rows = [
        {"image": "img/1.png", "question": "colour?", "answers": ["red", "blue", "blue"]},
        {"image": "img/2.png", "question": "size?", "answer": "small"},
    ]
    (tmp_path / "qa.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    ds = VQAFolder(tmp_path / "qa.jsonl", transform=lambda img: torch.zeros(3, 4, 4), answer_key="answers")
    assert ds.answer_lists() == [["red", "blue", "blue"]]  # the second row has no "answers"
    assert ds[0]["answer"] == "blue" and ds[0]["pixel_values"].shape == (3, 4, 4)
    with pytest.raises(KeyError, match="question"):
        VQAFolder(tmp_path / "qa.jsonl", question_key="query")
    with pytest.raises(ValueError, match="no usable"):
        (tmp_path / "none.csv").write_text("image,question,answer\nimg/9.png,q,a\n")
        VQAFolder(tmp_path / "none.csv")


def test_majority_answer_keeps_the_first_on_ties():
    assert majority_answer(["b", "a", "a", "b"]) == "b"
    assert majority_answer(["x", "y", "y"]) == "y"


def test_question_answer_batches():
    tok = shapes_tokenizer()
    ds = ShapesDataset(
        "validation", 6, image_size=16, transform=lambda img: torch.from_numpy(np.array(img)).permute(2, 0, 1)
    )
    items = [ds[i] for i in range(6)] + [{"skipped": "x", "index": 99}]
    batch = QuestionAnswerCollator(tok)(items)
    assert batch["pixel_values"].shape == (6, 3, 16, 16) and batch["skipped"] == ["x"]
    assert batch["questions"] == [ds.question(i).question for i in range(6)]
    assert batch["answer_lists"] == [[a] for a in batch["answers"]]
    assert batch["question_type"] == [ds.question(i).type for i in range(6)]
    expected = tokenize_qa(tok, batch["questions"], batch["answers"])
    for k, v in expected.items():
        assert torch.equal(batch[k], v)
    q = batch["question_input_ids"]
    assert (q[:, 0] == tok.cls_token_id).all()
    assert (
        batch["question_attention_mask"].sum(1)
        == torch.tensor([len(tok([s])["input_ids"][0]) for s in batch["questions"]])
    ).all()
    # answers are single words: [CLS] word [SEP]
    assert batch["answer_input_ids"].shape == (6, 3) and (batch["answer_input_ids"][:, 2] == tok.sep_token_id).all()
    with pytest.raises(TypeError, match="question"):
        QuestionAnswerCollator(tok)([{"pixel_values": torch.zeros(3, 2, 2), "index": 0, "caption": "a"}])
