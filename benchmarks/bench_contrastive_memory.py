"""Peak memory and time of CLIP's loss, forward + backward: naive (the B x B logits at once) vs
tiled (``clip_loss(..., chunk_size=n)``), across batch sizes; and the time overhead of tiling.

    python benchmarks/bench_contrastive_memory.py --memory --batch-sizes 1024,4096,16384 --dim 128
    python benchmarks/bench_contrastive_memory.py --overhead --overhead-batch 8192 --chunks 256,512,1024,2048
    python benchmarks/bench_contrastive_memory.py --device cuda --memory --batch-sizes 65536,1048576 --dim 512

One point = unit-norm random image and text features (B, D) that require grad, a learnable
log-scale, ``clip_loss`` forward and ``backward()``.

Memory is what the pass needs *above the features*: on the CPU, each point runs in a fresh
subprocess that runs a small warm-up pass, allocates the features, resets the kernel's peak-RSS mark (``/proc/self/clear_refs``)
and reports the peak resident set size (VmHWM) minus the resident size before the pass; on CUDA,
``torch.cuda.max_memory_allocated`` minus the memory allocated before the pass (the caching
allocator's own view; the driver's reserve is not counted). Both include the features' gradients
(2 x B x D). A point that runs out of memory reports OOM.

The overhead is measured in one process at one batch size: naive and tiled (each chunk size)
alternate for ``--repeats`` rounds after a warm-up round, and the median and the fastest time are
reported with their ratio to naive, so load on a shared machine hits all alike.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

from vlkit.losses.contrastive import clip_loss

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float64": torch.float64}


def features(B: int, D: int, device: str, dtype: torch.dtype):
    """Unit-norm (B, D) image and text features requiring grad, and a learnable log-scale."""
    g = torch.Generator(device=device).manual_seed(0)
    img = F.normalize(torch.randn(B, D, generator=g, device=device), dim=-1).to(dtype).requires_grad_()
    txt = F.normalize(torch.randn(B, D, generator=g, device=device), dim=-1).to(dtype).requires_grad_()
    log_scale = torch.tensor(math.log(1 / 0.07), device=device, requires_grad=True)
    return img, txt, log_scale


def step(img, txt, log_scale, chunk_size) -> float:
    """One forward + backward; returns the loss."""
    loss = clip_loss(img, txt, log_scale.exp(), chunk_size=chunk_size)["contrastive_loss"]
    loss.backward()
    img.grad = txt.grad = log_scale.grad = None
    return loss.item()


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(img, txt, log_scale, chunk_size, device) -> tuple[float, float]:
    _sync(device)
    start = time.perf_counter()
    loss = step(img, txt, log_scale, chunk_size)
    _sync(device)
    return time.perf_counter() - start, loss


def _proc_status_kib(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{key} not in /proc/self/status")


def cpu_point(B: int, D: int, chunk_size: int | None, dtype: torch.dtype) -> dict:
    """Run in a fresh process: peak RSS above the features for one pass, and its time. A small
    warm-up pass first pages in the code and the thread pools, which are not the loss's memory."""
    step(*features(256, D, "cpu", dtype), None if chunk_size is None else min(chunk_size, 64))
    img, txt, log_scale = features(B, D, "cpu", dtype)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM (peak RSS) to the current RSS
    before = _proc_status_kib("VmRSS")
    seconds, loss = timed(img, txt, log_scale, chunk_size, "cpu")
    peak = _proc_status_kib("VmHWM")
    return {"peak_above_mib": (peak - before) / 1024, "seconds": seconds, "loss": loss}


def cuda_point(B: int, D: int, chunk_size: int | None, dtype: torch.dtype, device: str) -> dict:
    torch.cuda.empty_cache()
    try:
        img, txt, log_scale = features(B, D, device, dtype)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        seconds, loss = timed(img, txt, log_scale, chunk_size, device)
        peak = torch.cuda.max_memory_allocated(device)
    except torch.cuda.OutOfMemoryError:
        return {"oom": True}
    finally:
        img = txt = log_scale = None
        torch.cuda.empty_cache()
    return {"peak_above_mib": (peak - before) / 2**20, "seconds": seconds, "loss": loss}


