"""Retrieval: Recall@K known answers, ground truth with shared captions, the ranking hook."""

import pytest
import torch

from vlkit.eval import positives_from_pairs, rank, recall_at_k, retrieval_metrics, unique_captions


def brute_force_recall(scores, positives, k):
    """Recall@k the slow, obvious way (ties broken by index)."""
    hits = 0
    for row, pos in zip(scores.tolist(), positives.tolist()):
        order = sorted(range(len(row)), key=lambda j: (-row[j], j))[:k]
        hits += any(pos[j] for j in order)
    return 100.0 * hits / len(scores)


def test_known_answer_three_by_three():
    scores = torch.tensor(
        [
            [0.9, 0.1, 0.0],  # image 0: its text first
            [0.8, 0.7, 0.1],  # image 1: its text second
            [0.1, 0.8, 0.2],
        ]
    )  # image 2: its text second
    pos = torch.eye(3, dtype=torch.bool)
    r = recall_at_k(scores, pos, ks=(1, 2, 3))
    assert r["i2t_R@1"] == pytest.approx(100 / 3) and r["i2t_R@2"] == pytest.approx(100.0)
    # text 0: images by score 0.9, 0.8, 0.1 -> image 0 first; text 1: 0.8 (img 2), 0.7 (img 1) -> second;
    # text 2: 0.2 (img 2) first
    assert r["t2i_R@1"] == pytest.approx(200 / 3) and r["t2i_R@2"] == pytest.approx(100.0)


def test_matches_brute_force_with_many_captions_per_image():
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(20, 60, generator=g).round(decimals=1)  # ties on purpose
    pos = positives_from_pairs(torch.arange(60) // 3, 20)  # 3 captions per image
    r = recall_at_k(scores, pos, ks=(1, 5, 10))
    for k in (1, 5, 10):
        assert r[f"i2t_R@{k}"] == pytest.approx(brute_force_recall(scores, pos, k))
        assert r[f"t2i_R@{k}"] == pytest.approx(brute_force_recall(scores.t(), pos.t(), k))


def test_unique_captions_ground_truth():
    texts, pos = unique_captions(["a red circle", "a blue star", "a red circle", "a cross"])
    assert texts == ["a red circle", "a blue star", "a cross"]
    assert pos.tolist() == [[1, 0, 0], [0, 1, 0], [1, 0, 0], [0, 0, 1]]


def test_perfect_features_and_rank_candidates():
    feats = torch.nn.functional.normalize(torch.randn(8, 16, generator=torch.Generator().manual_seed(1)), dim=-1)
    r = retrieval_metrics(feats * 3, feats, positives_from_pairs(range(8), 8))  # scale does not matter
    assert all(v == 100.0 for v in r.values())
    result = rank(feats, feats, k=3)
    assert result.similarity.shape == (8, 8) and result.i2t_topk.shape == (8, 3)
    assert result.i2t_topk[:, 0].tolist() == list(range(8)) and result.t2i_topk[:, 0].tolist() == list(range(8))
    assert rank(feats[:2], feats, k=5).t2i_topk.shape == (8, 2)  # k capped at the candidates

    # a re-ranker hands back its own scores (here: reversed order inside the top-3, -inf elsewhere)
    scores = torch.full((8, 8), float("-inf"))
    scores.scatter_(1, result.i2t_topk, -torch.arange(3.0).expand(8, 3).flip(1))
    assert recall_at_k(scores, torch.eye(8, dtype=torch.bool), ks=(1, 3))["i2t_R@1"] == 0.0


def test_errors():
    with pytest.raises(ValueError, match="same shape|differ in shape"):
        recall_at_k(torch.zeros(2, 3), torch.zeros(2, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="at least one positive"):
        recall_at_k(torch.zeros(2, 2), torch.tensor([[True, False], [True, False]]))
