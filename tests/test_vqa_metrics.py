"""VQA accuracy: the official leave-one-annotator-out formula and answer normalisation."""

import random

import pytest

from vlkit.eval.vqa_metrics import normalize_answer, process_punctuation, vqa_accuracy, vqa_score


def official_style_accuracy(pred, answers):
    """The formula written out literally: for each annotator, the matches among the other nine."""
    pred = normalize_answer(pred)
    gts = [a.strip() for a in answers]
    if len(set(gts)) > 1:
        gts = [process_punctuation(a) for a in gts]
    accs = []
    for i in range(len(gts)):
        others = [gts[j] for j in range(len(gts)) if j != i]
        accs.append(min(1.0, sum(o == pred for o in others) / 3))
    return sum(accs) / len(accs)


@pytest.mark.parametrize("matches, expected", [(0, 0.0), (1, 0.3), (2, 0.6), (3, 0.9), (4, 1.0), (10, 1.0)])
def test_known_answers_for_ten_annotators(matches, expected):
    answers = ["yes"] * matches + ["no"] * (10 - matches)
    assert vqa_accuracy("yes", answers) == pytest.approx(expected, abs=1e-12)


def test_matches_literal_leave_one_out_on_random_questions():
    rng = random.Random(0)
    pool = ["yes", "no", "2", "red", "blue", "dog", "cat", "tennis"]
    total = []
    for _ in range(300):
        answers = [rng.choice(pool[: rng.randint(1, len(pool))]) for _ in range(10)]
        pred = rng.choice(pool)
        got = vqa_accuracy(pred, answers)
        assert got == pytest.approx(official_style_accuracy(pred, answers), abs=1e-15)
        total.append(got)
    assert 0.1 < sum(total) / len(total) < 0.9


@pytest.mark.parametrize(
    "raw, normalized",
    [
        ("Two dogs.", "2 dogs"),
        ("The cat", "cat"),
        ("yes!", "yes"),
        ("dont", "don't"),
        ("1,000", "1000"),
        ("3.5", "3.5"),
        ("  left\tside\n", "left side"),
        ("black/white", "black white"),
        ("black / white", "black white"),
        ("an apple", "apple"),
        ("none", "0"),
    ],
)
def test_answer_normalisation(raw, normalized):
    assert normalize_answer(raw) == normalized


def test_prediction_is_normalised_before_matching():
    answers = ["2"] * 3 + ["3"] * 7
    assert vqa_accuracy("Two.", answers) == pytest.approx(0.9)
    # human answers that all agree are compared as they are (the official script only cleans
    # them when the annotators disagree)
    assert vqa_accuracy("yes", ["yes!"] * 10) == 0.0
    assert vqa_accuracy("yes", ["yes!"] * 5 + ["yes"] * 5) == 1.0


def test_vqa_score_sequences_and_mappings():
    preds = {1: "yes", 2: "blue"}
    answers = {1: ["yes"] * 10, 2: ["blue"] * 2 + ["red"] * 8}
    mean, per = vqa_score(preds, answers)
    assert per == pytest.approx([1.0, 0.6])
    assert mean == pytest.approx(0.8)
    assert vqa_score(["yes", "blue"], [answers[1], answers[2]]) == (mean, per)
    with pytest.raises(ValueError, match="no human answers"):
        vqa_score({3: "x"}, answers)
    with pytest.raises(ValueError, match="non-empty list"):
        vqa_accuracy("x", "x")
