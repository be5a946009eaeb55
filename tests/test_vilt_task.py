"""ViLT training: whole-word masking, in-batch ITM negatives, VQA soft scores; the ``vilt`` and
``vilt-vqa`` recipes train a tiny ViLT (two seeds each); ``vlkit vqa`` and ``vlkit eval vqa`` answer
with a ViLT by classification."""

import json

import pytest
import torch
from PIL import Image

import vlkit
from vlkit.cli import main
from vlkit.data.synthetic import ANSWERS, ShapesDataset, shapes_tokenizer
from vlkit.losses.mlm import mask_tokens, word_starts
from vlkit.tasks.albef import caption_ids
from vlkit.tasks.vilt import in_batch_negatives, vqa_loss, vqa_targets
from vlkit.train.recipes import ViltRecipe, ViltVQARecipe
from vlkit.train.recipes.vilt import continuation_flags

pytestmark = pytest.mark.usefixtures("one_thread")


# ------------------------------------------------------------------ masking, negatives, targets
def test_word_starts_and_whole_word_masking():
    continuation = torch.tensor([False, False, False, True, True, False, True])  # ids 3, 4, 6 are ## pieces
    ids = torch.tensor([[0, 1, 3, 4, 2, 5, 6, 1]])  # words: [0] [1 3 4] [2] [5 6] [1]
    assert word_starts(ids, continuation).tolist() == [[0, 1, 1, 1, 4, 5, 5, 7]]
    ids = torch.tensor([[1, 3, 4, 2, 5, 6] * 4] * 500)
    g = torch.Generator().manual_seed(0)
    _, labels = mask_tokens(ids, 7, 0, [0], 0.3, g, continuation=continuation)
    chosen = labels != -100  # (B, T)
    for a, b in ((0, 1), (1, 2), (4, 5)):  # pieces of one word are chosen together
        assert torch.equal(chosen[:, a::6], chosen[:, b::6])
    assert 0.25 < chosen.float().mean().item() < 0.35  # words (of 2-3 pieces) chosen at the rate
    # without a continuation flag the choice is per token, as before (same draws, same result)
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    plain = mask_tokens(ids, 7, 0, [0], 0.3, g1)
    flat = mask_tokens(ids, 7, 0, [0], 0.3, g2, continuation=torch.zeros(7, dtype=torch.bool))
    assert torch.equal(plain[0], flat[0]) and torch.equal(plain[1], flat[1])


def test_continuation_flags_of_a_wordpiece_tokenizer():
    from vlkit.tokenizers.wordpiece import WordPieceTokenizer

    tok = WordPieceTokenizer(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "play", "##ing", "ball"])
    assert continuation_flags(tok).tolist() == [False] * 6 + [True, False]


def test_in_batch_negatives_never_pick_the_same_caption():
    captions = ["a red circle", "a blue star", "a red circle", "a green cross"]
    ids = caption_ids(captions)
    for seed in range(20):
        other = in_batch_negatives(ids, 4, torch.Generator().manual_seed(seed)).tolist()
        assert all(captions[j] != captions[i] for i, j in enumerate(other))


def test_vqa_soft_scores_and_loss():
    answers = ("red", "blue", "yes")
    targets = vqa_targets([["red"], ["blue", "blue", "red", "yes", "yes", "yes", "yes"], ["green"]], answers)
    expected = torch.tensor([[1.0, 0.0, 0.0], [1 / 3, 2 / 3, 1.0], [0.0, 0.0, 0.0]])
    assert torch.allclose(targets, expected)
    logits = torch.randn(3, 3)
    ref = torch.nn.functional.binary_cross_entropy_with_logits(logits.double(), expected.double(), reduction="sum") / 3
    assert abs(vqa_loss(logits, targets).item() - ref.item()) < 1e-5


