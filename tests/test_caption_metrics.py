"""BLEU and CIDEr-D against pycocoevalcap (test-only reference) on the same tokenized captions."""

import random

import pytest
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider

from vlkit.eval.caption_metrics import bleu, caption_scores, cider_d, ngram_counts, simple_tokenize

WORDS = [
    "a",
    "an",
    "the",
    "dog",
    "cat",
    "man",
    "woman",
    "red",
    "blue",
    "sits",
    "runs",
    "on",
    "in",
    "near",
    "table",
    "grass",
    "ball",
    "with",
    "two",
]


def random_corpus(seed, num_images=40, max_len=14, min_len=0):
    rng = random.Random(seed)

    def sentence(lo):
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, max_len)))

    gts = {i: [sentence(max(min_len, 1)) for _ in range(rng.randint(1, 5))] for i in range(num_images)}
    res = {}
    for i in range(num_images):
        if rng.random() < 0.3:  # a hypothesis that copies a reference with an edit: many matches
            words = rng.choice(gts[i]).split()
            words[rng.randrange(len(words))] = rng.choice(WORDS)
            res[i] = [" ".join(words)]
        else:
            res[i] = [sentence(min_len)]
    return gts, res


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bleu_matches_pycocoevalcap(seed):
    gts, res = random_corpus(seed)
    res[0], res[1] = [""], ["dog"]  # an empty and a one-word hypothesis in every corpus
    ref_corpus, ref_per = Bleu(4).compute_score(gts, res, verbose=0)
    corpus, per = bleu(res, gts)
    for k in range(4):
        assert corpus[k] == pytest.approx(ref_corpus[k], rel=1e-9, abs=1e-12)
        assert per[k] == pytest.approx(ref_per[k], rel=1e-9, abs=1e-12)
    assert max(corpus) > 0.05  # the corpus has real matches, not only smoothing constants


def test_bleu_closest_reference_length_rule():
    # hypothesis of 4 words; references of 3 and 5 words are equally close: the shorter (3) wins,
    # so there is no brevity penalty; with only the 5-word reference there is one.
    hyp = ["a b c d"]
    short_and_long = [["a b c", "a b c d e"]]
    only_long = [["a b c d e"]]
    with_short, _ = bleu(hyp, short_and_long, max_n=1)
    with_long, _ = bleu(hyp, only_long, max_n=1)
    assert with_short[0] == pytest.approx(1.0)
    assert with_long[0] == pytest.approx(__import__("math").exp(1 - 5 / 4))
    ref, _ = Bleu(1).compute_score({0: short_and_long[0]}, {0: hyp}, verbose=0)
    assert with_short[0] == pytest.approx(ref[0], rel=1e-12)


def test_bleu_known_answer_clipping():
    # "the the the the" against "the cat": unigram precision is clipped to 1/4
    corpus, _ = bleu(["the the the the"], [["the cat"]], max_n=1)
    assert corpus[0] == pytest.approx(0.25, rel=1e-8)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cider_d_matches_pycocoevalcap(seed):
    gts, res = random_corpus(seed, min_len=0)
    res[0], res[1] = [""], ["dog"]  # an empty and a one-word hypothesis in every corpus (as docs/metrics.md says)
    ref_score, ref_scores = Cider().compute_score(gts, res)
    score, scores = cider_d(res, gts)
    assert score == pytest.approx(float(ref_score), rel=1e-9)
    assert scores == pytest.approx([float(s) for s in ref_scores], rel=1e-9, abs=1e-12)
    assert score > 0.1


def test_cider_length_penalty_and_clipping_change_the_score():
    refs = {
        0: ["a dog runs on the grass", "a dog on grass"],
        1: ["a cat sits on a table", "cat on the table"],
        2: ["two men with a ball", "men play ball"],
    }
    exact = {0: ["a dog runs on the grass"], 1: ["a cat sits on a table"], 2: ["two men with a ball"]}
    repeated = {0: ["a dog dog dog runs on the grass"], 1: ["a cat sits on a table"], 2: ["two men with a ball"]}
    s_exact, per_exact = cider_d(exact, refs)
    s_rep, per_rep = cider_d(repeated, refs)
    assert per_rep[0] < per_exact[0]  # repeated words are clipped and the length differs
    assert per_rep[1:] == per_exact[1:]
    for hyp in (exact, repeated):
        ref, _ = Cider().compute_score(refs, hyp)
        assert cider_d(hyp, refs)[0] == pytest.approx(float(ref), rel=1e-12)


def test_sequence_and_mapping_inputs_agree():
    gts, res = random_corpus(5, num_images=10, min_len=1)
    keys = list(gts)
    seq_scores = caption_scores([res[k][0] for k in keys], [gts[k] for k in keys])
    map_scores = caption_scores(res, gts)
    assert seq_scores == map_scores
    assert set(map_scores) == {"bleu_1", "bleu_2", "bleu_3", "bleu_4", "cider"}


def test_input_errors_are_clear():
    with pytest.raises(ValueError, match="same image ids"):
        bleu({0: ["a"]}, {1: ["a"]})
    with pytest.raises(ValueError, match="2 hypotheses but 1"):
        cider_d(["a", "b"], [["a"]])
    with pytest.raises(ValueError, match="non-empty list"):
        bleu(["a"], [[]])
    with pytest.raises(ValueError, match="exactly one hypothesis"):
        bleu({0: ["a", "b"]}, {0: ["a"]})
    with pytest.raises(TypeError, match="both be mappings"):
        bleu({0: ["a"]}, [["a"]])


def test_ngram_counts_and_tokenize():
    c = ngram_counts(["a", "b", "a", "b"], 2)
    assert c[("a",)] == 2 and c[("a", "b")] == 2 and c[("b", "a")] == 1 and len(c) == 4
    assert simple_tokenize("A Dog, running... on the GRASS!\n") == "a dog running on the grass"
