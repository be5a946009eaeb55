"""Every row of the speed table (issue 14), vlkit against transformers on the same card in one run.

    python benchmarks/bench_gpu.py --out bench_gpu.json              # a GPU: bf16, compiled, full sizes
    python benchmarks/bench_gpu.py --device cpu --tiny --out x.json  # the smoke run (tiny shapes, seconds)

Rows (full sizes; ``--tiny`` swaps in configs of width 32-64 and 2 layers, batches of 4-8):

- ``clip_b16_train_step``: CLIP ViT-B/16, batch 256 of 224-pixel images and 77-token captions:
  forward, contrastive loss, backward, gradient clipping at 1.0 and AdamW (fused on a GPU) for all
  three: vlkit (its training step: ``CLIPTask`` losses compiled as ``train.compile`` does, the
  optimizer of ``vlkit.train.optim``), transformers' ``CLIPModel(return_loss=True)`` with the same
  weights, and open_clip's ``CLIP`` of the same shape (its own random weights) with its ``ClipLoss``.
  Images/s, and MFU from ``vlkit.train.flops`` (the same model FLOPs for the three).
- ``clip_b16_image_embedding``: ``encode_image`` (compiled) vs ``get_image_features``, batch 512, images/s.
- ``gpt2_decode_batch1`` / ``gpt2_decode_batch32``: GPT-2 small (random weights, converted from
  transformers'), greedy, 16-token prompts, 128 new tokens (no early end), tokens/s; vlkit calls
  ``generate(..., static_cache=True, compile=True)`` and falls back to the plain call, with a
  printed note, where this checkout's ``generate`` does not take those options yet.
- ``blip_caption_batch8`` / ``blip2_caption_batch8`` / ``vlm_caption_batch8``: greedy captions of
  8 images, 20 new tokens each (forced: ``min_new_tokens``), captions/s: BLIP base, BLIP-2 (its
  default ViT-g and Q-Former, an OPT-125m-sized LLM), a LLaVA-style VLM (CLIP ViT-L/14 at 336
  pixels, a Llama of TinyLlama-1.1B's shape).

On CUDA everything runs under bf16 autocast with the weights in float32 (as training does); the
CPU runs float32. Calls alternate between the libraries (after one warm-up call each, which
compiles) and the median time is reported; ``ratio`` is vlkit's speed over the peer's (above 1:
vlkit is faster). Greedy tokens are compared and reported (``same_tokens``); under bf16 random
weights can make near-ties flip, so a difference there is reported, not an error. The JSON holds
the device, versions, date and every row. transformers and open_clip are test-only dependencies
(without open_clip the training row has no open_clip column).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import AbstractContextManager

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
if not torch.cuda.is_available():  # the CPU venv's torchvision needs the test suite's operator shim
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
    import conftest  # noqa: F401
import transformers

try:
    import open_clip
except ImportError:  # a GPU machine without it: the train row goes without the open_clip column
    open_clip = None

import vlkit
from vlkit.convert import hf_clip
from vlkit.files import write_text
from vlkit.tasks import CLIPTask
from vlkit.train.compile import CompiledLosses
from vlkit.train.flops import clip_train_flops, peak_flops
from vlkit.train.optim import build_optimizer, kernel_choice

ROWS = (
    "clip_b16_train_step",
    "clip_b16_image_embedding",
    "gpt2_decode_batch1",
    "gpt2_decode_batch32",
    "blip_caption_batch8",
    "blip2_caption_batch8",
    "vlm_caption_batch8",
)


class Bench:
    """The run's device, precision, sizes and timing."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.device = torch.device(args.device)
        self.cuda = self.device.type == "cuda"
        self.tiny, self.compile, self.iters = args.tiny, args.compile, args.iters
        self.peak = peak_flops(self.device, args.peak_flops)
        self.generate_options: dict = {"static_cache": True, "compile": args.compile}

    def amp(self) -> AbstractContextManager:
        return torch.autocast("cuda", dtype=torch.bfloat16) if self.cuda else torch.autocast("cpu", enabled=False)

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)

    def medians(self, calls: dict[str, Callable[[], object]], warm_up: bool = True) -> dict[str, float]:
        """Median seconds per call of each function: one warm-up call each (compiling; skipped when
        the caller has made one), then ``iters`` rounds that alternate between them."""
        for fn in calls.values() if warm_up else ():
            fn()
        times: dict[str, list[float]] = {k: [] for k in calls}
        for _ in range(self.iters):
            for name, fn in calls.items():
                self.sync()
                start = time.perf_counter()
                fn()
                self.sync()
                times[name].append(time.perf_counter() - start)
        return {k: statistics.median(v) for k, v in times.items()}

    def generate(self, fn: Callable[..., torch.Tensor], *args, **kwargs) -> torch.Tensor:
        """vlkit's ``generate`` with ``static_cache`` and ``compile``; the plain call (a note printed
        once) when this checkout's GenerationConfig does not have those options."""
        if self.generate_options:
            try:
                return fn(*args, **kwargs, **self.generate_options)
            except TypeError as e:
                if "static_cache" not in str(e) and "compile" not in str(e):
                    raise
                print(f"note: vlkit's generate does not take static_cache/compile here ({e}); timing the plain call")
                self.generate_options = {}
        return fn(*args, **kwargs)


