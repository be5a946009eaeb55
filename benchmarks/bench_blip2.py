"""BLIP-2 benchmarks, each timed side by side in one run.

    python benchmarks/bench_blip2.py [--part generate|train|all] [--device cuda] [--repeats 5] [--new-tokens 20]
        [--threads 1]

``generate``: vlkit's ``Blip2.generate`` vs transformers' ``Blip2ForConditionalGeneration.generate``
on the same random weights. The model is a scaled-down BLIP-2 (ViT 224 px / 16, width 384,
4 layers; Q-Former width 384, 4 layers, 32 queries, cross-attention every second layer; an OPT
LLM of width 512, 6 layers), captioning greedily from BOS at batch 1 and 8 (float32 on the CPU,
bf16 autocast on a GPU). Both must produce the same tokens. Runs alternate between the libraries
and the median is reported; a ratio below 1.0 means vlkit is faster. On the CPU with one thread the ratio is of
the process's CPU time (``time.process_time``; wall clock printed beside it): with one thread (the
default) that is the work done, unaffected by other jobs on a shared machine (see
benchmarks/bench_generation.py). transformers is a test-only dependency.

``train``: one stage-2 training step (forward, backward, AdamW step; batch 8, 24 text tokens) of a
BLIP-2 with the image encoder and the LLM frozen (``Blip2.freeze()``: the optimizer holds the
Q-Former and the projection alone) vs the same model with everything trainable. Each variant runs
in a fresh process (``--child``), which reports its peak memory growth over the training steps
(``resource.getrusage`` max RSS after the steps minus before the first one: gradients, optimizer
state, saved activations; on a GPU ``torch.cuda.max_memory_allocated`` likewise) and its median
step time; the variants alternate ``--rounds`` times and the medians and ratios are printed.
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

import torch

import vlkit

IMAGE_TOKEN = 1000  # the last id of the LLM's vocabulary: transformers' image placeholder


def import_transformers():
    if not torch.cuda.is_available():  # the CPU venv's torchvision needs the test suite's operator shim
        sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
        import conftest  # noqa: F401
    import transformers

    return transformers


def hf_model():
    transformers = import_transformers()
    vision = dict(hidden_size=384, intermediate_size=1536, num_hidden_layers=4, num_attention_heads=6, image_size=224,
                  patch_size=16)  # fmt: skip
    qformer = dict(hidden_size=384, intermediate_size=1536, num_hidden_layers=4, num_attention_heads=6,
                   cross_attention_frequency=2)  # fmt: skip
    text = transformers.OPTConfig(vocab_size=IMAGE_TOKEN + 1, hidden_size=512, word_embed_proj_dim=512,
                                  num_hidden_layers=6, ffn_dim=2048, num_attention_heads=8, max_position_embeddings=128)  # fmt: skip
    config = transformers.Blip2Config(vision_config=vision, qformer_config=qformer, text_config=text.to_dict(),
                                      num_query_tokens=32, image_token_index=IMAGE_TOKEN)  # fmt: skip
    return transformers.Blip2ForConditionalGeneration(config).eval()


def timed(fn, sync) -> tuple[float, float]:
    """(wall seconds, this process's CPU seconds) of one call."""
    sync()
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    sync()
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--part", choices=("generate", "train", "all"), default="all")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--new-tokens", type=int, default=20)
    p.add_argument("--threads", type=int, default=1, help="CPU threads")
    p.add_argument("--rounds", type=int, default=3, help="train: alternating fresh processes per variant")
    p.add_argument("--steps", type=int, default=3, help="train: timed steps per process (after one warm-up)")
    p.add_argument("--child", choices=("frozen", "trainable"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        torch.set_num_threads(args.threads)
        return train_child(args.child, torch.device(args.device), args.steps)
    if args.part in ("generate", "all"):
        generation(args)
    if args.part in ("train", "all"):
        train_comparison(args)


def generation(args) -> None:
    transformers = import_transformers()
    torch.set_num_threads(args.threads)  # after the test set-up's import, which sets its own
    dev = torch.device(args.device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if dev.type == "cuda" else torch.autocast("cpu", enabled=False)
    where = torch.cuda.get_device_name() if dev.type == "cuda" else f"{torch.get_num_threads()} CPU threads"
    print(f"device {dev} ({where}), torch {torch.__version__}, transformers {transformers.__version__}")
    torch.manual_seed(0)
    ref = hf_model()
    with torch.no_grad():
        for param in ref.parameters():
            param.add_(torch.randn_like(param) * 0.02)  # queries start at zero in transformers
    with tempfile.TemporaryDirectory() as tmp:
        ref.save_pretrained(tmp)
        ours = vlkit.from_pretrained(tmp).to(dev)
    ref = ref.to(dev)
    for batch in (1, 8):
        compare(ours, ref, batch, args.new_tokens, args.repeats, dev, sync, amp)


def compare(ours, ref, batch: int, new_tokens: int, repeats: int, dev, sync, amp) -> None:
    """Time greedy captions of ``batch`` random images from BOS; print the medians and the ratio."""
    Q, bos = ours.config.qformer.num_query_tokens, ours.config.llm.bos_token_id
    pixels = torch.randn(batch, 3, 224, 224, device=dev)
    hf_ids = torch.tensor([[IMAGE_TOKEN] * Q + [bos]] * batch, device=dev)
    options = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, num_beams=1)

    def run_ours():
        with torch.no_grad(), amp:
            return ours.generate(pixels, **options)

    def run_ref():
        with torch.no_grad(), amp:
            return ref.generate(pixel_values=pixels, input_ids=hf_ids, do_sample=False, **options)

    same = torch.equal(run_ours().cpu(), run_ref()[:, Q:].cpu())  # (also the warm-up)
    a, b = [], []
    for _ in range(repeats):
        a.append(timed(run_ours, sync))
        b.append(timed(run_ref, sync))
    clock = 1 if dev.type == "cpu" and torch.get_num_threads() == 1 else 0  # CPU time sums threads
    ta, tb = (statistics.median(t[clock] for t in runs) for runs in (a, b))
    wa, wb = (statistics.median(t[0] for t in runs) for runs in (a, b))
    print(
        f"caption, batch {batch}, {new_tokens} new tokens ({'CPU' if clock else 'wall'} time): vlkit {ta * 1e3:8.1f} ms   "
        f"transformers {tb * 1e3:8.1f} ms   ratio {ta / tb:5.2f}   speed-up {tb / ta:4.2f}x   same tokens: {same}   "
        f"(wall: {wa * 1e3:.0f} / {wb * 1e3:.0f} ms)"
    )


# ------------------------------------------------------------------ a stage-2 training step
TRAIN_BATCH, TRAIN_TOKENS = 8, 24


def train_model():
    """A BLIP-2 whose frozen parts outweigh the Q-Former as in the paper: ViT 128 px / 16 (width 384,
    6 layers), a Q-Former of width 256 (4 layers, 32 queries, queries only), an OPT LLM of width 512
    (6 layers, 16384-token vocabulary)."""
    from vlkit.models import Blip2, Blip2Config, QFormerConfig
    from vlkit.models.blip2 import blip2_vision_config
    from vlkit.models.opt import OPTConfig

    vision = blip2_vision_config(image_size=128, patch_size=16, width=384, depth=6, num_heads=6, mlp_dim=1536)
    qformer = QFormerConfig(hidden_size=256, num_layers=4, num_heads=4, intermediate_size=1024,
                            num_query_tokens=32, text_input=False, dropout=0.0, attn_dropout=0.0)  # fmt: skip
    llm = OPTConfig(vocab_size=16384, hidden_size=512, num_layers=6, intermediate_size=2048,
                    num_heads=8, max_positions=128, dropout=0.0)  # fmt: skip
    return Blip2(Blip2Config(vision=vision, qformer=qformer, llm=llm))


def peak_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def train_child(variant: str, device: torch.device, steps: int) -> None:
    """One variant in this (fresh) process: prints a JSON line of its figures."""
    from vlkit.losses.lm import lm_loss

    torch.manual_seed(0)
    model = train_model().to(device)
    if variant == "frozen":
        model.freeze()
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    g = torch.Generator().manual_seed(0)
    pixels = torch.randn(TRAIN_BATCH, 3, 128, 128, generator=g).to(device)
    ids = torch.randint(4, 16384, (TRAIN_BATCH, TRAIN_TOKENS), generator=g).to(device)
    labels = ids.clone()
    labels[:, :4] = -100  # BOS and a prompt: not scored
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    amp = (
        torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)
    )

    def step() -> None:
        with amp:
            loss = lm_loss(model(pixels, ids), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    before = peak_bytes(device) if device.type == "cpu" else torch.cuda.memory_allocated(device)
    times = []
    for i in range(steps + 1):
        sync()
        t = time.perf_counter()
        step()
        sync()
        if i:  # the first step is the warm-up (it also allocates the optimizer state)
            times.append(time.perf_counter() - t)
    trainable, total = (sum(p.numel() for p in ps) for ps in (params, list(model.parameters())))
    figures = {"ms": 1e3 * statistics.median(times), "peak_mb": (peak_bytes(device) - before) / 2**20,
               "trainable": trainable, "total": total}  # fmt: skip
    print(json.dumps(figures))


def train_comparison(args) -> None:
    dev = torch.device(args.device)
    where = torch.cuda.get_device_name() if dev.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"stage-2 training step (batch {TRAIN_BATCH}, {TRAIN_TOKENS} tokens), device {dev} ({where}), "
          f"torch {torch.__version__}; each variant in a fresh process, {args.rounds} rounds alternating")  # fmt: skip
    runs: dict[str, list[dict]] = {"frozen": [], "trainable": []}
    for _ in range(args.rounds):
        for variant in runs:
            cmd = [sys.executable, __file__, "--child", variant, "--device", args.device, "--steps", str(args.steps),
                   "--threads", str(args.threads)]  # fmt: skip
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
            runs[variant].append(json.loads(out.strip().splitlines()[-1]))
    med = {v: {k: statistics.median(r[k] for r in rs) for k in ("ms", "peak_mb")} for v, rs in runs.items()}
    for variant, rs in runs.items():
        print(
            f"  {variant:9s}: {rs[0]['trainable']:>11,} of {rs[0]['total']:,} parameters trainable   "
            f"step {med[variant]['ms']:8.1f} ms   peak memory growth {med[variant]['peak_mb']:8.1f} MiB"
        )
    f, t = med["frozen"], med["trainable"]
    print(
        f"  frozen / everything trainable: time {f['ms'] / t['ms']:.2f}x, peak memory {f['peak_mb'] / t['peak_mb']:.2f}x"
    )


if __name__ == "__main__":
    main()
