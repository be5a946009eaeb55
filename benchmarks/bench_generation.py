"""Generation speed: vlkit's ``generate`` vs transformers' on the same weights, one run, every family.

    python benchmarks/bench_generation.py [--models gpt2,llama,blip,blip2,llava] [--repeats 5]
        [--new-tokens 24] [--threads N] [--device cpu|cuda] [--json out.json]

For each model (random weights of the shapes below, built in transformers, saved and read by
``vlkit.from_pretrained``) and batch 1 and 8, greedy decoding of exactly ``--new-tokens`` tokens
(``min_new_tokens`` = ``max_new_tokens``) is timed for transformers and three vlkit variants:
``dynamic`` (the default KV cache, eager), ``static`` (``static_cache=True``, eager) and
``compiled`` (``compile=True``: static cache and a ``torch.compile``d step). Runs are interleaved
(one of each per repeat, after a warm-up that also compiles) and the medians are reported with
the speed-up over transformers (above 1.0: vlkit is faster) and whether every variant gave
transformers' tokens. Image captioning times include the image encoder, as a user's call does.

Shapes (CPU-sized; float32 on the CPU, bf16 autocast on a GPU):
  gpt2   GPT-2, width 384, 6 layers, vocabulary 8192; 16-token prompts
  llama  Llama, width 384, 6 layers, 6 heads sharing 2 key/value heads, vocabulary 8192; 16-token prompts
  blip   BLIP captioning: ViT 224/16 width 384 x 4, text decoder width 384 x 4; from [DEC]
  blip2  BLIP-2 (as benchmarks/bench_blip2.py): ViT 224/16 width 384 x 4, Q-Former 384 x 4 with 32
         queries, OPT width 512 x 6; from BOS
  llava  LLaVA: CLIP ViT 224/16 width 384 x 4 (196 image tokens), the Llama above; an 8-token question
transformers is a test-only dependency.
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
from collections.abc import Callable

import torch

if not torch.cuda.is_available():  # the CPU venv's torchvision needs the test suite's operator shim
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
    import conftest  # noqa: F401
import transformers

import vlkit

V = 8192  # vocabulary of every language model here
VISION = dict(hidden_size=384, intermediate_size=1536, num_hidden_layers=4, num_attention_heads=6, image_size=224,
              patch_size=16)  # fmt: skip


def _llama_config(**kw) -> transformers.LlamaConfig:
    return transformers.LlamaConfig(
        vocab_size=V, hidden_size=384, intermediate_size=1024, num_hidden_layers=6, num_attention_heads=6,
        num_key_value_heads=2, max_position_embeddings=512, bos_token_id=1, eos_token_id=2, **kw,
    )  # fmt: skip


def _perturbed(model: torch.nn.Module) -> torch.nn.Module:
    """Random weights moved off their init (zero queries, unit norms) so that every part matters."""
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return model.eval()


def build(name: str, batch: int, dev: torch.device) -> tuple[torch.nn.Module, torch.nn.Module, Callable, Callable]:
    """(transformers model, vlkit model, run_ref(**options), run_ours(**options)) for a batch."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    if name == "gpt2":
        ref = transformers.GPT2LMHeadModel(transformers.GPT2Config(vocab_size=V, n_embd=384, n_layer=6, n_head=6,
                                                                   n_positions=512, bos_token_id=V - 2, eos_token_id=V - 2))  # fmt: skip
    elif name == "llama":
        ref = transformers.LlamaForCausalLM(_llama_config())
    elif name == "blip":
        text = dict(vocab_size=V, hidden_size=384, intermediate_size=1536, num_hidden_layers=4, num_attention_heads=6,
                    max_position_embeddings=512, bos_token_id=V - 3, sep_token_id=V - 2, pad_token_id=0)  # fmt: skip
        ref = transformers.BlipForConditionalGeneration(transformers.BlipConfig(text_config=text, vision_config=VISION))
    elif name == "blip2":
        opt = transformers.OPTConfig(vocab_size=V, hidden_size=512, word_embed_proj_dim=512, num_hidden_layers=6,
                                     ffn_dim=2048, num_attention_heads=8, max_position_embeddings=512)  # fmt: skip
        qformer = dict(hidden_size=384, intermediate_size=1536, num_hidden_layers=4, num_attention_heads=6,
                       cross_attention_frequency=2)  # fmt: skip
        ref = transformers.Blip2ForConditionalGeneration(transformers.Blip2Config(
            vision_config=VISION, qformer_config=qformer, text_config=opt.to_dict(), num_query_tokens=32,
            image_token_index=V - 1))  # fmt: skip
    elif name == "llava":
        vision = transformers.CLIPVisionConfig(**VISION)
        ref = transformers.LlavaForConditionalGeneration(transformers.LlavaConfig(
            vision_config=vision, text_config=_llama_config(tie_word_embeddings=False), image_token_index=V - 1,
            vision_feature_layer=-2, vision_feature_select_strategy="default"))  # fmt: skip
    else:
        raise ValueError(f"unknown model {name!r}; expected gpt2, llama, blip, blip2 or llava")
    ref = _perturbed(ref)
    with tempfile.TemporaryDirectory() as tmp:
        ref.save_pretrained(tmp)
        ours = vlkit.from_pretrained(tmp).to(dev).eval()
    ref = ref.to(dev)
    pixels = torch.randn(batch, 3, 224, 224, generator=g).to(dev)
    if name in ("gpt2", "llama"):
        ids = torch.randint(3, V - 1, (batch, 16), generator=g).to(dev)
        return ref, ours, lambda **o: ref.generate(ids, **o), lambda **o: ours.generate(ids, **o)
    if name == "blip":
        return ref, ours, lambda **o: ref.generate(pixel_values=pixels, **o), lambda **o: ours.generate(pixels, **o)
    if name == "blip2":
        Q, bos = 32, ours.config.llm.bos_token_id
        hf_ids = torch.tensor([[V - 1] * Q + [bos]] * batch, device=dev)
        return (ref, ours, lambda **o: ref.generate(pixel_values=pixels, input_ids=hf_ids, **o),
                lambda **o: ours.generate(pixels, **o))  # fmt: skip
    question = torch.randint(3, V - 1, (batch, 8), generator=g).to(dev)
    ids = torch.cat([torch.full((batch, 1), 1, device=dev), torch.full((batch, 196), V - 1, device=dev), question], 1)
    return (ref, ours, lambda **o: ref.generate(input_ids=ids, pixel_values=pixels, **o),
            lambda **o: ours.generate(pixels, ids, **o))  # fmt: skip


