"""The LM loss with the head run only at scored positions (``scored_lm_loss``, ``VLM.text_hidden_states``)
equals ``lm_loss`` of the full logits: same value and gradients, image tokens given expanded or once."""

import pytest
import torch

import vlkit
from vlkit.losses.lm import lm_loss, scored_lm_loss


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_scored_lm_loss_equals_the_full_logits_loss(smoothing):
    g = torch.Generator().manual_seed(0)
    head = torch.nn.Linear(16, 50)
    hidden = torch.randn(3, 9, 16, generator=g, requires_grad=True)
    labels = torch.randint(0, 50, (3, 9), generator=g)
    labels[:, :5] = -100  # a prompt
    labels[1, 7] = -100  # and a hole
    full = lm_loss(head(hidden), labels, label_smoothing=smoothing)
    grads = torch.autograd.grad(full, [hidden, head.weight])
    scored = scored_lm_loss(hidden, labels, head, label_smoothing=smoothing)
    assert torch.allclose(scored, full, atol=1e-6)
    for a, b in zip(torch.autograd.grad(scored, [hidden, head.weight]), grads):
        assert torch.allclose(a, b, atol=1e-6)
    none = scored_lm_loss(hidden, torch.full_like(labels, -100), head)
    assert none.item() == 0.0 and none.requires_grad


def test_scored_lm_loss_checks_shapes():
    with pytest.raises(ValueError, match=r"hidden must be \(B, T, H\)"):
        scored_lm_loss(torch.zeros(2, 5, 4), torch.zeros(2, 4, dtype=torch.long), torch.nn.Linear(4, 3))


@pytest.mark.parametrize("expanded", [True, False])
def test_vlm_lm_loss_equals_the_forward_loss(expanded):
    torch.manual_seed(0)
    model = vlkit.create_model("vlm-shapes-tiny").train()
    c = model.config
    n = c.num_image_tokens if expanded else 1
    g = torch.Generator().manual_seed(1)
    ids = torch.cat(
        [torch.full((2, 1), 2), torch.full((2, n), c.image_token_id), torch.randint(5, 100, (2, 7), generator=g)], 1
    )
    labels = ids.masked_fill(torch.arange(ids.shape[1]) < ids.shape[1] - 4, -100)  # the last 4 tokens scored
    pixels = torch.randn(2, 3, 32, 32, generator=g)
    mask = torch.ones_like(ids)
    mask[1, 0] = 0  # a padded position
    full = lm_loss(model(pixels, ids, mask), labels, label_smoothing=0.0)
    ref = torch.autograd.grad(full, [model.projector.fc1.weight, model.llm.tokens.weight])
    loss = scored_lm_loss(model.text_hidden_states(pixels, ids, mask), labels, model.llm.logits)
    assert torch.allclose(loss, full, atol=1e-6)
    for a, b in zip(torch.autograd.grad(loss, [model.projector.fc1.weight, model.llm.tokens.weight]), ref):
        assert torch.allclose(a, b, atol=1e-6)