def row(name: str, unit: str, vlkit_value: float, peer: str, peer_value: float, **extra) -> dict:
    return {
        "row": name,
        "unit": unit,
        "vlkit": vlkit_value,
        peer: peer_value,
        "ratio": vlkit_value / peer_value,
        **extra,
    }


# ----------------------------------------------------------------- CLIP
def clip_batch(config, B: int, device: torch.device, seed: int = 0):
    """Random pixels and full-context captions, right-padded, end-of-text (49407) the largest id."""
    g = torch.Generator().manual_seed(seed)
    S, T = config.vision.image_size, config.text.context_length
    pixels = torch.randn(B, 3, S, S, generator=g)
    ids = torch.randint(1, 49406, (B, T), generator=g)
    mask = torch.ones(B, T, dtype=torch.long)
    for r in range(B):
        n = int(torch.randint(5, T + 1, (), generator=g))
        ids[r, n - 1], ids[r, n:], mask[r, n:] = 49407, 0, 0
    return pixels.to(device), ids.to(device), mask.to(device)


def hf_clip_twin(model) -> transformers.CLIPModel:
    ref = transformers.CLIPModel(transformers.CLIPConfig(**hf_clip.config_to_hf(model.config)))
    missing, unexpected = ref.load_state_dict(hf_clip.state_dict_to_hf(model.state_dict()), strict=False)
    if [k for k in missing if not k.endswith("position_ids")] or unexpected:
        raise RuntimeError(f"CLIP weights do not map: missing {missing}, unexpected {unexpected}")
    return ref


def open_clip_like(config) -> torch.nn.Module:
    v, t = config.vision, config.text
    return open_clip.CLIP(
        embed_dim=config.embed_dim,
        vision_cfg=dict(layers=v.depth, width=v.width, head_width=v.width // v.num_heads,
                        mlp_ratio=v.mlp_dim / v.width, patch_size=v.patch_size, image_size=v.image_size),
        text_cfg=dict(context_length=t.context_length, vocab_size=t.vocab_size, width=t.width, heads=t.num_heads,
                      layers=t.depth, mlp_ratio=t.mlp_dim / t.width),
    )  # fmt: skip


def adamw(params, device: torch.device) -> torch.optim.AdamW:
    return torch.optim.AdamW(list(params), lr=1e-5, weight_decay=0.2, **kernel_choice({device.type}))


def train_step(model, loss_fn: Callable[[], torch.Tensor], opt, amp) -> Callable[[], None]:
    def step() -> None:
        with amp():
            loss = loss_fn()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def clip_model(tiny: bool):
    """CLIP ViT-B/16, or for the smoke run clip-tiny with 16-pixel images and 16-token captions."""
    if tiny:
        return vlkit.create_model("clip-tiny", vision={"image_size": 16}, text={"context_length": 16})
    return vlkit.create_model("clip-vit-b-16")


