"""VQA evaluation: the score (official formula, single answers, per type), answers by generation
(grouped by question length, so no padding reaches the decoder) and by ranking, and
`vlkit eval vqa` on the built-in shapes and on a user's JSONL file."""

import json

import pytest
import torch

import vlkit
from vlkit.cli import main
from vlkit.data.synthetic import ShapesDataset
from vlkit.eval.captioning import decode_generated
from vlkit.eval.vqa import answer_questions, rank_answer_list, vqa_scores
from vlkit.train.recipes import BLIPVQARecipe

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """An untrained blip-vqa pair saved as the recipe saves it (captioner, vqa/, tokenizer)."""
    torch.manual_seed(0)
    recipe = BLIPVQARecipe({"preset": "blip-tiny"}, tokenizer="shapes", init_std=0.5)
    pair = recipe.build_model().eval()
    folder = pair.save_pretrained(tmp_path_factory.mktemp("blip") / "model")
    return recipe, pair, folder


def test_vqa_scores_known_answers():
    s = vqa_scores(["Two", "red", "no"], [["2"], ["blue"], ["no"] * 3 + ["yes"] * 7], ["count", "colour", "yes/no"])
    # "Two" normalises to "2": one answer counts as ten agreeing annotators -> 1; "no" by 3 of 10 -> 0.9
    assert s["vqa_accuracy"] == pytest.approx(100 * (1 + 0 + 0.9) / 3)
    assert s["exact_match"] == pytest.approx(100 / 3)  # "no" is not the most common answer ("yes")
    assert s["accuracy_count"] == 100 and s["accuracy_colour"] == 0 and s["accuracy_yes/no"] == pytest.approx(90)
    assert set(vqa_scores(["a"], [["a"]])) == {"vqa_accuracy", "exact_match"}
    with pytest.raises(ValueError, match="2 predictions but 1"):
        vqa_scores(["a", "b"], [["a"]])
    with pytest.raises(ValueError, match="at least one answer"):
        vqa_scores(["a"], [[]])


def shapes_batch(pair, n, seed=3):
    ds = ShapesDataset("validation", n, seed=seed, image_size=32, transform=vlkit.image_transform(pair.vqa))
    return torch.stack([ds[i]["pixel_values"] for i in range(n)]), [ds.question(i).question for i in range(n)]


def test_generation_groups_questions_by_length(saved):
    recipe, pair, _ = saved
    tok = recipe.tokenizer
    pixels, questions = shapes_batch(pair, 24)
    assert len({len(tok([q])["input_ids"][0]) for q in questions}) > 2  # several lengths
    got = answer_questions(pair.vqa, tok, pixels, questions, batch_size=5, num_beams=2, max_new_tokens=4)
    for i, q in enumerate(questions):  # one at a time: nothing padded
        ids = tok([q])["input_ids"]
        row = pair.vqa.answer(pixels[i : i + 1], ids, num_beams=2, max_new_tokens=4)[0]
        assert got[i] == decode_generated(tok, row, pair.vqa.config.text)
    assert len(set(got)) > 1  # the random model does not answer everything alike
    with pytest.raises(ValueError, match="24 images but 3 questions"):
        answer_questions(pair.vqa, tok, pixels, questions[:3])


def test_ranking_picks_from_the_list(saved):
    recipe, pair, _ = saved
    tok = recipe.tokenizer
    pixels, questions = shapes_batch(pair, 10)
    cands = list(ShapesDataset.answer_list())
    got = rank_answer_list(pair.vqa, tok, pixels, questions, cands, k=5, batch_size=4)
    a = tok(cands, padding="longest")
    for i, q in enumerate(questions):
        ids = tok([q])
        best = pair.vqa.rank_answers(
            pixels[i : i + 1], ids["input_ids"], ids["attention_mask"], a["input_ids"], a["attention_mask"], k=5
        )
        assert got[i] == cands[int(best[0])]
    with pytest.raises(ValueError, match="empty"):
        rank_answer_list(pair.vqa, tok, pixels, questions, [])


def test_cli_on_shapes_reads_the_vqa_subfolder(saved, tmp_path, capsys):
    recipe, pair, folder = saved
    out = tmp_path / "vqa.json"
    assert (
        main(
            [
                "eval",
                "vqa",
                "--model",
                str(folder),
                "--size",
                "20",
                "--seed",
                "3",
                "--num-beams",
                "1",
                "--json",
                str(out),
            ]
        )
        == 0
    )
    m = json.loads(out.read_text())
    pixels, questions = shapes_batch(pair, 20)
    ds = ShapesDataset("validation", 20, seed=3)
    answers = answer_questions(pair.vqa, recipe.tokenizer, pixels, questions, num_beams=1)
    expected = vqa_scores(
        answers, [[ds.question(i).answer] for i in range(20)], [ds.question(i).type for i in range(20)]
    )
    assert m["questions"] == 20
    for k, v in expected.items():
        assert m[k] == pytest.approx(v)
    assert "generated answers" in capsys.readouterr().out
    # the same through the VQA folder itself and by ranking the shapes' answers
    assert (
        main(
            [
                "eval",
                "vqa",
                "--model",
                str(folder / "vqa"),
                "--size",
                "20",
                "--seed",
                "3",
                "--answers",
                "all",
                "--json",
                str(out),
            ]
        )
        == 0
    )
    assert "ranking 20 answers" in capsys.readouterr().out


def test_cli_on_a_jsonl_file(saved, tmp_path, capsys):
    recipe, pair, folder = saved
    (tmp_path / "img").mkdir()
    ds = ShapesDataset("validation", 4, seed=5, image_size=32)
    rows = []
    for i in range(4):
        ds.image(i).save(tmp_path / "img" / f"{i}.png")
        rows.append(
            {
                "image": f"img/{i}.png",
                "question": ds.question(i).question,
                "answers": [ds.question(i).answer] * 2 + ["something"],
            }
        )
    rows.append({"image": "img/missing.png", "question": "what?", "answer": "x"})
    (tmp_path / "qa.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (tmp_path / "answers.txt").write_text("\n".join(ShapesDataset.answer_list()) + "\n")
    out = tmp_path / "m.json"
    assert (
        main(
            [
                "eval",
                "vqa",
                "--model",
                str(folder / "vqa"),
                "--annotations",
                str(tmp_path / "qa.jsonl"),
                "--answers",
                str(tmp_path / "answers.txt"),
                "--json",
                str(out),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "skipped 1 sample (1 missing file)" in printed
    m = json.loads(out.read_text())
    assert m["questions"] == 4 and 0 <= m["vqa_accuracy"] <= 100 and "accuracy_colour" not in m


def test_cli_errors(saved, tmp_path, capsys):
    recipe, pair, folder = saved
    lonely = tmp_path / "captioner"
    pair.captioner.save_pretrained(lonely)
    assert main(["eval", "vqa", "--model", str(lonely), "--size", "4"]) == 2
    assert "no vqa/ sub-folder" in capsys.readouterr().err
    assert main(["eval", "vqa", "--model", str(folder), "--size", "4", "--answers", str(tmp_path / "none.txt")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["eval", "captioning", "--model", str(folder / "vqa"), "--size", "4"]) == 2
    assert "not a captioning BLIP" in capsys.readouterr().err