def point(args, B: int, chunk_size: int | None) -> dict:
    """One (B, chunk) point: in a subprocess on the CPU, in this process on CUDA."""
    if args.device.startswith("cuda"):
        return cuda_point(B, args.dim, chunk_size, DTYPES[args.dtype], args.device)
    cmd = [sys.executable, __file__, "--point", str(B), "--dim", str(args.dim), "--dtype", args.dtype]
    cmd += ["--threads", str(args.threads), "--chunk-size", str(chunk_size or 0)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:  # killed for memory (-9), or an error
        return {
            "oom": done.returncode in (-9, 137),
            "error": done.stderr.strip().splitlines()[-1:] or [done.returncode],
        }
    return json.loads(done.stdout.strip().splitlines()[-1])


def memory_table(args) -> None:
    chunk = args.chunk_size
    print(
        f"\n| B | features (MiB) | naive: peak above features (MiB) | naive: time (s) | tiled ({chunk}): peak above "
        "features (MiB) | tiled: time (s) |"
    )
    print("|---:|---:|---:|---:|---:|---:|")
    for B in args.batch_sizes:
        cells = []
        for method in args.methods:
            if method == "naive" and args.skip_naive_above and args.skip_naive_above < B:
                cells += ["skipped", "-"]
                continue
            r = point(args, B, None if method == "naive" else chunk)
            if "peak_above_mib" not in r:
                cells += ["OOM" if r.get("oom") else f"error {r.get('error')}", "-"]
            else:
                cells += [f"{r['peak_above_mib']:,.0f}", f"{r['seconds']:.2f}"]
            print(f"  {method} B={B}: {r}", file=sys.stderr, flush=True)
        if args.methods == ["tiled"]:
            cells = ["-", "-", *cells]
        elif args.methods == ["naive"]:
            cells = [*cells, "-", "-"]
        feature_mib = 2 * B * args.dim * DTYPES[args.dtype].itemsize / 2**20
        print(f"| {B:,} | {feature_mib:,.0f} | " + " | ".join(cells) + " |", flush=True)


def overhead_table(args) -> None:
    torch.set_num_threads(args.threads)
    B = args.overhead_batch
    img, txt, log_scale = features(B, args.dim, args.device, DTYPES[args.dtype])
    variants: list[int | None] = [None, *args.chunks]
    times: dict[int | None, list[float]] = {v: [] for v in variants}
    losses = {}
    for round_ in range(args.repeats + 1):  # round 0 warms up
        for v in variants:
            seconds, losses[v] = timed(img, txt, log_scale, v, args.device)
            if round_:
                times[v].append(seconds)
    print(f"\n| B={B:,}, D={args.dim} | median (s) | fastest (s) | median / naive | fastest / naive | loss |")
    print("|---|---:|---:|---:|---:|---:|")
    med0, min0 = statistics.median(times[None]), min(times[None])
    for v in variants:
        med, fast = statistics.median(times[v]), min(times[v])
        name = "naive" if v is None else f"tiled, chunk {v}"
        print(f"| {name} | {med:.3f} | {fast:.3f} | {med / med0:.2f} | {fast / min0:.2f} | {losses[v]:.6f} |")


def machine(args) -> str:
    if args.device.startswith("cuda"):
        where = torch.cuda.get_device_name(args.device)
    else:
        where = f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, {args.threads} torch thread(s)"
    return f"{where}; torch {torch.__version__}; D={args.dim}, {args.dtype}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--memory", action="store_true", help="the peak-memory table across --batch-sizes")
    p.add_argument("--batch-sizes", type=_ints, default=[1024, 2048, 4096, 8192, 16384])
    p.add_argument("--methods", type=lambda s: s.split(","), default=["naive", "tiled"])
    p.add_argument(
        "--chunk-size",
        type=int,
        default=None,
        help="the tiled loss's chunk in the memory table (default: 512 on the CPU, the fastest measured at "
        "B=8192; 8192 on CUDA, where each tile is a few kernels and small tiles mean millions of launches)",
    )
    p.add_argument("--skip-naive-above", type=int, default=0, help="no naive points above this B (0: none skipped)")
    p.add_argument("--overhead", action="store_true", help="the time table at --overhead-batch")
    p.add_argument("--overhead-batch", type=int, default=8192)
    p.add_argument("--chunks", type=_ints, default=[256, 512, 1024, 2048, 4096])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--point", type=int, default=None, help=argparse.SUPPRESS)  # a CPU subprocess's one point
    args = p.parse_args(argv)
    if args.chunk_size is None and args.point is None:
        args.chunk_size = 8192 if args.device.startswith("cuda") else 512
    if args.point is not None:
        torch.set_num_threads(args.threads)
        r = cpu_point(args.point, args.dim, args.chunk_size or None, DTYPES[args.dtype])
        print(json.dumps(r))
        return
    torch.set_num_threads(args.threads)
    print(machine(args))
    if args.memory:
        memory_table(args)
    if args.overhead:
        overhead_table(args)


if __name__ == "__main__":
    main()
