"""Peak memory and time of SigLIP's sigmoid loss, whole vs tiled, forward + backward on the CPU.

    python benchmarks/bench_sigmoid_memory.py [--batches 1024 4096] [--dim 128] [--chunk 512]

Each measurement runs in a fresh process: the features are made (float32, requiring grad), the
process's resident memory is read, then loss + backward run and the peak resident memory
(``ru_maxrss``) is read again; the difference is the memory the loss needed above the features.
The tiled form keeps one chunk x chunk tile of logits alive; the whole form several B x B tensors.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = r"""
import json, resource, sys, time
import torch, torch.nn.functional as F
from vlkit.losses.sigmoid import sigmoid_loss
torch.set_num_threads(1)
B, D, chunk = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]) or None
g = torch.Generator().manual_seed(0)
img = F.normalize(torch.randn(B, D, generator=g), dim=-1).requires_grad_()
txt = F.normalize(torch.randn(B, D, generator=g), dim=-1).requires_grad_()
scale, bias = torch.tensor(10.0, requires_grad=True), torch.tensor(-10.0, requires_grad=True)
def rss_kib():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS"))
before = rss_kib()
t = time.perf_counter()
sigmoid_loss(img, txt, scale, bias, chunk_size=chunk)["sigmoid_loss"].backward()
seconds = time.perf_counter() - t
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
print(json.dumps({"mib": (peak - before) / 1024, "seconds": seconds}))
"""


def measure(batch: int, dim: int, chunk: int) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, str(batch), str(dim), str(chunk)], capture_output=True,
                         text=True, check=True)  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batches", type=int, nargs="+", default=[1024, 4096])
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--chunk", type=int, default=512)
    args = p.parse_args()
    print(f"| B | D | whole: MiB above the features | time | tiled (chunk {args.chunk}): MiB | time |")
    print("|---|---|---|---|---|---|")
    for batch in args.batches:
        whole, tiled = measure(batch, args.dim, 0), measure(batch, args.dim, args.chunk)
        print(
            f"| {batch} | {args.dim} | {whole['mib']:.0f} | {whole['seconds']:.2f} s "
            f"| {tiled['mib']:.0f} | {tiled['seconds']:.2f} s |",
            flush=True,
        )


if __name__ == "__main__":
    main()
