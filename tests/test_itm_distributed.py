"""Two processes (gloo): ITM negatives come from the whole global batch, never a positive, texts of
different per-rank lengths are padded, and gradients flow back to the rank that owns a sample."""

import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from vlkit.losses.itm import hard_negatives

WORLD, B, D = 2, 4, 8
LENGTHS = (3, 5)  # each rank pads its texts to its own batch's longest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, port: int, out_path: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        g = torch.Generator().manual_seed(rank)
        gid = torch.arange(B) + rank * B  # global sample index
        img_f = F.normalize(torch.randn(B, D, generator=g), dim=-1)
        txt_f = F.normalize(torch.randn(B, D, generator=g), dim=-1)
        image_side = gid.float()[:, None, None].repeat(1, 2, 3).requires_grad_()  # (B, 2, 3), value = global index
        T = LENGTHS[rank]
        hidden = gid.float()[:, None, None].repeat(1, T, 3)
        mask = torch.ones(B, T, dtype=torch.long)
        ids = torch.tensor([0, 1, 2, 3]) if rank == 0 else torch.tensor([1, 4, 5, 6])  # id 1 on both ranks
        picks_img, picks_txt = [], []
        for _ in range(30):
            neg_img, neg_txt = hard_negatives(
                img_f, txt_f, 1.0, image_side, {"hidden": hidden, "attention_mask": mask}, ids=ids, generator=g
            )
            picks_img.append(neg_img[:, 0, 0].long())
            picks_txt.append(neg_txt["hidden"][:, 0, 0].long())
            assert neg_txt["hidden"].shape == (B, max(LENGTHS), 3)
        # gradient of one more draw: each global image gets 1 per time it was picked by any rank
        neg_img, neg_txt = hard_negatives(
            img_f, txt_f, 1.0, image_side, {"hidden": hidden, "attention_mask": mask}, ids=ids, generator=g
        )
        last = neg_img[:, 0, 0].long()
        neg_img[:, 0, 0].sum().backward()
        all_last = [torch.empty_like(last) for _ in range(WORLD)]
        dist.all_gather(all_last, last)
        torch.save(
            {
                "ids": ids,
                "gid": gid,
                "img": torch.stack(picks_img),
                "txt": torch.stack(picks_txt),
                "last_txt": neg_txt["hidden"][:, 0, 0].long(),
                "last_mask": neg_txt["attention_mask"],
                "grad": image_side.grad[:, 0, 0].clone(),
                "all_last": torch.cat(all_last),
            },
            f"{out_path}.{rank}",
        )
    finally:
        dist.destroy_process_group()


def test_hard_negatives_across_two_ranks(tmp_path):
    out = str(tmp_path / "rank")
    mp.spawn(_worker, args=(_free_port(), out), nprocs=WORLD, join=True)
    res = [torch.load(f"{out}.{r}") for r in range(WORLD)]
    all_ids = torch.cat([r["ids"] for r in res])  # (W * B,)
    seen_other_rank = False
    for r in res:
        for picks in (r["img"], r["txt"]):  # (draws, B) global indices
            assert (picks != r["gid"]).all()  # never the pair itself
            assert (all_ids[picks] != r["ids"]).all()  # never a same-id sample, on either rank
            seen_other_rank |= bool(((picks // B) != r["gid"][0] // B).any())
        # texts from the shorter rank arrive padded with mask 0
        owner = r["last_txt"] // B
        assert r["last_mask"].sum(1).tolist() == [LENGTHS[o] for o in owner.tolist()]
    assert seen_other_rank
    # backward of the gathered tensor: every rank's rows receive what all ranks took from them
    counts = torch.bincount(torch.cat([res[0]["all_last"]]), minlength=WORLD * B).float()
    assert torch.cat([r["grad"] for r in res]).tolist() == counts.tolist()
