"""ITM hard-negative sampling and label layout: known answers and a statistical test."""

import math

import pytest
import torch

from vlkit.losses.itm import (
    MATCHED,
    NOT_MATCHED,
    hard_negatives,
    itm_labels,
    itm_loss,
    itm_pairs,
    pad_to_length,
    positive_mask,
    sample_itm_negatives,
    sample_negatives,
)


def test_positive_mask_pairs_offset_and_ids():
    m = positive_mask(2, 6, offset=2)
    assert m.nonzero().tolist() == [[0, 2], [1, 3]]
    ids = torch.tensor([4, 9])
    all_ids = torch.tensor([9, 1, 4, 9, 4, 0])
    m = positive_mask(2, 6, offset=2, ids=ids, column_ids=all_ids)
    assert m.tolist() == [[False, False, True, False, True, False], [True, False, False, True, False, False]]
    with pytest.raises(ValueError, match="column_ids"):
        positive_mask(2, 6, ids=ids)
    with pytest.raises(ValueError, match="do not fit"):
        positive_mask(3, 4, offset=2)


def test_sampling_never_picks_a_positive():
    g = torch.Generator().manual_seed(0)
    B = 8
    ids = torch.tensor([0, 1, 0, 2, 3, 1, 4, 0])  # duplicated captions: 0 three times, 1 twice
    # similarities that strongly favour the positives: a naive sampler would pick them
    sim = torch.randn(B, B, generator=g)
    sim = sim + 30.0 * (ids[:, None] == ids[None, :]).float()
    for _ in range(200):
        t_idx, i_idx = sample_itm_negatives(sim, sim.t().contiguous(), 0, ids, ids, generator=g)
        assert (ids[t_idx] != ids).all() and (ids[i_idx] != ids).all()
        assert (t_idx != torch.arange(B)).all()


def test_sampling_frequencies_follow_the_softmax():
    """Pearson chi-square goodness of fit of 20000 draws from one row against the masked softmax."""
    g = torch.Generator().manual_seed(1)
    logits = torch.tensor([[2.0, 0.5, -1.0, 1.0, 0.0, 3.0]])
    positives = torch.tensor([[False, False, False, False, False, True]])  # column 5 is the pair itself
    n = 20000
    draws = sample_negatives(logits.expand(n, -1), positives.expand(n, -1), generator=g)
    counts = torch.bincount(draws, minlength=6).double()
    assert counts[5] == 0
    p = torch.softmax(logits[0, :5].double(), 0)  # softmax over the negatives = softmax renormalised
    expected = n * p
    chi2 = (((counts[:5] - expected) ** 2) / expected).sum().item()
    # 4 degrees of freedom: P(chi2 > 18.47) = 0.001
    assert chi2 < 18.47, (counts.tolist(), expected.tolist())
    # and the sampler is not uniform: the most likely negative is drawn most often
    assert counts.argmax().item() == 0


def test_sampling_is_exact_when_the_positive_dominates():
    # softmax of the full row underflows to 0 for every negative in float32; masking the logits keeps it exact
    logits = torch.tensor([[200.0, 0.0, 1.0]])
    positives = torch.tensor([[True, False, False]])
    g = torch.Generator().manual_seed(2)
    draws = sample_negatives(logits.expand(4000, -1), positives.expand(4000, -1), generator=g)
    frac = (draws == 2).double().mean().item()
    assert frac == pytest.approx(math.e / (1 + math.e), abs=0.03)


def test_no_negative_raises_a_clear_error():
    with pytest.raises(ValueError, match="no negative"):
        sample_itm_negatives(torch.zeros(2, 2), torch.zeros(2, 2), 0, torch.tensor([3, 3]), torch.tensor([3, 3]))