def bench_clip_train(b: Bench) -> dict:
    B = 8 if b.tiny else 256
    torch.manual_seed(0)
    ours = clip_model(b.tiny).to(b.device).train()
    theirs = hf_clip_twin(ours).to(b.device).train()
    pixels, ids, mask = clip_batch(ours.config, B, b.device)
    batch = {"pixel_values": pixels, "input_ids": ids, "attention_mask": mask}
    task = CLIPTask()
    losses = CompiledLosses(task.losses, on_note=print) if b.compile else task.losses
    steps = {
        "vlkit": train_step(
            ours, lambda: losses(ours, batch)["contrastive_loss"], build_optimizer(ours, 1e-5, 0.2), b.amp
        ),
        "transformers": train_step(
            theirs,
            lambda: theirs(input_ids=ids, pixel_values=pixels, attention_mask=mask, return_loss=True).loss,
            adamw(theirs.parameters(), b.device),
            b.amp,
        ),
    }
    if open_clip is not None:
        oc, oc_loss = open_clip_like(ours.config).to(b.device).train(), open_clip.ClipLoss()
        steps["open_clip"] = train_step(
            oc, lambda: oc_loss(*oc(pixels, ids)[:2], oc.logit_scale.exp()), adamw(oc.parameters(), b.device), b.amp
        )
    else:
        print("note: open_clip is not installed: the train row has no open_clip column")
    t = b.medians(steps, warm_up=not b.tiny)
    flops = clip_train_flops(ours.config, batch_size=B, text_length=ids.shape[1])
    mfu = {k: None if b.peak is None else flops / v / b.peak for k, v in t.items()}
    peer = {"open_clip": B / t["open_clip"], "ratio_open_clip": t["open_clip"] / t["vlkit"]} if "open_clip" in t else {}
    return row(
        "clip_b16_train_step", "images/s", B / t["vlkit"], "transformers", B / t["transformers"], **peer, batch=B,
        flops_per_step=flops, mfu=mfu, compiled=b.compile,
    )  # fmt: skip


def bench_clip_embed(b: Bench) -> dict:
    B = 8 if b.tiny else 512
    torch.manual_seed(0)
    ours = clip_model(b.tiny).to(b.device).eval()
    theirs = hf_clip_twin(ours).to(b.device).eval()
    pixels = clip_batch(ours.config, B, b.device)[0]
    encode = torch.compile(ours.encode_image) if b.compile else ours.encode_image

    def run_ours():
        with torch.no_grad(), b.amp():
            return encode(pixels)

    def run_theirs():
        with torch.no_grad(), b.amp():
            return theirs.get_image_features(pixel_values=pixels)

    a, r = run_ours(), run_theirs()
    r = r if isinstance(r, torch.Tensor) else r.pooler_output
    cos = torch.nn.functional.cosine_similarity(a.float(), r.float(), dim=-1).min().item()
    t = b.medians({"vlkit": run_ours, "transformers": run_theirs}, warm_up=False)
    return row("clip_b16_image_embedding", "images/s", B / t["vlkit"], "transformers", B / t["transformers"],
               batch=B, min_cosine_to_transformers=cos, compiled=b.compile)  # fmt: skip


# ----------------------------------------------------------------- decoding
def from_hf(ref, folder: str):
    """vlkit's load of a transformers model (saved to ``folder``)."""
    ref.save_pretrained(folder)
    return vlkit.from_pretrained(folder)


def perturbed(ref):
    """Random weights off transformers' init (zero-initialised parts, e.g. BLIP-2's queries, matter too)."""
    torch.manual_seed(0)
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return ref.eval()


def compare_decoding(b: Bench, name: str, ours_fn, theirs_fn, produced: int, unit: str, **extra) -> dict:
    """Time two generate calls; ``produced``: tokens (or captions) each call makes."""
    a, r = ours_fn(), theirs_fn()
    same = bool(a.shape == r.shape and torch.equal(a.cpu(), r.cpu()))
    t = b.medians({"vlkit": ours_fn, "transformers": theirs_fn}, warm_up=False)
    return row(name, unit, produced / t["vlkit"], "transformers", produced / t["transformers"], same_tokens=same,
               static_cache_and_compile=bool(b.generate_options), **extra)  # fmt: skip


