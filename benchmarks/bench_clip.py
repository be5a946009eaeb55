"""CLIP training step, vlkit vs HF transformers' CLIPModel: same config, same weights, same batch.

    python benchmarks/bench_clip.py [--device cuda] [--iters 5] [--b16-batch 4]

One step = forward of both towers + symmetric contrastive loss + backward + AdamW step. Two
sizes: clip-tiny (32-pixel images, width 64, 2 layers) and OpenAI's ViT-B/16 (224-pixel images,
77-token texts). The HF model is built from the vlkit one through vlkit's converter, and the two
first losses are checked to agree before timing. Steps alternate between the libraries and the
median is reported, so drifting machine load hits both alike. A ratio below 1.0 means vlkit is
faster; the ratio of the fastest steps is printed too, since on a shared CPU the load comes in
bursts. On CUDA both run under bf16 autocast. transformers is a test-only dependency.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
if not torch.cuda.is_available():  # the CPU venv's torchvision needs the test suite's operator shim
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
    import conftest  # noqa: F401
import transformers

import vlkit
from vlkit.convert import hf_clip
from vlkit.losses.contrastive import clip_loss


def hf_twin(model) -> transformers.CLIPModel:
    """transformers' CLIPModel with the vlkit model's config and weights."""
    ref = transformers.CLIPModel(transformers.CLIPConfig(**hf_clip.config_to_hf(model.config)))
    missing, unexpected = ref.load_state_dict(hf_clip.state_dict_to_hf(model.state_dict()), strict=False)
    missing = [k for k in missing if not k.endswith("position_ids")]
    if missing or unexpected:
        raise RuntimeError(f"weights do not map: missing {missing}, unexpected {unexpected}")
    return ref


def batch(config, B: int, device):
    """Random pixels and right-padded texts whose end-of-text (49407) is the largest id."""
    g = torch.Generator().manual_seed(0)
    S, T = config.vision.image_size, config.text.context_length
    pixels = torch.randn(B, 3, S, S, generator=g)
    ids = torch.randint(1, 49406, (B, T), generator=g)
    mask = torch.ones(B, T, dtype=torch.long)
    for row in range(B):
        length = int(torch.randint(5, T + 1, (), generator=g))
        ids[row, length - 1], ids[row, length:], mask[row, length:] = 49407, 0, 0
    return pixels.to(device), ids.to(device), mask.to(device)


def bench(name, preset, B, iters, warmup, device, amp):
    torch.manual_seed(0)
    ours = vlkit.create_model(preset).to(device).train()
    theirs = hf_twin(ours).to(device).train()
    pixels, ids, mask = batch(ours.config, B, device)
    opt_ours = torch.optim.AdamW(ours.parameters(), lr=1e-5)
    opt_theirs = torch.optim.AdamW(theirs.parameters(), lr=1e-5)

    def step_ours():
        with amp():
            loss = clip_loss(*ours(pixels, ids, mask), ours.scale())["contrastive_loss"]
        loss.backward()
        opt_ours.step()
        opt_ours.zero_grad(set_to_none=True)
        return loss

    def step_theirs():
        with amp():
            loss = theirs(input_ids=ids, pixel_values=pixels, attention_mask=mask, return_loss=True).loss
        loss.backward()
        opt_theirs.step()
        opt_theirs.zero_grad(set_to_none=True)
        return loss

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    first = (step_ours().item(), step_theirs().item())  # same weights and batch: same first loss
    tol = 2e-2 if device.type == "cuda" else 1e-4
    if abs(first[0] - first[1]) > tol * max(1.0, abs(first[1])):
        raise RuntimeError(f"{name}: first losses differ: vlkit {first[0]:.6f} vs transformers {first[1]:.6f}")
    for _ in range(warmup - 1):
        step_ours(), step_theirs()
    t_ours, t_theirs = [], []
    for _ in range(iters):
        for fn, times in ((step_ours, t_ours), (step_theirs, t_theirs)):
            sync()
            t = time.perf_counter()
            fn()
            sync()
            times.append(time.perf_counter() - t)
    a, b = statistics.median(t_ours), statistics.median(t_theirs)
    params = ours.num_parameters() / 1e6
    print(
        f"{name:<26} {params:6.1f}M params  batch {B:3d}  first loss {first[0]:.4f} / {first[1]:.4f}  "
        f"median: vlkit {a * 1e3:8.1f} ms  transformers {b * 1e3:8.1f} ms  ratio {a / b:4.2f}  "
        f"(fastest: {min(t_ours) * 1e3:.1f} / {min(t_theirs) * 1e3:.1f} ms, ratio {min(t_ours) / min(t_theirs):4.2f})",
        flush=True,
    )
    return a / b


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--iters", type=int, default=None, help="timed steps per library (default: 20 tiny, 5 B/16)")
    p.add_argument("--tiny-batch", type=int, default=32)
    p.add_argument("--b16-batch", type=int, default=None, help="default 4 on the CPU, 128 on a GPU")
    p.add_argument("--only", choices=("tiny", "b16"), default=None)
    args = p.parse_args()
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True

    def amp():
        return torch.autocast("cuda", dtype=torch.bfloat16) if cuda else torch.autocast("cpu", enabled=False)

    where = torch.cuda.get_device_name() if cuda else f"CPU, {torch.get_num_threads()} threads"
    print(
        f"device {device} ({where}), torch {torch.__version__}, transformers {transformers.__version__}"
        f"{', bf16 autocast' if cuda else ', float32'}"
    )
    runs = []
    if args.only in (None, "tiny"):
        runs.append(("clip-tiny train step", "clip-tiny", args.tiny_batch, args.iters or 20, 3))
    if args.only in (None, "b16"):
        runs.append(
            (
                "clip-vit-b-16 train step",
                "clip-vit-b-16",
                args.b16_batch or (128 if cuda else 4),
                args.iters or (20 if cuda else 5),
                3 if cuda else 1,
            )
        )
    for run in runs:
        bench(*run, device=device, amp=amp)


if __name__ == "__main__":
    main()