# ------------------------------------------------------------------ learning
def _train(task, model, batch, steps, lr):
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    history = []
    for _ in range(steps):
        losses = task.losses(model, batch)
        opt.zero_grad()
        sum(losses.values()).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        history.append({k: v.item() for k, v in losses.items()})
    return history


def _mean(history, key, rows):
    return sum(h[key] for h in history[rows]) / len(history[rows])


@pytest.mark.parametrize("seed", [0, 1])
def test_vilt_task_trains_itm_and_mlm(seed):
    """300 AdamW steps (lr 3e-3, clipped at 1) on 8 shapes with distinct captions: over six seeds
    the ITM loss fell from ~0.70 to 0.18-0.55 (mean of the last 10 steps), MLM from ~3.5 to
    0.23-0.37, and the matched probability of true pairs exceeded shifted ones' by 0.28-0.89
    (about 20 s a seed)."""
    torch.manual_seed(seed)
    task = ViltRecipe({"preset": "vilt-tiny"}, tokenizer="shapes")
    model = task.build_model()
    ds = ShapesDataset(size=8, image_size=32, transform=vlkit.image_transform(model), captions="full")
    batch = task.collate()([ds[i] for i in range(8)])
    history = _train(task, model, batch, 300, 3e-3)
    assert set(history[0]) == {"itm_loss", "mlm_loss"}
    start, end = slice(0, 10), slice(-10, None)
    assert _mean(history, "itm_loss", end) < 0.85 * _mean(history, "itm_loss", start)
    assert _mean(history, "mlm_loss", end) < 0.3 * _mean(history, "mlm_loss", start)
    model.eval()
    with torch.no_grad():
        pixels, ids, mask = batch["pixel_values"], batch["input_ids"], batch["attention_mask"]
        p_true = model.match(pixels, ids, mask).mean().item()
        p_shifted = model.match(pixels, ids.roll(1, 0), mask.roll(1, 0)).mean().item()
    assert p_true > p_shifted + 0.15, (p_true, p_shifted)


@pytest.mark.parametrize("seed", [0, 1])
def test_vilt_vqa_task_learns_the_answers(seed):
    """100 steps on 16 shapes questions: the classifier answers all but at most two of them."""
    torch.manual_seed(seed)
    task = ViltVQARecipe({"preset": "vilt-tiny"}, tokenizer="shapes")
    model = task.build_model()
    assert model.config.answers == ANSWERS
    ds = ShapesDataset(size=16, image_size=32, transform=vlkit.image_transform(model))
    batch = task.collate()([ds[i] for i in range(16)])
    history = _train(task, model, batch, 100, 2e-3)
    assert history[-1]["vqa_loss"] < 0.1 * history[0]["vqa_loss"]
    model.eval()
    with torch.no_grad():
        predicted = model.answer(batch["pixel_values"], batch["question_input_ids"], batch["question_attention_mask"])
    assert sum(p == a for p, a in zip(predicted, batch["answers"])) >= 14


# ------------------------------------------------------------------ recipes and the CLI
def test_recipe_evaluations():
    torch.manual_seed(0)
    recipe = ViltRecipe({"preset": "vilt-tiny"}, tokenizer="shapes", retrieval_eval_images=6)
    model = recipe.build_model()
    val = ShapesDataset("validation", size=12, image_size=32, transform=vlkit.image_transform(model))
    m = recipe.evaluate(model, val, batch_size=8).metrics
    assert {"loss", "itm_accuracy", "mlm_accuracy", "i2t_R@1", "t2i_R@1"} <= set(m)
    assert m["retrieval_images"] == 6 and 0 <= m["itm_accuracy"] <= 100
    assert "ITM accuracy" in recipe.summary(m, 12)[0]
    vqa = ViltVQARecipe({"preset": "vilt-tiny"}, tokenizer="shapes", vqa_eval_questions=10)
    vm = vqa.evaluate(vqa.build_model(), val, batch_size=8).metrics
    assert vm["vqa_questions"] == 10 and {"loss", "vqa_accuracy", "vqa_exact_match"} <= set(vm)
    assert "VQA accuracy on 10 held-out questions" in vqa.summary(vm)[0]


