"""Generation speed: vlkit's ``generate`` vs transformers' on the same weights, one run, every family.

    python benchmarks/bench_generation.py [--models gpt2,llama,blip,blip2,llava] [--repeats 5]
        [--new-tokens 24] [--threads 1] [--device cpu|cuda] [--json out.json] [--train-batch 4]

For each model (random weights of the shapes below, built in transformers, saved and read by
``vlkit.from_pretrained``) and batch 1 and 8, greedy decoding of exactly ``--new-tokens`` tokens
(``min_new_tokens`` = ``max_new_tokens``) is timed for transformers and three vlkit variants:
``dynamic`` (the default KV cache, eager), ``static`` (``static_cache=True``, eager) and
``compiled`` (``compile=True``: static cache and a ``torch.compile``d step). Runs are interleaved
(one of each per repeat, after a warm-up that also compiles) and the medians are reported with
the speed-up over transformers (above 1.0: vlkit is faster) and whether every variant gave
transformers' tokens. Image captioning times include the image encoder, as a user's call does.

On the CPU each call is timed twice: wall clock and the process's CPU time
(``time.process_time``). With one thread (the default, ``--threads 1``) CPU time is the work
the call did, unaffected by other jobs taking turns on a shared machine, so it is the figure to
compare there; with several threads use a quiet machine and the wall clock (on a loaded machine
OpenMP's barriers wait for descheduled threads: 2 threads under load ran 10-400x slower per
operation here). The table prints the CPU-time ratio on the CPU and the wall-clock ratio on a GPU.

``--train-batch N`` (0: off) adds the LLaVA training step: forward, loss on the answer tokens,
backward and an AdamW step, vlkit's ``VLM`` (the loss of its logits, and ``scored_lm_loss`` of its text hidden states, which
runs the LM head only on the scored positions) vs transformers' ``LlavaForConditionalGeneration``
on the same weights and batch (N images, 196 image tokens + an 8-token question + a 16-token
answer), the vision tower frozen in both (LLaVA's stage 2: projector and LLM train), runs
interleaved, medians; the losses of the first step must agree (1e-4).

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
import copy
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

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


def timed(fn: Callable[[], Any], sync: Callable[[], None]) -> tuple[float, float]:
    """(wall seconds, this process's CPU seconds) of one call."""
    sync()
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    sync()
    return time.perf_counter() - wall, time.process_time() - cpu


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
    wall: dict[str, list[float]] = {k: [] for k in runs}
    cpu: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(repeats):
        for key, fn in runs.items():
            with torch.no_grad(), amp:
                w, c = timed(fn, sync)
            wall[key].append(w)
            cpu[key].append(c)
    same = {k: torch.equal(outputs[k], outputs["transformers"]) for k in VARIANTS}
    return {
        "model": name,
        "batch": batch,
        "new_tokens": new,
        "median_s": {k: statistics.median(v) for k, v in wall.items()},
        "median_cpu_s": {k: statistics.median(v) for k, v in cpu.items()},
        "first_call_s": warm,
        "same_tokens": same,
    }


def llava_train_step(batch: int, repeats: int, dev: torch.device) -> dict:
    """One LLaVA training step (forward, loss, backward, AdamW), vlkit vs transformers, interleaved."""
    ref, ours, _, _ = build("llava", batch, dev)
    g = torch.Generator().manual_seed(2)
    pixels = torch.randn(batch, 3, 224, 224, generator=g)
    ids = torch.cat([torch.ones(batch, 1, dtype=torch.long), torch.full((batch, 196), V - 1),
                     torch.randint(3, V - 1, (batch, 8 + 16), generator=g)], 1)  # fmt: skip
    return train_step_times(ref, ours, pixels.to(dev), ids.to(dev), answer_tokens=16, repeats=repeats, dev=dev)


def train_step_times(
    ref: torch.nn.Module,
    ours: torch.nn.Module,
    pixels: torch.Tensor,
    ids: torch.Tensor,
    *,
    answer_tokens: int,
    repeats: int,
    dev: torch.device,
) -> dict:
    """Interleaved training steps of a transformers LLaVA and the vlkit VLM read from it: forward,
    the LM loss on the last ``answer_tokens`` of ``ids`` (B, T) (image tokens expanded), backward
    and AdamW over the projector and the LLM (the vision towers frozen). vlkit runs twice, on
    copies of the same weights: ``vlkit`` = ``lm_loss(model(...), labels)`` (logits at every
    position, as transformers), ``vlkit_lm_loss`` = ``scored_lm_loss(model.text_hidden_states(...), ...)`` (the LM head only where a
    label is scored). The first steps' losses must agree (1e-4): the same loss on the same weights."""
    from vlkit.losses.lm import lm_loss, scored_lm_loss

    labels = ids.masked_fill(torch.arange(ids.shape[1], device=ids.device) < ids.shape[1] - answer_tokens, -100)
    for model, tower in ((ref, ref.model.vision_tower), (ours, ours.visual)):
        model.train()
        tower.requires_grad_(False)
    scored = copy.deepcopy(ours)  # the same weights, trained through scored_lm_loss
    models = {"transformers": ref, "vlkit": ours, "vlkit_lm_loss": scored}
    opts = {
        key: torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-5) for key, m in models.items()
    }
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if dev.type == "cuda" else torch.autocast("cpu", enabled=False)
    losses: dict[str, float] = {}

    def step(key: str) -> None:
        with amp:
            if key == "transformers":
                loss = ref(input_ids=ids, pixel_values=pixels, labels=labels).loss
            elif key == "vlkit":
                loss = lm_loss(ours(pixels, ids), labels, label_smoothing=0.0)
            else:  # the LM head only where a label is scored
                loss = scored_lm_loss(scored.text_hidden_states(pixels, ids), labels, scored.llm.logits)
        opts[key].zero_grad(set_to_none=True)
        loss.backward()
        opts[key].step()
        losses.setdefault(key, float(loss.detach()))

    for key in opts:  # warm-up: the first step also allocates the optimizer state
        step(key)
    if max(abs(v - losses["transformers"]) for v in losses.values()) > 1e-4:
        raise RuntimeError(f"llava training step: first losses differ: {losses}")
    wall: dict[str, list[float]] = {k: [] for k in opts}
    cpu: dict[str, list[float]] = {k: [] for k in opts}
    for _ in range(repeats):
        for key in opts:
            w, c = timed(lambda key=key: step(key), sync)
            wall[key].append(w)
            cpu[key].append(c)
    return {
        "batch": int(ids.shape[0]),
        "tokens": int(ids.shape[1]),
        "first_loss": losses,
        "median_s": {k: statistics.median(v) for k, v in wall.items()},
        "median_cpu_s": {k: statistics.median(v) for k, v in cpu.items()},
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default="gpt2,llama,blip,blip2,llava")
    p.add_argument("--batches", default="1,8")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--new-tokens", type=int, default=24)
    p.add_argument("--threads", type=int, default=1, help="CPU threads (default 1: see the module's notes)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--train-batch", type=int, default=4, help="LLaVA training step batch (0: skip it)")
    p.add_argument("--json", default=None, help="also write the results here")
    args = p.parse_args()
    torch.set_num_threads(args.threads)  # after conftest's import, which sets its own
    transformers.logging.set_verbosity_error()
    dev = torch.device(args.device)
    where = (
        torch.cuda.get_device_name()
        if dev.type == "cuda"
        else f"{platform.processor() or 'CPU'}, {torch.get_num_threads()} threads, load {os.getloadavg()[0]:.1f}"
    )
    clock = "median_cpu_s" if dev.type == "cpu" and args.threads == 1 else "median_s"  # CPU time sums threads
    print(f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {dev} ({where}); torch {torch.__version__}, "
          f"transformers {transformers.__version__}; greedy, {args.new_tokens} new tokens, median of {args.repeats}; "
          f"{'CPU' if clock == 'median_cpu_s' else 'wall'} time")  # fmt: skip
    print("| model | batch | transformers ms | vlkit dynamic ms (x) | static ms (x) | compiled ms (x) | same tokens |")
    print("|---|---|---|---|---|---|---|")
    results: list[dict] = []
    for name in (m for m in args.models.split(",") if m):
        for batch in (int(b) for b in args.batches.split(",")):
            r = measure(name, batch, args.new_tokens, args.repeats, dev)
            results.append(r)
            m = r[clock]
            cells = " | ".join(f"{m[k] * 1e3:.0f} ({m['transformers'] / m[k]:.2f}x)" for k in VARIANTS)
            print(f"| {name} | {batch} | {m['transformers'] * 1e3:.0f} | {cells} | {r['same_tokens']} |", flush=True)
    train = None
    if args.train_batch:
        train = llava_train_step(args.train_batch, args.repeats, dev)
        m = train[clock]
        print(f"\nllava training step (batch {train['batch']}, {train['tokens']} tokens, AdamW, vision frozen): "
              f"transformers {m['transformers'] * 1e3:.0f} ms, vlkit {m['vlkit'] * 1e3:.0f} ms "
              f"({m['transformers'] / m['vlkit']:.2f}x), vlkit with scored_lm_loss {m['vlkit_lm_loss'] * 1e3:.0f} ms "
              f"({m['transformers'] / m['vlkit_lm_loss']:.2f}x); first losses {train['first_loss']}")  # fmt: skip
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": str(dev), "where": where, "torch": torch.__version__, "results": results,
                       "llava_train": train}, f, indent=1)  # fmt: skip


if __name__ == "__main__":
    main()
