"""CLIP's softmax loss vs SigLIP's sigmoid loss across batch sizes, on the built-in shapes.

    nice -n 10 python benchmarks/bench_siglip_batch.py [--batches 32 128 512] [--steps 200] [--out runs/siglip-vs-clip]
        [--families clip siglip] [--set model.init_logit_bias=0.0 ...] [--tag NAME]

Trains one tiny model per (loss, batch size) with ``vlkit train`` (configs/clip-shapes.yaml and
configs/siglip-shapes.yaml, both shrunk to 16-pixel images, width 32, 2 layers per tower), every
run for the same number of steps with the same schedule and data seed, one after another, and
prints a Markdown table of the final held-out zero-shot top-1 accuracy and Recall@1 both ways.
``--set`` adds config overrides to every run (``--tag`` names their folders apart).
The two families differ as they do in the papers: CLIP pools the [CLS] token and projects both
towers to ``embed_dim`` 32; SigLIP attention-pools the patches and projects only the text.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TOWERS = [
    "model.vision.image_size=16", "model.vision.patch_size=8", "model.vision.width=32", "model.vision.mlp_dim=64",
    "model.vision.num_heads=2", "model.text.width=32", "model.text.mlp_dim=64", "model.text.num_heads=2",
]  # fmt: skip
FAMILY = {"clip": ["model.embed_dim=32"], "siglip": ["model.text.context_length=16"]}


def run(family: str, batch: int, steps: int, out: Path, val_size: int, extra: list[str], tag: str) -> dict:
    folder = out / f"{family}-b{batch}{'-' + tag if tag else ''}"
    sets = [*TOWERS, *FAMILY[family], *extra]
    cmd = [sys.executable, "-m", "vlkit", "train", "--config", str(ROOT / "configs" / f"{family}-shapes.yaml"),
           *[a for s in sets for a in ("--set", s)], "--train.output_dir", str(folder), "--overwrite",
           "--train.max_steps", str(steps), "--train.batch_size", str(batch), "--train.eval_every", str(steps),
           "--train.checkpoint_every", str(steps), "--train.log_every", str(max(1, steps // 10)),
           "--optim.warmup_steps", str(max(1, steps // 10)), "--data.val_size", str(val_size),
           "--train.progress", "false", "--train.plots", "false"]  # fmt: skip
    started = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    val = [r for r in rows if r.get("split") == "validation"][-1]
    return {**val, "seconds": time.perf_counter() - started}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batches", type=int, nargs="+", default=[32, 128, 512])
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--val-size", type=int, default=1000)
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "siglip-vs-clip")
    p.add_argument("--families", nargs="+", choices=sorted(FAMILY), default=["clip", "siglip"])
    p.add_argument("--set", dest="sets", action="append", default=[], help="a config override for every run")
    p.add_argument("--tag", default="", help="suffix of the run folders")
    args = p.parse_args()
    lines = [
        "| loss | batch | zero-shot shape top-1 | zero-shot colour top-1 | image->text R@1 | text->image R@1 | time |",
        "|---|---|---|---|---|---|---|",
    ]
    for batch in args.batches:
        for family in args.families:
            m = run(family, batch, args.steps, args.out, args.val_size, args.sets, args.tag)
            lines.append(
                f"| {family} | {batch} | {m['zeroshot_shape_top1']:.1f}% | {m['zeroshot_colour_top1']:.1f}% "
                f"| {m['i2t_R@1']:.1f}% | {m['t2i_R@1']:.1f}% | {m['seconds']:.0f} s |"
            )
            print(lines[-1], flush=True)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
