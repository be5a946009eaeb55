"""The ``lm`` recipe: a decoder trained on text alone (the shapes' texts without images, or a text
file), next-token loss with padding labelled -100; it learns, and its model folder loads."""

from __future__ import annotations

import json

import pytest
import torch

import vlkit
from vlkit.data.conversations import conversation_tokenizer
from vlkit.data.skips import SkipReport
from vlkit.data.synthetic import ShapesDataset, full_caption
from vlkit.data.text_corpus import DESCRIBE_PROMPT, TEXT_KINDS, ShapesText, TextLines
from vlkit.tasks.lm import IGNORE_INDEX
from vlkit.train import load_config, train
from vlkit.train.recipes import get_recipe

TINY = [
    "task=lm",
    "model.preset=llama-tiny",
    "model.vocab_size=80",
    "model.hidden_size=32",
    "model.intermediate_size=64",
    "train.batch_size=16",
    "train.log_every=1",
    "train.progress=false",
    "train.plots=false",
    "train.threads=1",
    "optim.lr=1e-2",
    "optim.warmup_steps=3",
    "optim.weight_decay=0.0",
    "data.kind=shapes-text",
    "data.num_workers=0",
    "data.train_size=2000",
    "data.val_size=64",
]


def test_shapes_text_kinds_are_covered_by_the_tokenizer():
    tok = conversation_tokenizer()
    ds = ShapesText("train", size=600, seed=3)
    kinds = {ds[i]["kind"] for i in range(len(ds))}
    assert kinds == set(TEXT_KINDS)
    unk = tok.token_to_id("[UNK]")
    for i in range(len(ds)):
        assert unk not in tok.encode(ds[i]["text"]), ds[i]["text"]
    texts = {kind: [ds[i]["text"] for i in range(len(ds)) if ds[i]["kind"] == kind] for kind in TEXT_KINDS}
    for chat in texts["chat"]:
        assert chat.startswith("USER: ") and " ASSISTANT: " in chat and chat.endswith("</s>") and "<image>" not in chat
    described = [t for t in texts["chat"] if "\n" in t]  # the full caption in the image's place
    assert 0.65 < len(described) / len(texts["chat"]) < 0.95 and described[0].startswith("USER: a ")
    assert "\ndescribe the image. ASSISTANT: " in "".join(texts["chat"])
    assert all(" answer: " in t for t in texts["qa"])
    assert 0.02 < sum(t.startswith("question: ") for t in texts["qa"]) / len(texts["qa"]) < 0.25
    shapes = ShapesDataset("train", size=600, seed=3)
    for i in range(len(ds)):  # BLIP-2's captioning prompt: the full caption follows it, after the image's own
        if DESCRIBE_PROMPT in ds[i]["text"]:
            caption = full_caption(shapes.attributes(i))
            assert ds[i]["text"] == f"{caption} {DESCRIBE_PROMPT} {caption}"
    assert 0.35 < sum(DESCRIBE_PROMPT in t for t in texts["qa"]) / len(texts["qa"]) < 0.65
    answers = [a.split(" question:")[0].split("</s>")[0] for t in texts["qa"] + texts["chat"] for a in t.split(": ")]
    assert 0.2 < sum(a in ("yes", "no", "one", "zero") for a in answers) / len(texts["qa"] + texts["chat"]) < 1.0
    for i in range(len(ds)):  # the compare drills: the full caption, then 2-4 yes/no and count answers
        if ds[i]["kind"] == "compare":
            text, caption = ds[i]["text"], full_caption(shapes.attributes(i))
            assert text.startswith(f"USER: {caption}\n" if text.startswith("USER: ") else f"{caption} question: ")
            said = [
                w.split("</s>")[0].split(" ")[0] for w in text.split("ASSISTANT: " if "</s>" in text else "answer: ")
            ]
            assert 2 <= len(said) - 1 <= 4 and set(said[1:]) <= {"yes", "no", "one", "zero"}, text
    assert ShapesText("train", size=600, seed=3)[5] == ds[5]  # a pure function of (seed, split, index)
    val = ShapesText("validation", size=600, seed=3)
    assert [val[i]["text"] for i in range(20)] != [ds[i]["text"] for i in range(20)]  # held-out texts


