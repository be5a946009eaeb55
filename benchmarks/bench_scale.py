"""Scale-out figures: memory per process for DDP / FSDP / activation checkpointing, and data
loading from WebDataset shards vs an image folder.

    python benchmarks/bench_scale.py memory [--preset clip-vit-b-16] [--batch 8] [--steps 2]
    python benchmarks/bench_scale.py data [--images 512] [--size 224] [--workers 2]

``memory`` launches ``torchrun --nproc_per_node 2`` (CPU, gloo) once per configuration; each
process builds the model, applies the strategy (:mod:`vlkit.train.strategy`), runs ``--steps``
CLIP training steps (forward of both towers, the contrastive loss over the gathered batch,
backward, AdamW) and reports its peak resident memory (``ru_maxrss``) and the mean step time.
``data`` writes the same built-in shapes images as a folder + CSV and as shards, then times one
pass of each through a DataLoader with ``--workers`` workers and the model's preprocessing
(decode, resize, normalise, tokenize), alternating the two three times and reporting the median.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

CONFIGS = {
    "ddp": [],
    "ddp + activation checkpointing": ["--checkpointing"],
    "fsdp": ["--fsdp"],
    "fsdp + activation checkpointing": ["--fsdp", "--checkpointing"],
}


def memory_worker(args) -> None:
    """One process of a torchrun launch: the steps, then one JSON line from each rank."""
    import torch.distributed as dist

    import vlkit
    from vlkit.losses.contrastive import clip_loss
    from vlkit.train.strategy import checkpoint_blocks, shard_model

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)
    model = vlkit.create_model(args.preset)
    if args.checkpointing:
        checkpoint_blocks(model)
    if args.fsdp:
        shard_model(model, device=torch.device("cpu"), world_size=world, bf16=False)
        wrapped = model
    else:
        wrapped = torch.nn.parallel.DistributedDataParallel(model)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    size, ctx = model.config.vision.image_size, model.config.text.context_length
    pixels = torch.randn(args.batch, 3, size, size)
    ids = torch.randint(1, model.config.text.vocab_size - 1, (args.batch, ctx))
    times = []
    for _ in range(args.steps):
        start = time.perf_counter()
        image, text = wrapped(pixels, ids)  # normalised features
        loss = clip_loss(image, text, model.scale())["contrastive_loss"]
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB -> MiB on Linux
    row = {"rank": rank, "peak_mib": peak, "step_s": statistics.mean(times[1:] or times)}
    rows = [None] * world
    dist.all_gather_object(rows, row)
    if rank == 0:
        print("RESULT " + json.dumps(rows), flush=True)
    dist.destroy_process_group()


def memory(args) -> None:
    print(f"{args.preset}, batch {args.batch} per process x 2 processes (CPU, gloo), {args.steps} steps")
    print("| strategy | peak memory per process | step time |")
    print("|---|---|---|")
    for name, flags in CONFIGS.items():
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", __file__,
               "memory-worker", "--preset", args.preset, "--batch", str(args.batch), "--steps", str(args.steps),
               *flags]  # fmt: skip
        env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
        out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
        line = next((x for x in out.stdout.splitlines() if x.startswith("RESULT ")), None)
        if line is None:
            print(f"| {name} | failed: {out.stderr.strip().splitlines()[-1:]} | |")
            continue
        rows = json.loads(line[7:])
        peak = max(r["peak_mib"] for r in rows)
        step = statistics.mean(r["step_s"] for r in rows)
        print(f"| {name} | {peak:,.0f} MiB | {step:.1f} s |", flush=True)


def _write_data(folder: Path, n: int, size: int) -> tuple[Path, Path]:
    from vlkit.data.folder import ImageTextFolder
    from vlkit.data.shards import write_shards
    from vlkit.data.synthetic import ShapesDataset

    images = folder / "images"
    images.mkdir()
    shapes = ShapesDataset("train", size=n, image_size=size, seed=0)
    rows = ["image,caption"]
    for i in range(n):
        item = shapes[i]
        item["image"].save(images / f"{i:05d}.jpg", quality=90)
        rows.append(f"images/{i:05d}.jpg,{item['caption']}")
    (folder / "train.csv").write_text("\n".join(rows) + "\n")
    write_shards(ImageTextFolder(folder / "train.csv").samples, folder / "shards", shard_size=max(1, n // 8))
    return folder / "train.csv", folder / "shards"


def data(args) -> None:
    import vlkit
    from vlkit.data.folder import ImageTextFolder
    from vlkit.data.loader import ImageTextCollator
    from vlkit.data.shards import ShardStream

    torch.set_num_threads(1)
    model = vlkit.create_model("clip-tiny", vision=dict(image_size=args.size))
    transform = vlkit.image_transform(model)
    collate = ImageTextCollator(vlkit.get_tokenizer("clip"))
    with tempfile.TemporaryDirectory() as tmp:
        csv, shards = _write_data(Path(tmp), args.images, args.size)
        folder_ds = ImageTextFolder(csv, transform=transform)
        stream = ShardStream(
            sorted(str(p) for p in shards.iterdir()), num_samples=args.images, batch_size=32, transform=transform
        )
        loaders = {
            "folder (CSV + JPEG files)": torch.utils.data.DataLoader(
                folder_ds, batch_size=32, shuffle=True, num_workers=args.workers, collate_fn=collate
            ),
            "WebDataset shards": torch.utils.data.DataLoader(
                stream, batch_size=None, num_workers=args.workers, collate_fn=collate
            ),
        }
        times: dict[str, list[float]] = {name: [] for name in loaders}
        for _ in range(3):
            for name, loader in loaders.items():
                start = time.perf_counter()
                count = sum(len(batch["captions"]) for batch in loader)
                times[name].append(count / (time.perf_counter() - start))
    print(f"{args.images} shapes images at {args.size} px, batch 32, {args.workers} workers, median of 3 passes")
    for name, rates in times.items():
        print(f"| {name} | {statistics.median(rates):,.0f} samples/s |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="what", required=True)
    m = sub.add_parser("memory")
    w = sub.add_parser("memory-worker")
    for q in (m, w):
        q.add_argument("--preset", default="clip-vit-b-16")
        q.add_argument("--batch", type=int, default=8)
        q.add_argument("--steps", type=int, default=2)
    m.add_argument("--threads", type=int, default=1, help="threads per process")
    w.add_argument("--fsdp", action="store_true")
    w.add_argument("--checkpointing", action="store_true")
    d = sub.add_parser("data")
    d.add_argument("--images", type=int, default=512)
    d.add_argument("--size", type=int, default=224)
    d.add_argument("--workers", type=int, default=2)
    args = p.parse_args()
    {"memory": memory, "memory-worker": memory_worker, "data": data}[args.what](args)


if __name__ == "__main__":
    main()
