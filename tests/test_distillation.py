"""Momentum distillation: soft targets and ALBEF's ITC loss against the momentum features and queues."""

import pytest
import torch
import torch.nn.functional as F

from vlkit.losses.contrastive import clip_loss
from vlkit.losses.distillation import (
    contrastive_targets,
    distillation_targets,
    itc_distillation_loss,
    soft_cross_entropy,
)


def unit(*shape, seed):
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), dim=-1)


def test_soft_cross_entropy_and_targets():
    logits = torch.tensor([[1.0, 2.0, 0.5]])
    targets = torch.tensor([[0.2, 0.5, 0.3]])
    want = -(targets.double() * torch.log_softmax(logits.double(), -1)).sum().item()
    assert soft_cross_entropy(logits, targets).item() == pytest.approx(want, rel=1e-6)
    hard = torch.eye(3)
    teacher = torch.randn(3, 3)
    mixed = distillation_targets(teacher, hard, 0.4)
    assert torch.allclose(mixed, 0.4 * teacher.softmax(-1) + 0.6 * hard)
    assert torch.allclose(mixed.sum(-1), torch.ones(3))
    with pytest.raises(ValueError, match="alpha"):
        distillation_targets(teacher, hard, 1.5)


def test_contrastive_targets_with_ids():
    # batch ids [7, 3, 7], queue ids [3, -100]: row 0 is positive with columns 0, 2 (batch) and none in the queue
    t = contrastive_targets(3, 5, torch.tensor([7, 3, 7]), torch.tensor([7, 3, 7, 3, -100]))
    assert t.tolist() == [[0.5, 0, 0.5, 0, 0], [0, 0.5, 0, 0.5, 0], [0.5, 0, 0.5, 0, 0]]
    assert contrastive_targets(2, 4).tolist() == [[1, 0, 0, 0], [0, 1, 0, 0]]


def reference_itc(img, txt, img_m, txt_m, scale, img_q, txt_q, alpha):
    """ALBEF's formulas in float64."""
    img, txt, img_m, txt_m, img_q, txt_q = (x.double() for x in (img, txt, img_m, txt_m, img_q, txt_q))
    text_all = torch.cat([txt_m, txt_q])
    image_all = torch.cat([img_m, img_q])
    B = img.shape[0]
    hard = torch.zeros(B, text_all.shape[0], dtype=torch.float64)
    hard[:, :B] = torch.eye(B, dtype=torch.float64)
    t_i2t = alpha * torch.softmax(scale * img_m @ text_all.t(), 1) + (1 - alpha) * hard
    t_t2i = alpha * torch.softmax(scale * txt_m @ image_all.t(), 1) + (1 - alpha) * hard
    l_i2t = -(torch.log_softmax(scale * img @ text_all.t(), 1) * t_i2t).sum(1).mean()
    l_t2i = -(torch.log_softmax(scale * txt @ image_all.t(), 1) * t_t2i).sum(1).mean()
    return ((l_i2t + l_t2i) / 2).item()


@pytest.mark.parametrize("alpha", [0.0, 0.4, 1.0])
def test_itc_distillation_matches_float64_reference(alpha):
    B, K, D = 4, 6, 8
    img, txt, img_m, txt_m = (unit(B, D, seed=s) for s in range(4))
    img_q, txt_q = unit(K, D, seed=10), unit(K, D, seed=11)
    got = itc_distillation_loss(img, txt, img_m, txt_m, 1 / 0.07, img_q, txt_q, alpha)["itc_loss"]
    want = reference_itc(img, txt, img_m, txt_m, 1 / 0.07, img_q, txt_q, alpha)
    assert got.item() == pytest.approx(want, rel=1e-5)


def test_itc_without_queue_or_distillation_is_clip_loss():
    B, D = 5, 8
    img, txt = unit(B, D, seed=0).requires_grad_(), unit(B, D, seed=1).requires_grad_()
    scale = torch.tensor(10.0, requires_grad=True)
    got = itc_distillation_loss(img, txt, img.detach(), txt.detach(), scale, alpha=0.0)["itc_loss"]
    want = clip_loss(img, txt, scale, gather=False)["contrastive_loss"]
    assert got.item() == pytest.approx(want.item(), rel=1e-6)
    got.backward()
    assert img.grad is not None and txt.grad is not None and scale.grad is not None


def test_queue_entries_act_as_negatives():
    B, D = 2, 4
    img, txt = unit(B, D, seed=0), unit(B, D, seed=1)
    no_queue = itc_distillation_loss(img, txt, img, txt, 5.0, alpha=0.0)["itc_loss"]
    # a queue holding copies of the batch's own features is hard negatives: the loss goes up
    queue = itc_distillation_loss(img, txt, img, txt, 5.0, img.clone(), txt.clone(), alpha=0.0)["itc_loss"]
    assert queue.item() > no_queue.item() + 0.1


def test_ids_spread_the_hard_target_over_every_positive():
    B, K, D = 3, 4, 8
    img, txt, img_m, txt_m = (unit(B, D, seed=s) for s in range(4))
    img_q, txt_q = unit(K, D, seed=10), unit(K, D, seed=11)
    ids, queue_ids = torch.tensor([5, 6, 5]), torch.tensor([6, 9, 5, -100])
    got = itc_distillation_loss(img, txt, img_m, txt_m, 8.0, img_q, txt_q, alpha=0.0, ids=ids, queue_ids=queue_ids)[
        "itc_loss"
    ]
    all_ids = torch.cat([ids, queue_ids])
    pos = (ids[:, None] == all_ids[None, :]).double()
    target = pos / pos.sum(1, keepdim=True)  # row 0: columns 0, 2 and queue slot 2
    assert target[0].tolist() == pytest.approx([1 / 3, 0, 1 / 3, 0, 0, 1 / 3, 0])
    text_all, image_all = torch.cat([txt_m, txt_q]).double(), torch.cat([img_m, img_q]).double()
    l_i2t = -(torch.log_softmax(8.0 * img.double() @ text_all.t(), 1) * target).sum(1).mean()
    l_t2i = -(torch.log_softmax(8.0 * txt.double() @ image_all.t(), 1) * target).sum(1).mean()
    assert got.item() == pytest.approx(((l_i2t + l_t2i) / 2).item(), rel=1e-5)


def test_shape_errors():
    a = unit(2, 4, seed=0)
    with pytest.raises(ValueError, match="must all be"):
        itc_distillation_loss(a, unit(3, 4, seed=1), a, a, 1.0)
    with pytest.raises(ValueError, match="queues"):
        itc_distillation_loss(a, a, a, a, 1.0, unit(3, 4, seed=1), unit(2, 4, seed=2))
