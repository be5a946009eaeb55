"""SigLIP's sigmoid loss: a float64 reference written as plain loops, transformers' SiglipModel loss,
and the tiled form (loss and gradients equal, no B x B tensor saved for backward)."""

import math

import pytest
import torch
import torch.nn.functional as F

from vlkit.losses.sigmoid import sigmoid_loss


def _features(B, D, seed, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    img = F.normalize(torch.randn(B, D, generator=g, dtype=dtype), dim=-1).requires_grad_()
    txt = F.normalize(torch.randn(B, D, generator=g, dtype=dtype), dim=-1).requires_grad_()
    return img, txt


def ref_sigmoid_loss(img, txt, scale: float, bias: float) -> float:
    """-1/B sum_i sum_j log sigmoid(label_ij (scale x_i.y_j + bias)), one pair at a time in Python floats."""
    total = 0.0
    for i in range(len(img)):
        for j in range(len(txt)):
            z = scale * sum(a * b for a, b in zip(img[i].tolist(), txt[j].tolist())) + bias
            label = 1.0 if i == j else -1.0
            total += math.log1p(math.exp(-label * z))  # -log sigmoid(l z)
    return total / len(img)


def _loss_and_grads(chunk_size, B=11, D=6, seed=0):
    img, txt = _features(B, D, seed)
    logit_scale = torch.tensor(math.log(10.0), dtype=torch.float64, requires_grad=True)
    bias = torch.tensor(-3.0, dtype=torch.float64, requires_grad=True)
    loss = sigmoid_loss(img, txt, logit_scale.exp(), bias, chunk_size=chunk_size)["sigmoid_loss"]
    loss.backward()
    return loss.detach(), [t.grad for t in (img, txt, logit_scale, bias)]


def test_matches_reference_loops():
    img, txt = _features(5, 4, seed=3)
    got = sigmoid_loss(img, txt, 7.0, -2.5)["sigmoid_loss"].item()
    assert got == pytest.approx(ref_sigmoid_loss(img.detach(), txt.detach(), 7.0, -2.5), rel=1e-12)


def test_known_answer_zero_logits():
    # scale 0, bias 0: every pair has probability 1/2, so each image pays B * log 2
    img, txt = _features(4, 3, seed=1)
    assert sigmoid_loss(img, txt, 0.0, 0.0)["sigmoid_loss"].item() == pytest.approx(4 * math.log(2))


@pytest.mark.parametrize("chunk_size", [1, 3, 4, 11, 64])
def test_tiled_equals_naive_loss_and_gradients(chunk_size):
    naive_loss, naive_grads = _loss_and_grads(None)
    loss, grads = _loss_and_grads(chunk_size)
    assert torch.allclose(loss, naive_loss, rtol=1e-6, atol=0)
    for name, got, want in zip(("image", "text", "logit_scale", "bias"), grads, naive_grads):
        assert torch.allclose(got, want, rtol=1e-6, atol=1e-12), name


def test_tiled_saves_no_batch_by_batch_tensor():
    B, D, chunk = 256, 8, 32
    img, txt = _features(B, D, seed=0, dtype=torch.float32)
    saved: list[int] = []

    def pack(t):
        saved.append(t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = sigmoid_loss(img, txt, torch.tensor(10.0), torch.tensor(-10.0), chunk_size=chunk)["sigmoid_loss"]
    assert max(saved) <= B * D  # the features, nothing of the B x B logits
    loss.backward()
    assert img.grad is not None and torch.isfinite(img.grad).all()

    naive: list[int] = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: naive.append(t.numel()) or t, lambda t: t):
        sigmoid_loss(img, txt, torch.tensor(10.0), torch.tensor(-10.0))
    assert max(naive) >= B * B  # the naive form keeps the logits


def test_bf16_features_give_float32_loss_close_to_float32():
    img, txt = _features(16, 8, seed=2, dtype=torch.float32)
    want = sigmoid_loss(img, txt, 10.0, -10.0)["sigmoid_loss"]
    got = sigmoid_loss(img.bfloat16(), txt.bfloat16(), 10.0, -10.0, chunk_size=5)["sigmoid_loss"]
    assert got.dtype == torch.float32
    assert got.item() == pytest.approx(want.item(), rel=2e-2)


def test_tiles_are_float32_under_bf16_autocast():
    img, txt = _features(16, 8, seed=2, dtype=torch.float32)
    img, txt = img.detach().bfloat16().float().requires_grad_(), txt.detach().bfloat16().float().requires_grad_()
    want = sigmoid_loss(img, txt, 10.0, -10.0)["sigmoid_loss"]
    want.backward()
    want_grad = img.grad.clone()
    img.grad = None
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = sigmoid_loss(img, txt, 10.0, -10.0, chunk_size=5)["sigmoid_loss"]
    got.backward()
    assert got.dtype == torch.float32 and got.item() == pytest.approx(want.item(), rel=1e-5)
    assert torch.allclose(img.grad, want_grad, rtol=1e-4, atol=1e-6)


def test_rejects_bad_inputs():
    img, txt = _features(4, 3, seed=0)
    with pytest.raises(ValueError, match="same shape"):
        sigmoid_loss(img, txt[:3], 1.0, 0.0)
    with pytest.raises(ValueError, match="chunk_size"):
        sigmoid_loss(img, txt, 1.0, 0.0, chunk_size=0)


def test_equals_transformers_siglip_loss():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    tower = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)
    config = transformers.SiglipConfig(
        text_config=dict(tower, vocab_size=99, max_position_embeddings=16),
        vision_config=dict(tower, image_size=16, patch_size=8),
    )
    model = transformers.SiglipModel(config).eval()
    with torch.no_grad():
        model.logit_scale.fill_(math.log(10.0))
        model.logit_bias.fill_(-2.0)
        out = model(input_ids=torch.randint(0, 99, (6, 16)), pixel_values=torch.randn(6, 3, 16, 16), return_loss=True)
    ours = sigmoid_loss(out.image_embeds, out.text_embeds, model.logit_scale.exp(), model.logit_bias)["sigmoid_loss"]
    tiled = sigmoid_loss(out.image_embeds, out.text_embeds, model.logit_scale.exp(), model.logit_bias, chunk_size=4)
    assert ours.item() == pytest.approx(out.loss.item(), rel=1e-6)
    assert tiled["sigmoid_loss"].item() == pytest.approx(out.loss.item(), rel=1e-6)