def test_collator_labels_padding_and_start(tmp_path):
    recipe = get_recipe("lm")
    batch = recipe.collate()([{"text": "a red circle", "index": 0}, {"text": "a star", "index": 1}])
    tok = recipe.tokenizer
    assert batch["input_ids"][0].tolist() == [tok.bos_token_id, *tok.encode("a red circle"), tok.eos_token_id]
    assert batch["labels"][1].tolist()[-1] == IGNORE_INDEX and batch["attention_mask"][1].tolist() == [1, 1, 1, 1, 0]
    assert batch["labels"][:, 0].eq(IGNORE_INDEX).all()
    ended = recipe.collate()([{"text": "USER: what? ASSISTANT: red</s>", "index": 0}])
    assert ended["input_ids"][0].tolist().count(tok.eos_token_id) == 1  # no second end token
    with pytest.raises(TypeError, match="shapes-text or text"):
        recipe.collate()([{"caption": "a red circle", "index": 0}])


def test_text_file_skips_bad_lines(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_bytes(b"a red circle\n\n   \nquestion: where is it? answer: left\n\xff\xfe bad\n")
    ds = TextLines(path)
    assert [ds[i]["text"] for i in range(len(ds))] == ["a red circle", "question: where is it? answer: left"]
    assert ds.rows_read == 5 and SkipReport(ds.skipped_at_load).counts() == {"empty line": 2, "undecodable line": 1}
    (tmp_path / "empty.txt").write_text("\n\n")
    with pytest.raises(ValueError, match="no usable line"):
        TextLines(tmp_path / "empty.txt")
    with pytest.raises(FileNotFoundError):
        TextLines(tmp_path / "missing.txt")


def test_preset_gets_the_tokenizer_ids_and_small_vocabulary_is_refused():
    recipe = get_recipe(load_config(None, TINY).task, {"preset": "llama-tiny", "vocab_size": 80})
    model = recipe.build_model()
    tok = recipe.tokenizer
    assert (model.config.bos_token_id, model.config.eos_token_id, model.config.pad_token_id) == (
        tok.bos_token_id,
        tok.eos_token_id,
        tok.padding_id,
    )
    with pytest.raises(ValueError, match="vocab_size"):
        get_recipe("lm", {"preset": "llama-tiny", "vocab_size": 20}).build_model()
    with pytest.raises(TypeError, match="trains a DecoderLM"):
        get_recipe("lm", {"preset": "clip-tiny"}).build_model()


@pytest.mark.parametrize("seed", [0, 1])
def test_lm_learns_the_shapes_text(tmp_path, seed):
    out = tmp_path / "run"
    cfg = load_config(None, [*TINY, f"train.seed={seed}", "train.max_steps=40", f"train.output_dir={out}"])
    train(cfg)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if r.get("split") == "train"]
    val = [r for r in rows if r.get("split") == "validation"][-1]
    # measured (seeds 0, 1): 4.4 at the start, 1.26 and 1.49 over the last 5 of 40 steps; a uniform guess is ln(80) = 4.38
    assert sum(losses[-5:]) / 5 < 2.0 < sum(losses[:2]) / 2, losses
    assert val["lm_loss"] < 2.0 and val["perplexity"] == pytest.approx(torch.tensor(val["lm_loss"]).exp().item())
    model = vlkit.from_pretrained(out / "model")
    tok = vlkit.get_tokenizer(out / "model")
    assert isinstance(model, vlkit.models.Llama) and tok.encode("question: answer:") == conversation_tokenizer().encode(
        "question: answer:"
    )
