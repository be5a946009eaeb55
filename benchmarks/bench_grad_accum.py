"""Peak memory of one CLIP training backward: the whole batch at once vs gradient accumulation.

    python benchmarks/bench_grad_accum.py [--batch 16] [--accum 4] [--device cpu]

Compares ``train.accum_steps=1`` with a batch of ``accum x batch`` against ``train.accum_steps=accum``
with micro-batches of ``batch`` (the same samples, the same gradient: vlkit.train.accumulate's
GradCache path) on a small CLIP (64-pixel images in 8-pixel patches, width 256, 4 layers per tower,
32-token texts). Each configuration runs in a fresh Python process, so one's freed memory cannot
hide the other's. On the CPU the figure is the process's peak resident set size (``ru_maxrss``)
minus its resident size just before the step; on CUDA it is ``torch.cuda.max_memory_allocated``
minus the memory allocated before the step. One step (forward, loss, backward; no optimizer
update: its state is the same in both) is measured, the first of the process, and its wall time.
The two runs' gradients are compared and their largest relative difference printed.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import torch


def build(device: torch.device):
    from vlkit.models.clip import CLIP, CLIPConfig, CLIPTextConfig, clip_vision_config

    torch.manual_seed(0)
    vision = clip_vision_config(image_size=64, patch_size=8, width=256, depth=4, num_heads=4, mlp_dim=1024)
    text = CLIPTextConfig(vocab_size=1000, context_length=32, width=256, depth=4, num_heads=4, mlp_dim=1024)
    return CLIP(CLIPConfig(vision=vision, text=text, embed_dim=128)).to(device)


def batch_of(n: int, device: torch.device) -> dict:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(1, 990, (n, 32), generator=g)
    ids[:, -1] = 999  # end-of-text: the largest id
    return {
        "pixel_values": torch.randn(n, 3, 64, 64, generator=g).to(device),
        "input_ids": ids.to(device),
        "attention_mask": torch.ones(n, 32, dtype=torch.long, device=device),
        "captions": [str(i) for i in range(n)],
    }


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def child(total: int, accum: int, device_name: str, grads_path: str) -> dict:
    """One configuration in this (fresh) process: peak memory above the start of the step, and time."""
    from vlkit.tasks import CLIPTask
    from vlkit.train import accumulate

    device = torch.device(device_name)
    model, batch = build(device), batch_of(total, device)
    task = CLIPTask()
    recipe = SimpleNamespace(name="clip", task=task, losses=task.losses)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
    else:
        before = rss_bytes()
    start = time.perf_counter()
    loss, _ = accumulate.backward(model, recipe, batch, total, accum_steps=accum, device=device, precision="fp32")
    if device.type == "cuda":
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated(device) - before
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
    seconds = time.perf_counter() - start
    torch.save({k: p.grad.cpu() for k, p in model.named_parameters()}, grads_path)
    return {"peak_mib": peak / 2**20, "seconds": seconds, "loss": loss.item()}


def run_child(total: int, accum: int, device: str, grads_path: str) -> dict:
    cmd = [sys.executable, __file__, "--child", str(total), str(accum), device, grads_path]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    if "--child" in sys.argv:
        i = sys.argv.index("--child")
        total, accum, device, path = sys.argv[i + 1 : i + 5]
        print(json.dumps(child(int(total), int(accum), device, path)))
        return
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=16, help="micro-batch size b")
    p.add_argument("--accum", type=int, default=4, help="micro-batches per step k")
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    total = args.batch * args.accum
    what = (
        "peak RSS above the step's start"
        if args.device == "cpu"
        else "peak CUDA memory allocated above the step's start"
    )
    print(f"CLIP (ViT width 256, 4+4 layers, 64 px / 8 px patches, 32 tokens), one step of {total} samples; {what}")
    with tempfile.TemporaryDirectory() as tmp:
        rows = []
        for accum, label in (
            (1, f"accum_steps=1, batch {total}"),
            (args.accum, f"accum_steps={args.accum}, batch {args.batch}"),
        ):
            path = str(Path(tmp) / f"grads{accum}.pt")
            rows.append((label, run_child(total, accum, args.device, path), path))
        for label, r, _ in rows:
            print(f"  {label:28s} {r['peak_mib']:8.1f} MiB  {r['seconds']:6.2f} s  loss {r['loss']:.6f}")
        a, b = (torch.load(path) for _, _, path in rows)
        rel = max(((a[k] - b[k]).abs().max() / a[k].abs().max().clamp_min(1e-30)).item() for k in a)
        ratio = rows[0][1]["peak_mib"] / max(rows[1][1]["peak_mib"], 1e-9)
        print(f"  memory ratio {ratio:.2f}x; largest relative gradient difference {rel:.1e}")


if __name__ == "__main__":
    main()
