"""Does storing ``nn.Linear`` weights in (in, out) memory order speed up CPU decoding? One run, 1 thread.

    python benchmarks/bench_linear_layout.py [--rows 1,2,4,8,16,32] [--models llama,blip2,llava]
        [--batches 1,8] [--repeats 9] [--skip-micro]

A weight of shape (out, in) with strides (1, out) (``w.t().contiguous().t()``) holds the same values
as ``nn.Linear``'s contiguous (out, in) weight; ``F.linear`` takes either, and MKL's float32 sgemm
then runs another kernel. This measures, as CPU time of this process (``time.process_time``, 1
thread), medians of interleaved runs, the time of (out, in) / the time of (in, out) (above 1: the
(in, out) order is faster):

1. ``hot``: one weight multiplied again and again (it stays in the core's L2 cache), at the
   widths of bench_generation.py's models and ``--rows`` rows;
2. ``cold``: the same product cycled over ~120 MB of distinct weights, so that every product reads
   its weight from L3 or memory, as a decoding step of a whole model does;
3. ``generate``: the models of bench_generation.py (greedy, 24 new tokens, the dynamic cache) with
   every ``nn.Linear`` weight of the language model in (in, out) order vs as loaded (a copy of the
   same model; the tokens are compared).

vlkit keeps nn.Linear's layout: measured 2026-11-30 (docs/generation.md) the (in, out) order ran
about 2x faster hot at 4-16 rows, 0.8-1.3x cold, and 0.98-1.03x for whole generate calls.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, os.path.dirname(__file__))
import bench_generation as bg  # also installs the CPU test shim

WIDTHS = [(384, 640), (384, 2048), (1024, 384), (384, 8192), (512, 1536), (512, 2048), (2048, 512), (512, 8192)]


def in_out_order(module: nn.Module) -> None:
    """Every nn.Linear weight of ``module`` re-stored in (in, out) memory order (same values)."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            m.weight.data = m.weight.data.t().contiguous().t()


def cpu_ms(fn: Callable[[], object], calls: int) -> float:
    start = time.process_time()
    for _ in range(calls):
        fn()
    return (time.process_time() - start) / calls * 1e3


def ratio(a: Callable[[], float], b: Callable[[], float], repeats: int) -> tuple[float, float]:
    """Medians (ms) of ``a`` and ``b`` timed alternately."""
    ta, tb = [], []
    for _ in range(repeats):
        ta.append(a())
        tb.append(b())
    return statistics.median(ta), statistics.median(tb)


def micro_ratios(i: int, o: int, r: int, repeats: int) -> tuple[float, float]:
    """(hot, cold) ratios of ``F.linear`` of r rows by an (o, i) weight."""
    weights = [torch.randn(o, i) for _ in range(max(4, int(120e6 / (4 * i * o))))]
    transposed = [w.t().contiguous().t() for w in weights]
    x = torch.randn(r, i)

    def hot(ws: list[torch.Tensor]) -> Callable[[], float]:
        return lambda: cpu_ms(lambda: F.linear(x, ws[0]), 50)

    def cold(ws: list[torch.Tensor]) -> Callable[[], float]:
        return lambda: sum(cpu_ms(lambda w=w: F.linear(x, w), 1) for w in ws) / len(ws)

    (h1, h2), (c1, c2) = ratio(hot(weights), hot(transposed), repeats), ratio(cold(weights), cold(transposed), repeats)
    return h1 / h2, c1 / c2


def micro(rows: list[int], repeats: int) -> None:
    print("| in -> out | " + " | ".join(f"{r} rows hot / cold" for r in rows) + " |")
    print("|---" * (len(rows) + 1) + "|")
    for i, o in WIDTHS:
        cells = [micro_ratios(i, o, r, repeats) for r in rows]
        print(f"| {i} -> {o} | " + " | ".join(f"{h:.2f} / {c:.2f}" for h, c in cells) + " |", flush=True)


def swapped(params: dict[str, nn.Parameter], weights: dict[str, torch.Tensor], fn: Callable[[], object]) -> object:
    """``fn()`` with ``params`` holding ``weights``, then their own tensors again."""
    own = {k: p.data for k, p in params.items()}
    for k, p in params.items():
        p.data = weights[k]
    try:
        return fn()
    finally:
        for k, p in params.items():
            p.data = own[k]


def generate_ratio(name: str, batch: int, repeats: int) -> str:
    _, model, _, run = bg.build(name, batch, torch.device("cpu"))
    options = dict(max_new_tokens=24, min_new_tokens=24, num_beams=1)
    params = dict(model.named_parameters())
    other = copy.deepcopy(model)
    in_out_order(getattr(other, "llm", other))
    transposed = {k: p.data for k, p in other.named_parameters()}

    def call() -> torch.Tensor:
        return run(**options)

    with torch.no_grad():
        same = torch.equal(call(), swapped(params, transposed, call))
        a, b = ratio(lambda: cpu_ms(call, 1), lambda: swapped(params, transposed, lambda: cpu_ms(call, 1)), repeats)
    return f"{name} batch {batch}: (out, in) {a:.0f} ms, (in, out) {b:.0f} ms: {a / b:.2f}x; same tokens: {same}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rows", default="1,2,4,8,16,32")
    p.add_argument("--models", default="llama,blip2,llava")
    p.add_argument("--batches", default="1,8")
    p.add_argument("--repeats", type=int, default=9)
    p.add_argument("--skip-micro", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(1)
    bg.transformers.logging.set_verbosity_error()
    print(f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; load {os.getloadavg()[0]:.1f}; torch "
          f"{torch.__version__}; (out, in) time / (in, out) time, CPU time, 1 thread")  # fmt: skip
    if not args.skip_micro:
        micro([int(r) for r in args.rows.split(",")], args.repeats)
    for name in (m for m in args.models.split(",") if m):
        for batch in (int(b) for b in args.batches.split(",")):
            print(generate_ratio(name, batch, args.repeats), flush=True)


if __name__ == "__main__":
    main()
