"""Statistical tests of the MLM masking rates and the NSP pair building."""

import random

import pytest
import torch

from vlkit.data.pretraining import IS_NEXT, NOT_NEXT, make_nsp_pairs
from vlkit.losses.mlm import IGNORE_INDEX, MLMCollator, mask_tokens

CLS, SEP, PAD, MASK, V = 101, 102, 0, 103, 1000


def _batch(B=400, T=128):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(200, V, (B, T), generator=g)
    ids[:, 0], ids[:, -1] = CLS, SEP
    ids[:, 100:-1] = PAD  # padding in the middle rows' tails
    return ids


def test_mlm_rates():
    ids = _batch()
    g = torch.Generator().manual_seed(0)
    out, labels = mask_tokens(ids, V, MASK, {CLS, SEP, PAD, MASK}, 0.15, g)
    eligible = ~torch.isin(ids, torch.tensor([CLS, SEP, PAD]))
    chosen = labels != IGNORE_INDEX
    n = eligible.sum().item()  # ~ 400 * 99 = 39600
    rate = chosen.sum().item() / n
    assert abs(rate - 0.15) < 4 * (0.15 * 0.85 / n) ** 0.5  # within 4 standard deviations
    # never a special or padding position; labels hold the original ids
    assert not (chosen & ~eligible).any()
    assert torch.equal(labels[chosen], ids[chosen])
    assert torch.equal(out[~chosen], ids[~chosen])
    k = chosen.sum().item()
    masked = (out[chosen] == MASK).float().mean().item()
    kept = (out[chosen] == ids[chosen]).float().mean().item()
    changed = 1 - masked - kept  # random replacements (a random draw equal to the original counts as kept)
    sd = lambda p: 4 * (p * (1 - p) / k) ** 0.5
    assert abs(masked - 0.8) < sd(0.8)
    assert abs(kept - (0.1 + 0.1 / V)) < sd(0.1)
    assert abs(changed - 0.1 * (1 - 1 / V)) < sd(0.1)
    # random replacements are spread over the vocabulary, not a constant
    replaced = out[chosen][(out[chosen] != MASK) & (out[chosen] != ids[chosen])]
    assert replaced.unique().numel() > 100


def test_mlm_deterministic_with_generator_and_errors():
    ids = _batch(8, 32)
    a = mask_tokens(ids, V, MASK, {CLS, SEP, PAD}, generator=torch.Generator().manual_seed(5))
    b = mask_tokens(ids, V, MASK, {CLS, SEP, PAD}, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    with pytest.raises(ValueError):
        mask_tokens(ids, V, MASK, {CLS}, mlm_probability=1.5)


def test_collator_never_targets_padding():
    ids = _batch(50, 128)
    attn = (ids != PAD).long()
    out = MLMCollator(V, MASK, {CLS, SEP}, mlm_probability=0.5, generator=torch.Generator().manual_seed(0))(
        {"input_ids": ids, "attention_mask": attn}
    )
    assert (out["labels"][attn == 0] == IGNORE_INDEX).all()
    assert (out["labels"] != IGNORE_INDEX).any()


def test_nsp_pairs_half_true_half_random():
    docs = [[f"d{d}s{s}" for s in range(30)] for d in range(40)]
    pairs = make_nsp_pairs(docs, random.Random(0))
    assert len(pairs) == 40 * 29
    true = [p for p in pairs if p[2] == IS_NEXT]
    frac = len(true) / len(pairs)
    assert abs(frac - 0.5) < 4 * (0.25 / len(pairs)) ** 0.5
    for a, b, label in pairs:
        da, sa = a[1:].split("s")
        db, sb = b[1:].split("s")
        if label == IS_NEXT:
            assert da == db and int(sb) == int(sa) + 1
        else:
            assert label == NOT_NEXT and da != db
    with pytest.raises(ValueError):
        make_nsp_pairs([["only one doc"]])
