"""LM (BLIP decoder) and MLM (ALBEF) losses against float64 references written out by hand."""

import pytest
import torch

from vlkit.losses.lm import IGNORE_INDEX, lm_labels, lm_loss, mlm_loss


def reference_smoothed_ce(logits, targets, eps):
    """Mean over targets != -100 of -sum_v q_v log p_v, q = (1 - eps) one_hot + eps / V, in float64."""
    logits = logits.double()
    V = logits.shape[-1]
    total, count = 0.0, 0
    for row, t in zip(logits.reshape(-1, V), targets.reshape(-1).tolist()):
        if t == IGNORE_INDEX:
            continue
        logp = row - torch.logsumexp(row, 0)
        total += -((1 - eps) * logp[t] + eps / V * logp.sum()).item()
        count += 1
    return total / count


def test_lm_labels_mask_padding_and_prompt():
    ids = torch.tensor([[101, 5, 6, 7, 102, 0], [101, 8, 9, 102, 0, 0]])
    mask = (ids != 0).long()
    labels = lm_labels(ids, mask, prompt_length=2)
    assert labels.tolist() == [[-100, -100, 6, 7, 102, -100], [-100, -100, 9, 102, -100, -100]]
    per_row = lm_labels(ids, mask, prompt_length=torch.tensor([1, 3]))
    assert per_row.tolist() == [[-100, 5, 6, 7, 102, -100], [-100, -100, -100, 102, -100, -100]]
    assert lm_labels(ids).tolist() == ids.tolist()
    with pytest.raises(ValueError, match="prompt_length"):
        lm_labels(ids, mask, prompt_length=torch.tensor([1, 2, 3]))


@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_lm_loss_matches_float64_reference(eps):
    g = torch.Generator().manual_seed(0)
    B, T, V = 3, 7, 11
    logits = torch.randn(B, T, V, generator=g) * 3
    ids = torch.randint(V, (B, T), generator=g)
    mask = torch.ones(B, T, dtype=torch.long)
    mask[1, 5:] = 0
    mask[2, 3:] = 0
    labels = lm_labels(ids, mask, prompt_length=2)
    got = lm_loss(logits, labels, label_smoothing=eps)
    # the shift: logits at t predict labels at t + 1
    want = reference_smoothed_ce(logits[:, :-1], labels[:, 1:], eps)
    assert got.item() == pytest.approx(want, rel=1e-6, abs=1e-6)
    assert got.dtype == torch.float32


def test_lm_loss_default_label_smoothing_is_blips_0_1():
    # one predicted token, p = (1/2, 1/4, 1/8, 1/8), target 0. By hand, with eps = 0.1 and V = 4:
    # -(0.9 * log 1/2 + 0.1 / 4 * (log 1/2 + log 1/4 + 2 log 1/8)) = (0.9 + 0.025 * 9) ln 2 = 1.125 ln 2
    logits = torch.log(torch.tensor([[[0.5, 0.25, 0.125, 0.125], [1.0, 1.0, 1.0, 1.0]]]))  # (1, 2, 4)
    labels = torch.tensor([[IGNORE_INDEX, 0]])
    assert lm_loss(logits, labels).item() == pytest.approx(0.7797905781, abs=1e-6)  # 1.125 ln 2
    assert lm_loss(logits, labels, label_smoothing=0.0).item() == pytest.approx(0.6931471806, abs=1e-6)  # ln 2


def test_lm_loss_shift_and_ignored_positions():
    V = 5
    logits = torch.full((1, 3, V), -20.0)
    logits[0, 0, 2] = 20.0  # position 0 predicts token 2 (the label at position 1)
    logits[0, 1, 4] = 20.0  # position 1 predicts 4, but label 2 is ignored
    labels = torch.tensor([[IGNORE_INDEX, 2, IGNORE_INDEX]])
    assert lm_loss(logits, labels, label_smoothing=0.0).item() < 1e-6
    logits.requires_grad_(True)
    nothing = lm_loss(logits, torch.full((1, 3), IGNORE_INDEX))
    assert nothing.item() == 0.0
    nothing.backward()  # no NaN and a gradient path even when nothing is predicted
    assert torch.isfinite(logits.grad).all()


def test_lm_loss_bf16_logits_computed_in_float32():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 5, 7, generator=g)
    labels = torch.randint(7, (2, 5), generator=g)
    full = lm_loss(logits, labels)
    half = lm_loss(logits.bfloat16(), labels)
    assert half.dtype == torch.float32
    assert half.item() == pytest.approx(full.item(), abs=0.05)


@pytest.mark.parametrize("alpha", [0.0, 0.4])
def test_mlm_loss_with_distillation_matches_float64_reference(alpha):
    g = torch.Generator().manual_seed(2)
    B, T, V = 2, 6, 9
    logits = torch.randn(B, T, V, generator=g) * 2
    teacher = torch.randn(B, T, V, generator=g) * 2
    labels = torch.full((B, T), IGNORE_INDEX)
    labels[0, 1], labels[0, 4], labels[1, 2] = 3, 7, 0
    got = mlm_loss(logits, labels, teacher, alpha)
    ce, kd, n = 0.0, 0.0, 0
    for b in range(B):
        for t in range(T):
            if labels[b, t] == IGNORE_INDEX:
                continue
            logp = torch.log_softmax(logits[b, t].double(), 0)
            q = torch.softmax(teacher[b, t].double(), 0)
            ce += -logp[labels[b, t]].item()
            kd += -(q * logp).sum().item()
            n += 1
    want = (1 - alpha) * ce / n + alpha * kd / n
    assert got.item() == pytest.approx(want, rel=1e-6)


def test_mlm_loss_no_shift_and_empty():
    logits = torch.full((1, 3, 4), -20.0)
    logits[0, 1, 3] = 20.0
    labels = torch.tensor([[IGNORE_INDEX, 3, IGNORE_INDEX]])
    assert mlm_loss(logits, labels).item() < 1e-6
    assert mlm_loss(logits, torch.full((1, 3), IGNORE_INDEX)).item() == 0.0
    with pytest.raises(ValueError, match="teacher_logits"):
        mlm_loss(logits, labels, torch.zeros(1, 3, 5), 0.4)