def bench_gpt2(b: Bench, tmp: str) -> list[dict]:
    if b.tiny:
        config = transformers.GPT2Config(vocab_size=99, n_embd=32, n_layer=2, n_head=4, n_positions=64, bos_token_id=2,
                                         eos_token_id=2)  # fmt: skip
        prompt, new = 4, 4
    else:
        config = transformers.GPT2Config()  # GPT-2 small: 124M
        prompt, new = 16, 128
    with b.device:  # built where it runs: a fast initialisation on a GPU
        ref = perturbed(transformers.GPT2LMHeadModel(config))
    ours = from_hf(ref, os.path.join(tmp, "gpt2")).to(b.device).eval()
    ref = ref.to(b.device)
    rows = []
    for B in (1, 32):
        g = torch.Generator().manual_seed(B)
        ids = torch.randint(3, config.vocab_size, (B, prompt), generator=g).to(b.device)  # (B, T), no special ids
        mask = torch.ones_like(ids)  # (transformers would guess one from a pad id among the ids)

        def run_ours(ids=ids):
            with torch.no_grad(), b.amp():
                return b.generate(ours.generate, ids, max_new_tokens=new, eos_token_id=None)

        def run_theirs(ids=ids, mask=mask):
            with torch.no_grad(), b.amp():
                return ref.generate(ids, attention_mask=mask, max_new_tokens=new, min_new_tokens=new, do_sample=False,
                                    pad_token_id=config.eos_token_id)  # fmt: skip

        rows.append(compare_decoding(b, f"gpt2_decode_batch{B}", run_ours, run_theirs, B * new, "tokens/s",
                                     batch=B, new_tokens=new))  # fmt: skip
    return rows


def caption_rows(b: Bench, tmp: str) -> list[dict]:
    B, new = 8, 4 if b.tiny else 20
    rows = []
    for name, build, hf_inputs in (
        ("blip_caption_batch8", blip_models, None),
        ("blip2_caption_batch8", blip2_models, blip2_inputs),
        ("vlm_caption_batch8", vlm_models, vlm_inputs),
    ):
        with b.device:  # built where it runs: a fast initialisation on a GPU
            ref, size = build(b.tiny)
            ref = perturbed(ref)
        ours = from_hf(ref, os.path.join(tmp, name)).to(b.device).eval()
        ref = ref.to(b.device)
        pixels = torch.randn(B, 3, size, size, generator=torch.Generator().manual_seed(1)).to(b.device)
        ours_args, theirs_kwargs, cut = (hf_inputs or (lambda *_: ((), {}, 0)))(ref, ours, B, b.device)
        options = dict(max_new_tokens=new, min_new_tokens=new, num_beams=1)

        def run_ours(ours=ours, pixels=pixels, ours_args=ours_args, options=options):
            with torch.no_grad(), b.amp():
                return b.generate(ours.generate, pixels, *ours_args, **options)

        def run_theirs(ref=ref, pixels=pixels, theirs_kwargs=theirs_kwargs, cut=cut, options=options):
            with torch.no_grad(), b.amp():
                return ref.generate(pixel_values=pixels, do_sample=False, **theirs_kwargs, **options)[:, cut:]

        rows.append(compare_decoding(b, name, run_ours, run_theirs, B, "captions/s", batch=B, new_tokens=new))
    return rows


def blip_models(tiny: bool):
    if not tiny:
        return transformers.BlipForConditionalGeneration(transformers.BlipConfig()), 384
    text = dict(
        vocab_size=99,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=64,
        bos_token_id=90,
        eos_token_id=2,
        pad_token_id=0,
        sep_token_id=3,
    )
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, image_size=32,
                  patch_size=8)  # fmt: skip
    return transformers.BlipForConditionalGeneration(
        transformers.BlipConfig(text_config=text, vision_config=vision)
    ), 32


IMAGE_TOKEN_TINY, IMAGE_TOKEN = 98, 50272  # the last id of the LLM's vocabulary: the image placeholder


def blip2_models(tiny: bool):
    if tiny:
        vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, image_size=32,
                      patch_size=8)  # fmt: skip
        qformer = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                       cross_attention_frequency=1, encoder_hidden_size=32)  # fmt: skip
        text = transformers.OPTConfig(vocab_size=IMAGE_TOKEN_TINY + 1, hidden_size=32, word_embed_proj_dim=32,
                                      num_hidden_layers=2, ffn_dim=64, num_attention_heads=4,
                                      max_position_embeddings=64)  # fmt: skip
        config = transformers.Blip2Config(vision_config=vision, qformer_config=qformer, text_config=text.to_dict(),
                                          num_query_tokens=4, image_token_index=IMAGE_TOKEN_TINY)  # fmt: skip
        return transformers.Blip2ForConditionalGeneration(config), 32
    text = transformers.OPTConfig(vocab_size=IMAGE_TOKEN + 1)  # OPT-125m's shape
    config = transformers.Blip2Config(text_config=text.to_dict(), image_token_index=IMAGE_TOKEN)  # ViT-g, Q-Former
    return transformers.Blip2ForConditionalGeneration(config), 224


