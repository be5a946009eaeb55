"""Two processes (gloo, CPU) computing CLIP's loss with gathered features give the loss and the
gradients of one process on the whole batch."""

import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from vlkit.losses.contrastive import clip_loss

WORLD, LOCAL_B, DIM_IN, DIM = 2, 3, 10, 6


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _setup():
    """The same tiny two-tower 'model' and global batch in every process."""
    torch.manual_seed(0)
    towers = torch.nn.ModuleDict({"image": torch.nn.Linear(DIM_IN, DIM), "text": torch.nn.Linear(DIM_IN, DIM)})
    towers.logit_scale = torch.nn.Parameter(torch.tensor(2.0))
    images, texts = torch.randn(WORLD * LOCAL_B, DIM_IN), torch.randn(WORLD * LOCAL_B, DIM_IN)
    return towers, images, texts


def _loss(towers, images, texts):
    img = F.normalize(towers["image"](images), dim=-1)
    txt = F.normalize(towers["text"](texts), dim=-1)
    return clip_loss(img, txt, towers.logit_scale.exp())["contrastive_loss"]


def _worker(rank: int, port: int, out_path: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        towers, images, texts = _setup()
        rows = slice(rank * LOCAL_B, (rank + 1) * LOCAL_B)
        loss = _loss(towers, images[rows], texts[rows])
        loss.backward()
        # what DDP does: average gradients (and, for reporting, losses) over ranks
        for p in towers.parameters():
            dist.all_reduce(p.grad)
            p.grad /= WORLD
        total = loss.detach().clone()
        dist.all_reduce(total)
        if rank == 0:
            torch.save({"loss": total / WORLD, "grads": {n: p.grad for n, p in towers.named_parameters()}}, out_path)
    finally:
        dist.destroy_process_group()


def test_two_ranks_equal_one_process_on_the_global_batch(tmp_path):
    out = str(tmp_path / "rank0.pt")
    mp.spawn(_worker, args=(_free_port(), out), nprocs=WORLD, join=True)
    got = torch.load(out)

    towers, images, texts = _setup()
    loss = _loss(towers, images, texts)
    loss.backward()
    assert torch.allclose(got["loss"], loss.detach(), atol=1e-6)
    for name, p in towers.named_parameters():
        assert torch.allclose(got["grads"][name], p.grad, atol=1e-6), name

    # without the gather each rank would see only its own negatives: a different loss
    towers, images, texts = _setup()
    local = (
        sum(
            _loss(towers, images[r * LOCAL_B : (r + 1) * LOCAL_B], texts[r * LOCAL_B : (r + 1) * LOCAL_B])
            for r in range(WORLD)
        )
        / WORLD
    )
    assert not torch.allclose(local, loss, atol=1e-3)