VARIANTS = {"dynamic": {}, "static": {"static_cache": True}, "compiled": {"compile": True}}


def measure(name: str, batch: int, new: int, repeats: int, dev: torch.device) -> dict:
    """Interleaved timings of transformers and the vlkit variants; medians in seconds."""
    ref, ours, run_ref, run_ours = build(name, batch, dev)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if dev.type == "cuda" else torch.autocast("cpu", enabled=False)
    options = dict(max_new_tokens=new, min_new_tokens=new, num_beams=1)
    pad = getattr(ref.generation_config, "pad_token_id", None)
    runs: dict[str, Callable] = {
        "transformers": lambda: run_ref(do_sample=False, pad_token_id=0 if pad is None else pad, **options)
    }
    for variant, extra in VARIANTS.items():
        runs[variant] = lambda extra=extra: run_ours(**options, **extra)
    outputs, warm = {}, {}
    for key, fn in runs.items():  # warm-up (and compilation), the tokens compared
        t = time.perf_counter()
        with torch.no_grad(), amp:
            outputs[key] = fn()[:, -new:].cpu()
        sync()
        warm[key] = time.perf_counter() - t
    times: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(repeats):
        for key, fn in runs.items():
            sync()
            t = time.perf_counter()
            with torch.no_grad(), amp:
                fn()
            sync()
            times[key].append(time.perf_counter() - t)
    med = {k: statistics.median(v) for k, v in times.items()}
    same = {k: torch.equal(outputs[k], outputs["transformers"]) for k in VARIANTS}
    return {
        "model": name,
        "batch": batch,
        "new_tokens": new,
        "median_s": med,
        "first_call_s": warm,
        "same_tokens": same,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default="gpt2,llama,blip,blip2,llava")
    p.add_argument("--batches", default="1,8")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--new-tokens", type=int, default=24)
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--json", default=None, help="also write the results here")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()
    dev = torch.device(args.device)
    where = (
        torch.cuda.get_device_name()
        if dev.type == "cuda"
        else f"{platform.processor() or 'CPU'}, {torch.get_num_threads()} threads"
    )
    print(f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {dev} ({where}); torch {torch.__version__}, "
          f"transformers {transformers.__version__}; greedy, {args.new_tokens} new tokens, median of {args.repeats}")  # fmt: skip
    print("| model | batch | transformers ms | vlkit dynamic ms (x) | static ms (x) | compiled ms (x) | same tokens |")
    print("|---|---|---|---|---|---|---|")
    results = []
    for name in args.models.split(","):
        for batch in (int(b) for b in args.batches.split(",")):
            r = measure(name, batch, args.new_tokens, args.repeats, dev)
            results.append(r)
            m = r["median_s"]
            cells = " | ".join(f"{m[k] * 1e3:.0f} ({m['transformers'] / m[k]:.2f}x)" for k in VARIANTS)
            print(f"| {name} | {batch} | {m['transformers'] * 1e3:.0f} | {cells} | {r['same_tokens']} |", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": str(dev), "where": where, "torch": torch.__version__, "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
