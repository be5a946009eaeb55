"""CLIP's loss in tiles of the logits (clip_loss(..., chunk_size=n)): the loss and the gradients of
the features and of the scale equal the naive loss's, one process or two (gloo), and no B x B
tensor is ever made or saved for backward."""

import math
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from vlkit.losses.contrastive import clip_loss


def _pairs(B, D, *, seed, dtype=torch.float64, norm=True):
    g = torch.Generator().manual_seed(seed)
    img, txt = torch.randn(B, D, generator=g, dtype=dtype), torch.randn(B, D, generator=g, dtype=dtype)
    if norm:
        img, txt = F.normalize(img, dim=-1), F.normalize(txt, dim=-1)
    return img.requires_grad_(), txt.requires_grad_()


def _loss_and_grads(img, txt, log_scale, chunk_size):
    loss = clip_loss(img, txt, log_scale.exp(), chunk_size=chunk_size)["contrastive_loss"]
    return (loss, *torch.autograd.grad(loss, (img, txt, log_scale)))


def _rel(a, b):
    """Largest difference relative to the largest reference entry (at B = 1 the naive gradients are
    exactly 0 and the tiled ones round-off: the floor keeps that a pass)."""
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-9)).item()


@pytest.mark.parametrize(
    "B, D, chunk",
    [(1, 3, 1), (7, 3, 2), (16, 5, 4), (10, 4, 3), (12, 8, 12), (9, 6, 50), (33, 16, 5), (64, 32, 16)],
)
def test_equals_the_naive_loss_and_gradients_in_float64(B, D, chunk):
    img, txt = _pairs(B, D, seed=B * 100 + D)
    log_scale = torch.tensor(math.log(1 / 0.07), dtype=torch.float64, requires_grad=True)
    naive = _loss_and_grads(img, txt, log_scale, None)
    tiled = _loss_and_grads(img, txt, log_scale, chunk)
    for name, a, b in zip(["loss", "image grad", "text grad", "scale grad"], tiled, naive):
        assert _rel(a, b) <= 1e-6, name


def test_float_scale_unnormalised_features_and_large_logits():
    """A plain float scale; features of norm ~10 at scale 100 give logits of thousands (the online
    log-sum-exp must not overflow where the naive loss does not)."""
    img, txt = _pairs(20, 6, seed=3, norm=False)
    img, txt = (img * 3).detach().requires_grad_(), (txt * 3).detach().requires_grad_()
    out = {}
    for chunk in (None, 6):
        loss = clip_loss(img, txt, 100.0, chunk_size=chunk)["contrastive_loss"]
        out[chunk] = (loss, *torch.autograd.grad(loss, (img, txt)))
    assert torch.isfinite(out[6][0]) and out[None][0] > 10
    for a, b in zip(out[6], out[None]):
        assert _rel(a, b) <= 1e-6


def test_float32_is_close_to_naive():
    img, txt = _pairs(96, 32, seed=5, dtype=torch.float32)
    log_scale = torch.tensor(math.log(1 / 0.07), requires_grad=True)
    for a, b in zip(_loss_and_grads(img, txt, log_scale, 20), _loss_and_grads(img, txt, log_scale, None)):
        assert _rel(a, b) <= 2e-5


def test_gradcheck_and_inputs_without_gradients():
    img, txt = _pairs(5, 3, seed=7)
    log_scale = torch.tensor(1.5, dtype=torch.float64, requires_grad=True)
    fn = lambda i, t, s: clip_loss(i, t, s.exp(), chunk_size=2)["contrastive_loss"]
    assert torch.autograd.gradcheck(fn, (img, txt, log_scale))
    # only the scale learns (frozen towers), or only the images (frozen text tower, fixed scale)
    naive = clip_loss(img.detach(), txt.detach(), log_scale.exp())["contrastive_loss"]
    (grad,) = torch.autograd.grad(naive, log_scale)
    tiled = clip_loss(img.detach(), txt.detach(), log_scale.exp(), chunk_size=2)["contrastive_loss"]
    assert _rel(torch.autograd.grad(tiled, log_scale)[0], grad) <= 1e-6
    naive = torch.autograd.grad(clip_loss(img, txt.detach(), 5.0)["contrastive_loss"], img)[0]
    tiled = torch.autograd.grad(clip_loss(img, txt.detach(), 5.0, chunk_size=3)["contrastive_loss"], img)[0]
    assert _rel(tiled, naive) <= 1e-6


