"""CPU precision: image embedding in float32 and bf16, vlkit vs open_clip, same weights, one run.

    python benchmarks/bench_cpu_precision.py [--threads 2] [--batch 32] [--rounds 12]
    python benchmarks/bench_cpu_precision.py --sweep [--threads 1] [--rounds 5]

Default: a CLIP ViT-B/32 (random weights, vlkit's ``clip-vit-b-32``; open_clip's copy is the
same weights written by ``vlkit.convert.open_clip.save_open_clip`` and read back by
``open_clip.create_model_and_transforms("local-dir:...")``) embeds one batch of real photos
(scikit-image's, cropped into ``--batch`` different images, preprocessed as the model expects).
Four ways, interleaved round by round (the order rotates each round) so drifting machine load
hits all alike; the median of each is reported in images/s:

- vlkit fp32, vlkit auto (``vlkit.eval.encode_images(..., precision="auto")``: the library's
  own path, which takes bf16 on a CPU with native bf16 for a model this wide), open_clip fp32,
  open_clip under ``torch.autocast("cpu", dtype=torch.bfloat16)``.

Then the features: per image, the cosine of vlkit auto's against vlkit fp32's and against
open_clip fp32's (min and mean), and the same after the batch mean is removed from every
feature (a stricter check: a random model's features share a large common direction; the mean
cosine between two different images is printed too, for scale).

``--sweep``: the table behind ``vlkit.runtime.CPU_BF16_MIN_WIDTH``: for CLIP models of widths
64..768 (4 layers per tower, 224-pixel images in 32-pixel patches, batch 32, 32-token texts)
the bf16/float32 speed ratio of an image-embedding batch (no gradient) and of a training step
(forward of both towers, CLIP loss, backward, AdamW), plus the ``clip-tiny`` demo step
(batch 128, its 32-pixel images). Medians of interleaved rounds.

``--json FILE`` writes the figures. Timings on a shared machine are noisy; run it on a quiet one.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone

import torch
import torch.nn.functional as F

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
import conftest  # noqa: F401  (lets open_clip's torchvision import beside the CPU torch)
import vlkit
from vlkit.convert.open_clip import save_open_clip
from vlkit.eval import encode_images
from vlkit.losses.contrastive import clip_loss
from vlkit.runtime import CPU_BF16_MIN_WIDTH, cpu_has_native_bf16, model_width, resolve_precision

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry", "retina", "cat")


def machine() -> str:
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            name = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), name)
    except OSError:
        pass
    return f"{name}, {torch.get_num_threads()} threads, native bf16: {cpu_has_native_bf16()}, torch {torch.__version__}"


def photo_batch(model, count: int) -> torch.Tensor:
    """(count, 3, S, S): crops of scikit-image's photos (the four quarters and the middle of each,
    then the same flipped), preprocessed by the model's own transform."""
    import numpy as np
    import skimage.data
    from PIL import Image

    transform = vlkit.image_transform(model)
    crops = []
    for name in PHOTOS:
        img = Image.fromarray(np.asarray(getattr(skimage.data, name)())).convert("RGB")
        w, h = img.size
        boxes = [(0, 0, w // 2, h // 2), (w // 2, 0, w, h // 2), (0, h // 2, w // 2, h), (w // 2, h // 2, w, h)]
        boxes.append((w // 4, h // 4, 3 * w // 4, 3 * h // 4))
        crops += [img.crop(b) for b in boxes]
    crops += [c.transpose(Image.Transpose.FLIP_LEFT_RIGHT) for c in crops]
    if count > len(crops):
        raise ValueError(f"--batch at most {len(crops)} (the photo crops there are)")
    return torch.stack([transform(c) for c in crops[:count]])


def timed_rounds(fns: dict, rounds: int) -> dict[str, list[float]]:
    """Seconds per call of every function, interleaved, the order rotating each round."""
    names = list(fns)
    for name in names:  # warm-up (oneDNN picks its kernels on the first call)
        fns[name]()
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            start = time.perf_counter()
            fns[name]()
            times[name].append(time.perf_counter() - start)
    return times


def cosines(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    c = F.cosine_similarity(a.double(), b.double(), dim=-1)  # (N,)
    return c.min().item(), c.mean().item()


def centred(x: torch.Tensor) -> torch.Tensor:
    return x - x.mean(0, keepdim=True)


def headline(args) -> dict:
    import open_clip

    torch.manual_seed(0)
    ours = vlkit.create_model("clip-vit-b-32").eval()
    with tempfile.TemporaryDirectory() as tmp:
        save_open_clip(ours, tmp, tokenizer=vlkit.get_tokenizer("clip"))
        theirs, _, _ = open_clip.create_model_and_transforms(f"local-dir:{tmp}")
    theirs.eval()
    pixels = photo_batch(ours, args.batch)  # (B, 3, 224, 224)
    auto = resolve_precision("auto", "cpu", ours, training=False)
    print(f"{machine()}\nViT-B/32 image embedding, batch {args.batch}; vlkit 'auto' resolves to {auto}")

    def vlkit_run(precision):
        return lambda: encode_images(ours, [pixels], precision=precision, normalize=False)

    def open_clip_run(bf16):
        def run():
            with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                return theirs.encode_image(pixels).float()

        return run

    fns = {
        "vlkit fp32": vlkit_run("fp32"),
        "vlkit auto": vlkit_run("auto"),
        "open_clip fp32": open_clip_run(False),
        "open_clip bf16": open_clip_run(True),
    }
    with torch.no_grad():
        ref, ours_auto, oc = fns["vlkit fp32"](), fns["vlkit auto"](), fns["open_clip fp32"]()
    times = timed_rounds(fns, args.rounds)
    speed = {n: args.batch / statistics.median(t) for n, t in times.items()}
    base = speed["open_clip fp32"]
    for name, ips in speed.items():
        print(
            f"  {name:<15} {ips:7.1f} img/s   {ips / base:4.2f}x open_clip fp32   (fastest {args.batch / min(times[name]):.1f})"
        )
    other = F.cosine_similarity(ref[:, None].double(), ref[None].double(), dim=-1)
    pairwise = (other.sum() - other.diagonal().sum()).item() / (len(ref) * (len(ref) - 1))
    figures = {
        "cos_auto_vs_fp32": cosines(ours_auto, ref),
        "cos_auto_vs_open_clip_fp32": cosines(ours_auto, oc),
        "cos_centred_auto_vs_fp32": cosines(centred(ours_auto), centred(ref)),
        "cos_fp32_vs_open_clip_fp32": cosines(ref, oc),
    }
    for name, (lo, mean) in figures.items():
        print(f"  {name:<28} min {lo:.6f}  mean {mean:.6f}")
    print(f"  (mean cosine between two different images' fp32 features: {pairwise:.4f})")
    return {"speed_img_s": speed, "auto": auto, "cosines": figures, "pairwise_cosine": pairwise}


def sweep_model(width: int) -> vlkit.models.clip.CLIP:
    heads = max(2, width // 64)
    tower = dict(width=width, depth=4, num_heads=heads, mlp_dim=4 * width)
    return vlkit.create_model(
        "clip-tiny",
        vision=dict(image_size=224, patch_size=32, **tower),
        text=dict(context_length=32, **tower),
        embed_dim=min(width, 512),
    )


def step_fns(model, B: int, embed: bool) -> dict:
    """{"fp32": fn, "bf16": fn}: an embedding batch, or a training step, in each precision."""
    g = torch.Generator().manual_seed(0)
    S, T = model.config.vision.image_size, model.config.text.context_length
    pixels = torch.randn(B, 3, S, S, generator=g)
    ids = torch.randint(1, 49406, (B, T), generator=g)
    ids[:, -1] = 49407
    mask = torch.ones(B, T, dtype=torch.long)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)

    def make(bf16: bool):
        def embed_batch():
            with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                return model.encode_image(pixels, normalize=True)

        def train_step():
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = clip_loss(*model(pixels, ids, mask), model.scale())["contrastive_loss"]
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        return embed_batch if embed else train_step

    model.train(not embed)
    return {"fp32": make(False), "bf16": make(True)}


def sweep(args) -> dict:
    print(f"{machine()}\nbf16 / fp32 speed (median of {args.rounds} interleaved rounds; > 1: bf16 faster)")
    rows = []
    cases = [(w, kind) for w in args.widths for kind in ("embed", "train")] + [("clip-tiny", "train")] * args.tiny
    for width, kind in cases:
        torch.manual_seed(0)
        if width == "clip-tiny":
            model, B = vlkit.create_model("clip-tiny"), 128
        else:
            model, B = sweep_model(width), 32
        times = timed_rounds(step_fns(model, B, kind == "embed"), args.rounds)
        fp32, bf16 = statistics.median(times["fp32"]), statistics.median(times["bf16"])
        w = model_width(model)
        row = {"model": str(width), "width": w, "kind": kind, "batch": B, "fp32_ms": fp32 * 1e3, "bf16_ms": bf16 * 1e3}
        row["speedup"] = fp32 / bf16
        rows.append(row)
        print(
            f"  width {w:4d} {'' if width != 'clip-tiny' else '(clip-tiny) '}{kind:<6} batch {B:3d}: "
            f"fp32 {fp32 * 1e3:8.1f} ms  bf16 {bf16 * 1e3:8.1f} ms  speed-up {fp32 / bf16:4.2f}",
            flush=True,
        )
    print(f"the rule in vlkit.runtime: CPU_BF16_MIN_WIDTH = {CPU_BF16_MIN_WIDTH}")
    return {"rows": rows, "rule": CPU_BF16_MIN_WIDTH}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: 2, or 1 with --sweep)")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--rounds", type=int, default=None, help="timed rounds (default 12, or 5 with --sweep)")
    p.add_argument("--sweep", action="store_true", help="the bf16/fp32 table per model width instead")
    p.add_argument("--widths", type=int, nargs="*", default=[64, 128, 192, 256, 384, 512, 768])
    p.add_argument("--no-tiny", dest="tiny", action="store_false", help="--sweep: leave out the clip-tiny row")
    p.add_argument("--json", help="also write the figures to this JSON file")
    args = p.parse_args()
    torch.set_num_threads(args.threads or (1 if args.sweep else 2))
    args.rounds = args.rounds or (5 if args.sweep else 12)
    result = sweep(args) if args.sweep else headline(args)
    result.update(machine=machine(), date=datetime.now(timezone.utc).isoformat(timespec="minutes"))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
