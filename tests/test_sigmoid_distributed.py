"""Two processes (gloo, CPU) computing SigLIP's sigmoid loss with the text blocks passed round a ring
give the loss and gradients of one process on the whole batch, whole and in tiles (float64)."""

import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from vlkit.losses.sigmoid import sigmoid_loss

WORLD, LOCAL_B, DIM_IN, DIM = 2, 5, 10, 6
CHUNKS = (None, 2)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _setup():
    """The same tiny two-tower 'model' and global batch in every process."""
    torch.manual_seed(0)
    towers = torch.nn.ModuleDict({"image": torch.nn.Linear(DIM_IN, DIM), "text": torch.nn.Linear(DIM_IN, DIM)})
    towers.logit_scale = torch.nn.Parameter(torch.tensor(2.0))
    towers.logit_bias = torch.nn.Parameter(torch.tensor(-3.0))
    towers.double()
    images = torch.randn(WORLD * LOCAL_B, DIM_IN, dtype=torch.float64)
    texts = torch.randn(WORLD * LOCAL_B, DIM_IN, dtype=torch.float64)
    return towers, images, texts


def _loss(towers, images, texts, chunk_size):
    img = F.normalize(towers["image"](images), dim=-1)
    txt = F.normalize(towers["text"](texts), dim=-1)
    scale, bias = towers.logit_scale.exp(), towers.logit_bias
    return sigmoid_loss(img, txt, scale, bias, chunk_size=chunk_size)["sigmoid_loss"]


def _worker(rank: int, port: int, out_path: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        results = {}
        for chunk in CHUNKS:
            towers, images, texts = _setup()
            rows = slice(rank * LOCAL_B, (rank + 1) * LOCAL_B)
            loss = _loss(towers, images[rows], texts[rows], chunk)
            loss.backward()
            # what DDP does: average gradients (and, for reporting, losses) over ranks
            for p in towers.parameters():
                dist.all_reduce(p.grad)
                p.grad /= WORLD
            total = loss.detach().clone()
            dist.all_reduce(total)
            results[chunk] = {"loss": total / WORLD, "grads": {n: p.grad for n, p in towers.named_parameters()}}
        if rank == 0:
            torch.save(results, out_path)
    finally:
        dist.destroy_process_group()


def test_ring_over_two_ranks_equals_one_process_on_the_global_batch(tmp_path):
    out = str(tmp_path / "rank0.pt")
    mp.spawn(_worker, args=(_free_port(), out), nprocs=WORLD, join=True)
    got = torch.load(out)

    towers, images, texts = _setup()
    loss = _loss(towers, images, texts, None)
    loss.backward()
    for chunk in CHUNKS:
        assert torch.allclose(got[chunk]["loss"], loss.detach(), rtol=1e-6, atol=0), chunk
        for name, p in towers.named_parameters():
            assert torch.allclose(got[chunk]["grads"][name], p.grad, rtol=1e-6, atol=1e-12), (chunk, name)

    # without the other rank's texts each rank would see only its own negatives: a different loss
    towers, images, texts = _setup()
    halves = [slice(r * LOCAL_B, (r + 1) * LOCAL_B) for r in range(WORLD)]
    local = sum(_loss(towers, images[h], texts[h], None) for h in halves) / WORLD
    assert not torch.allclose(local, loss, atol=1e-3)