def test_vilt_vqa_adds_a_head_to_a_pretrained_vilt(tmp_path):
    torch.manual_seed(0)
    pre = vlkit.create_model("vilt-tiny", vocab_size=shapes_tokenizer().vocab_size)
    pre.save_pretrained(tmp_path)
    model = ViltVQARecipe({"pretrained": str(tmp_path)}, tokenizer="shapes", answers=("yes", "no")).build_model()
    assert model.config.answers == ("yes", "no")
    assert torch.equal(model.pooler.weight, pre.pooler.weight)


@pytest.fixture(scope="module")
def vilt_vqa_folder(tmp_path_factory):
    torch.manual_seed(0)
    model = vlkit.create_model("vilt-tiny", vocab_size=shapes_tokenizer().vocab_size, answers=ANSWERS)
    return model, str(model.save_pretrained(tmp_path_factory.mktemp("vilt"), tokenizer=shapes_tokenizer()))


def test_cli_vqa_answers_with_a_vilt(vilt_vqa_folder, tmp_path, capsys):
    model, folder = vilt_vqa_folder
    ds = ShapesDataset("validation", size=1, image_size=32)
    path = tmp_path / "shape.png"
    ds.image(0).save(path)
    assert main(["vqa", "--model", folder, str(path), "what colour is the shape?"]) == 0
    answer = capsys.readouterr().out.strip()
    tok = shapes_tokenizer()
    q = tok(["what colour is the shape?"])
    pixels = vlkit.image_transform(model)(Image.open(path))[None]
    assert answer == model.eval().answer(pixels, q["input_ids"], q["attention_mask"])[0]
    (tmp_path / "answers.txt").write_text("yes\nno\n")
    assert main(["vqa", "--model", folder, str(path), "is it red?", "--answers", str(tmp_path / "answers.txt")]) == 0
    assert capsys.readouterr().out.strip() in ("yes", "no")


def test_cli_eval_vqa_with_a_vilt(vilt_vqa_folder, tmp_path, capsys):
    _, folder = vilt_vqa_folder
    out = tmp_path / "m.json"
    assert main(["eval", "vqa", "--model", folder, "--size", "12", "--json", str(out)]) == 0
    metrics = json.loads(out.read_text())
    assert metrics["questions"] == 12 and 0 <= metrics["vqa_accuracy"] <= 100
    assert "VQA accuracy" in capsys.readouterr().out


def test_cli_vqa_refuses_a_vilt_without_answers(tmp_path, capsys):
    model = vlkit.create_model("vilt-tiny", vocab_size=shapes_tokenizer().vocab_size)
    folder = model.save_pretrained(tmp_path / "m", tokenizer=shapes_tokenizer())
    ds = ShapesDataset("validation", size=1, image_size=32)
    ds.image(0).save(tmp_path / "s.png")
    assert main(["vqa", "--model", str(folder), str(tmp_path / "s.png"), "what?"]) != 0
    assert "without a VQA head" in capsys.readouterr().err


def test_cli_eval_retrieval_scores_every_pair_with_a_vilt(vilt_vqa_folder, tmp_path, capsys):
    _, folder = vilt_vqa_folder
    out = tmp_path / "r.json"
    assert main(["eval", "retrieval", "--model", folder, "--size", "8", "--json", str(out)]) == 0
    metrics = json.loads(out.read_text())
    assert metrics["images"] == 8 and metrics["joint_passes"] == 8 * metrics["texts"]
    assert 0 <= metrics["i2t_R@1"] <= 100
    assert main(["eval", "retrieval", "--model", folder, "--size", "8", "--rerank", "itm"]) != 0
    assert "--rerank does not apply" in capsys.readouterr().err