def blip2_inputs(ref, ours, B: int, device):
    """transformers' prompt: the image tokens, then BOS; vlkit starts from BOS by itself."""
    Q, bos = ours.config.qformer.num_query_tokens, ours.config.llm.bos_token_id
    ids = torch.tensor([[ref.config.image_token_index] * Q + [bos]] * B, device=device)
    return (), {"input_ids": ids}, Q


def vlm_models(tiny: bool):
    if tiny:
        vision = transformers.CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                                               num_attention_heads=4, image_size=16, patch_size=8)  # fmt: skip
        text = transformers.LlamaConfig(vocab_size=97, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                        num_key_value_heads=2, intermediate_size=64, max_position_embeddings=128,
                                        bos_token_id=2, eos_token_id=2)  # fmt: skip
        config = transformers.LlavaConfig(vision_config=vision, text_config=text, image_token_index=96)
        return transformers.LlavaForConditionalGeneration(config), 16
    vision = transformers.CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                                           num_attention_heads=16, image_size=336, patch_size=14,
                                           projection_dim=768)  # fmt: skip
    text = transformers.LlamaConfig(vocab_size=32064, hidden_size=2048, num_hidden_layers=22, num_attention_heads=32,
                                    num_key_value_heads=4, intermediate_size=5632, max_position_embeddings=2048,
                                    bos_token_id=1, eos_token_id=2)  # fmt: skip
    config = transformers.LlavaConfig(vision_config=vision, text_config=text, image_token_index=32000)
    return transformers.LlavaForConditionalGeneration(config), 336


def vlm_inputs(ref, ours, B: int, device):
    """BOS, the image's tokens (one per patch feature), then a short question, for both."""
    F, image = ours.config.num_image_tokens, ref.config.image_token_index
    words = torch.randint(3, image, (6,), generator=torch.Generator().manual_seed(2)).tolist()
    ids = torch.tensor([[ours.config.text.bos_token_id] + [image] * F + words] * B, device=device)
    return (ids,), {"input_ids": ids}, 0


# ----------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--tiny", action="store_true", help="tiny configs and batches (the CPU smoke run)")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="compile vlkit's step, encoder and decoding (default: on a GPU)")  # fmt: skip
    p.add_argument("--iters", type=int, default=None, help="timed calls per library and row (default 10, tiny 1)")
    p.add_argument("--peak-flops", type=float, default=None, help="the device's peak FLOP/s (default: looked up)")
    p.add_argument("--rows", nargs="*", choices=ROWS, default=list(ROWS))
    p.add_argument("--out", default="bench_gpu.json", help="the JSON file written")
    args = p.parse_args(argv)
    args.compile = torch.device(args.device).type == "cuda" if args.compile is None else args.compile
    args.iters = args.iters or (1 if args.tiny else 10)
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    b = Bench(args)
    where = torch.cuda.get_device_name(b.device) if b.cuda else f"CPU, {torch.get_num_threads()} threads"
    print(f"device {b.device} ({where}), torch {torch.__version__}, transformers {transformers.__version__}, "
          f"open_clip {getattr(open_clip, '__version__', 'not installed')}; {'bf16 autocast' if b.cuda else 'float32'}, compile {b.compile}")  # fmt: skip
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        if "clip_b16_train_step" in args.rows:
            rows.append(bench_clip_train(b))
        if "clip_b16_image_embedding" in args.rows:
            rows.append(bench_clip_embed(b))
        if {"gpt2_decode_batch1", "gpt2_decode_batch32"} & set(args.rows):
            rows += [r for r in bench_gpt2(b, tmp) if r["row"] in args.rows]
        if {r for r in args.rows if r.endswith("_caption_batch8")}:
            rows += [r for r in caption_rows(b, tmp) if r["row"] in args.rows]
    for r in rows:
        mfu = r.get("mfu") or {}
        shown = ", MFU " + " / ".join(f"{k} {v:.1%}" for k, v in mfu.items()) if mfu.get("vlkit") is not None else ""
        print(f"{r['row']:<26} vlkit {r['vlkit']:10.1f} {r['unit']:<11} transformers {r['transformers']:10.1f}  "
              f"ratio {r['ratio']:5.2f}x{shown}", flush=True)  # fmt: skip
    result = {
        "device": where,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d"),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "open_clip": getattr(open_clip, "__version__", None),
        "precision": "bf16 autocast" if b.cuda else "float32",
        "tiny": args.tiny,
        "compile": b.compile,
        "peak_flops": b.peak,
        "rows": rows,
    }
    write_text(args.out, json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