def test_labels_layout_and_loss():
    labels = itm_labels(2)
    assert labels.tolist() == [MATCHED, MATCHED, NOT_MATCHED, NOT_MATCHED, NOT_MATCHED, NOT_MATCHED]
    assert MATCHED == 1 and NOT_MATCHED == 0
    logits = torch.tensor([[0.0, 9.0]] * 2 + [[9.0, 0.0]] * 4)
    assert itm_loss(logits).item() < 1e-3
    assert itm_loss(logits.flip(1)).item() > 8
    with pytest.raises(ValueError, match="3B rows"):
        itm_loss(torch.zeros(4, 2))


def test_hard_negatives_and_pairs_single_process():
    B, S, C, T, D = 4, 3, 2, 5, 6
    g = torch.Generator().manual_seed(3)
    img_f = torch.nn.functional.normalize(torch.randn(B, D, generator=g), dim=-1)
    txt_f = torch.nn.functional.normalize(torch.randn(B, D, generator=g), dim=-1)
    # rows carry their own index so the picks can be read off
    image_side = torch.arange(B, dtype=torch.float)[:, None, None].expand(B, S, C).clone().requires_grad_()
    hidden = torch.arange(B, dtype=torch.float)[:, None, None].expand(B, T, C).clone()
    mask = torch.ones(B, T, dtype=torch.long)
    ids = torch.tensor([0, 1, 1, 2])
    neg_img, neg_txt = hard_negatives(
        img_f, txt_f, 5.0, image_side, {"hidden": hidden, "attention_mask": mask}, ids=ids, generator=g
    )
    img_pick = neg_img[:, 0, 0].long()
    txt_pick = neg_txt["hidden"][:, 0, 0].long()
    assert (ids[img_pick] != ids).all() and (ids[txt_pick] != ids).all()
    images, texts = itm_pairs(image_side, {"hidden": hidden, "attention_mask": mask}, neg_img, neg_txt)
    assert images.shape == (3 * B, S, C) and texts["hidden"].shape == (3 * B, T, C)
    ar = torch.arange(B)
    # rows 0..B-1: pairs; B..2B-1: image i with a sampled text; 2B..3B-1: sampled image with text i
    assert images[:B, 0, 0].long().tolist() == ar.tolist() and texts["hidden"][:B, 0, 0].long().tolist() == ar.tolist()
    assert images[B : 2 * B, 0, 0].long().tolist() == ar.tolist()
    assert texts["hidden"][B : 2 * B, 0, 0].long().tolist() == txt_pick.tolist()
    assert images[2 * B :, 0, 0].long().tolist() == img_pick.tolist()
    assert texts["hidden"][2 * B :, 0, 0].long().tolist() == ar.tolist()
    images.sum().backward()  # gradients reach the sampled images
    assert image_side.grad[:, 0, 0].tolist() == (2 + torch.bincount(img_pick, minlength=B)).float().tolist()


def test_pad_to_length():
    x = torch.ones(2, 3, dtype=torch.long)
    assert pad_to_length(x, 5, 7).tolist() == [[1, 1, 1, 7, 7]] * 2
    with pytest.raises(ValueError):
        pad_to_length(x, 2)


def test_hard_negatives_local_only_never_pick_the_pair_itself():
    from vlkit.losses.itm import hard_negatives

    torch.manual_seed(0)
    B, D = 6, 8
    img = torch.nn.functional.normalize(torch.randn(B, D), dim=-1)
    txt = torch.nn.functional.normalize(torch.randn(B, D), dim=-1)
    image_side = torch.arange(B, dtype=torch.float)[:, None, None].expand(B, 2, 3)  # row i holds value i
    text_side = {"input_ids": torch.arange(B)[:, None].expand(B, 4)}
    for seed in range(20):
        g = torch.Generator().manual_seed(seed)
        neg_img, neg_txt = hard_negatives(img, txt, 10.0, image_side, text_side, generator=g, all_ranks=False)
        assert neg_img.shape == (B, 2, 3) and neg_txt["input_ids"].shape == (B, 4)
        own = torch.arange(B)
        assert (neg_img[:, 0, 0].long() != own).all() and (neg_txt["input_ids"][:, 0] != own).all()
