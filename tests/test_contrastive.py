"""InfoNCE and CLIP's symmetric contrastive loss against a float64 reference written as plain loops."""

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from vlkit.losses.contrastive import clip_logits, clip_loss, gather_features, info_nce


def ref_info_nce(query, positive, negatives, temperature) -> float:
    """Mean over rows of -log softmax at the positive, in Python float64, one row at a time.
    negatives[i] lists row i's negative vectors."""
    total = 0.0
    for i in range(len(query)):
        q = query[i].double().tolist()
        dot = lambda k, q=q: sum(a * b for a, b in zip(q, k.double().tolist())) / temperature
        logits = [dot(positive[i])] + [dot(k) for k in negatives[i]]
        top = max(logits)
        total += -(logits[0] - top) + math.log(sum(math.exp(x - top) for x in logits))
    return total / len(query)


def _unit(*shape, seed):
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), dim=-1)


def test_info_nce_in_batch_negatives_matches_reference():
    q, p = _unit(6, 8, seed=0), _unit(6, 8, seed=1)
    others = [[p[j] for j in range(6) if j != i] for i in range(6)]
    assert info_nce(q, p, temperature=0.1).item() == pytest.approx(ref_info_nce(q, p, others, 0.1), rel=1e-6)


def test_info_nce_shared_and_per_query_negatives_match_reference():
    q, p = _unit(5, 8, seed=0), _unit(5, 8, seed=1)
    shared, per_query = _unit(7, 8, seed=2), _unit(5, 4, 8, seed=3)
    assert info_nce(q, p, shared, 0.07).item() == pytest.approx(ref_info_nce(q, p, [shared] * 5, 0.07), rel=1e-6)
    assert info_nce(q, p, per_query, 0.5).item() == pytest.approx(ref_info_nce(q, p, per_query, 0.5), rel=1e-6)


def test_info_nce_known_answers():
    # every similarity equal: the positive is one of 1 + K equally likely keys
    q = torch.tensor([[1.0, 0.0]]).repeat(3, 1)
    keys = torch.tensor([[0.0, 1.0]])
    assert info_nce(q, keys.repeat(3, 1), keys.repeat(3, 9, 1)).item() == pytest.approx(math.log(10))
    # positive aligned, negatives opposite: loss = log(1 + K exp(-2 / t))
    t = 0.5
    got = info_nce(q, q, -q[:, None].repeat(1, 4, 1), temperature=t).item()
    assert got == pytest.approx(math.log(1 + 4 * math.exp(-2 / t)), rel=1e-5)  # float32


@settings(max_examples=25, deadline=None)
@given(B=st.integers(2, 6), D=st.integers(1, 5), t=st.floats(0.05, 2.0), seed=st.integers(0, 1000))
def test_in_batch_equals_explicit_per_query_negatives(B, D, t, seed):
    q, p = _unit(B, D, seed=seed), _unit(B, D, seed=seed + 1)
    negatives = torch.stack([torch.cat([p[:i], p[i + 1 :]]) for i in range(B)])  # (B, B - 1, D)
    assert torch.allclose(info_nce(q, p, temperature=t), info_nce(q, p, negatives, t), atol=1e-5)


def test_clip_loss_is_symmetric_info_nce_and_matches_reference():
    img, txt = _unit(6, 16, seed=4), _unit(6, 16, seed=5)
    scale = torch.tensor(1 / 0.07)
    loss = clip_loss(img, txt, scale)["contrastive_loss"]
    others = lambda x: [[x[j] for j in range(6) if j != i] for i in range(6)]
    expected = (ref_info_nce(img, txt, others(txt), 0.07) + ref_info_nce(txt, img, others(img), 0.07)) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    both_ways = (info_nce(img, txt, temperature=1 / scale) + info_nce(txt, img, temperature=1 / scale)) / 2
    assert torch.allclose(loss, both_ways, atol=1e-6)


def test_clip_loss_gradients_match_float64_reference():
    img = _unit(4, 3, seed=6).double().requires_grad_()
    txt = _unit(4, 3, seed=7).double().requires_grad_()
    log_scale = torch.tensor(math.log(1 / 0.07), dtype=torch.float64, requires_grad=True)
    fn = lambda i, t, s: clip_loss(i, t, s.exp())["contrastive_loss"]
    assert torch.autograd.gradcheck(fn, (img, txt, log_scale))
    # float32 gradients agree with the float64 ones
    loss64 = fn(img, txt, log_scale)
    g64 = torch.autograd.grad(loss64, (img, txt, log_scale))
    i32, t32 = img.detach().float().requires_grad_(), txt.detach().float().requires_grad_()
    s32 = log_scale.detach().float().requires_grad_()
    g32 = torch.autograd.grad(fn(i32, t32, s32), (i32, t32, s32))
    for a, b in zip(g32, g64):
        assert torch.allclose(a.double(), b, atol=1e-5)


def test_clip_logits_and_single_process_gather():
    img, txt = _unit(3, 4, seed=8), _unit(2, 4, seed=9)
    per_image, per_text = clip_logits(img, txt, 10.0)
    assert per_image.shape == (3, 2) and torch.equal(per_text, per_image.t())
    assert torch.allclose(per_image, 10.0 * img @ txt.t())
    assert gather_features(img) is img  # no process group: identity


def test_shape_errors_name_the_inputs():
    with pytest.raises(ValueError, match="same shape"):
        clip_loss(torch.randn(3, 4), torch.randn(2, 4), 1.0)
    with pytest.raises(ValueError, match="negatives"):
        info_nce(torch.randn(3, 4), torch.randn(3, 4), torch.randn(2, 5, 4))
    with pytest.raises(ValueError, match="query"):
        info_nce(torch.randn(4), torch.randn(4))