@pytest.mark.parametrize("bad", [0, -4, 2.5, "8", True])
def test_bad_chunk_size_is_a_value_error_naming_it(bad):
    img, txt = _pairs(4, 3, seed=0)
    with pytest.raises(ValueError, match="chunk_size"):
        clip_loss(img, txt, 1.0, chunk_size=bad)


class _LargestTensor(TorchDispatchMode):
    """Records the largest tensor any operation makes (forward and backward)."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


def _memory_profile(B, D, chunk):
    """(numel of the largest tensor saved for backward, numel of the largest tensor made) for one
    forward and backward pass."""
    img, txt = _pairs(B, D, seed=1, dtype=torch.float32)
    log_scale = torch.tensor(2.0, requires_grad=True)
    saved = []

    def pack(t):
        saved.append(t.numel())
        return t

    with _LargestTensor() as made:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss = clip_loss(img, txt, log_scale.exp(), chunk_size=chunk)["contrastive_loss"]
        loss.backward()
    return max(saved), made.largest


def test_no_b_by_b_tensor_is_saved_or_made():
    B, D, chunk = 256, 8, 48  # 48 does not divide 256
    saved, made = _memory_profile(B, D, None)
    assert saved >= B * B and made >= B * B  # the naive loss keeps the logits: the probe sees them
    saved, made = _memory_profile(B, D, chunk)
    assert saved <= B * D  # the features (and per-row log-sum-exps): nothing quadratic
    assert made <= max(B * D, chunk * chunk)  # features' gradients, or one tile


# two processes (gloo): the tiles run over the gathered features, equal to one process on the global batch
WORLD, LOCAL_B, DIM = 2, 5, 6


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _global_batch():
    torch.manual_seed(0)
    towers = torch.nn.ModuleDict({"image": torch.nn.Linear(8, DIM), "text": torch.nn.Linear(8, DIM)}).double()
    towers.logit_scale = torch.nn.Parameter(torch.tensor(2.0, dtype=torch.float64))
    return (
        towers,
        torch.randn(WORLD * LOCAL_B, 8, dtype=torch.float64),
        torch.randn(WORLD * LOCAL_B, 8, dtype=torch.float64),
    )


def _towers_loss(towers, images, texts, chunk_size):
    img, txt = F.normalize(towers["image"](images), dim=-1), F.normalize(towers["text"](texts), dim=-1)
    return clip_loss(img, txt, towers.logit_scale.exp(), chunk_size=chunk_size)["contrastive_loss"]


def _worker(rank: int, port: int, out_path: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        towers, images, texts = _global_batch()
        rows = slice(rank * LOCAL_B, (rank + 1) * LOCAL_B)
        loss = _towers_loss(towers, images[rows], texts[rows], chunk_size=3)  # 3 divides neither 5 nor 10
        loss.backward()
        for p in towers.parameters():  # what DDP does
            dist.all_reduce(p.grad)
            p.grad /= WORLD
        total = loss.detach().clone()
        dist.all_reduce(total)
        if rank == 0:
            torch.save({"loss": total / WORLD, "grads": {n: p.grad for n, p in towers.named_parameters()}}, out_path)
    finally:
        dist.destroy_process_group()


def test_two_ranks_tiled_equal_one_process_on_the_global_batch(tmp_path):
    out = str(tmp_path / "rank0.pt")
    mp.spawn(_worker, args=(_free_port(), out), nprocs=WORLD, join=True)
    got = torch.load(out)
    towers, images, texts = _global_batch()
    loss = _towers_loss(towers, images, texts, chunk_size=None)
    loss.backward()
    assert _rel(got["loss"], loss.detach()) <= 1e-6
    for name, p in towers.named_parameters():
        assert _rel(got["grads"][name], p.grad) <= 1e-6, name
