"""vlkit vs HF transformers, same weights and inputs, timed side by side in one run.

    python benchmarks/bench_models.py [--device cuda] [--repeats 7]

* BERT-base-shaped encoder: forward + backward (batch 8 x 128 tokens on the CPU).
* GPT-2-small-shaped greedy generation on the KV cache (prompt 16, 64 new tokens).
Runs alternate between the two libraries and the median is reported, so drifting machine load
hits both alike. A ratio below 1.0 means vlkit is faster. transformers is a test-only dependency.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import torch

if not torch.cuda.is_available():  # the CPU venv's torchvision needs the test suite's operator shim
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
    import conftest  # noqa: F401
import transformers

import vlkit


def timed(fn, sync) -> float:
    sync()
    t = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - t


def compare(name, ours, theirs, repeats, sync):
    ours(), theirs()  # warm-up
    a, b = [], []
    for _ in range(repeats):
        a.append(timed(ours, sync))
        b.append(timed(theirs, sync))
    ta, tb = statistics.median(a), statistics.median(b)
    print(f"{name:<44} vlkit {ta * 1e3:9.1f} ms   transformers {tb * 1e3:9.1f} ms   ratio {ta / tb:5.2f}")
    return ta / tb


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--batch", type=int, default=8)
    args = p.parse_args()
    dev = torch.device(args.device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if dev.type == "cuda" else torch.autocast("cpu", enabled=False)
    print(
        f"device {dev} ({torch.cuda.get_device_name() if dev.type == 'cuda' else f'{torch.get_num_threads()} CPU threads'}),"
        f" torch {torch.__version__}, transformers {transformers.__version__}"
    )
    torch.manual_seed(0)
    ratios = {}
    with tempfile.TemporaryDirectory() as tmp:
        # BERT-base encoder, forward + backward
        ref = transformers.BertModel(transformers.BertConfig(attn_implementation="sdpa")).to(dev).train()
        ref.save_pretrained(f"{tmp}/bert")
        ours = vlkit.from_pretrained(f"{tmp}/bert").to(dev).train()
        B, T = args.batch * (4 if dev.type == "cuda" else 1), 128
        ids = torch.randint(1000, 30000, (B, T), device=dev)
        mask = torch.ones_like(ids)
        mask[: B // 2, 96:] = 0

        def step_ours():
            with amp:
                ours.encode(ids, mask).float().pow(2).mean().backward()

        def step_ref():
            with amp:
                ref(input_ids=ids, attention_mask=mask).last_hidden_state.float().pow(2).mean().backward()

        ratios["bert"] = compare(f"BERT-base fwd+bwd ({B}x{T})", step_ours, step_ref, args.repeats, sync)
        del ref, ours

        # GPT-2 small greedy generation
        ref = transformers.GPT2LMHeadModel(transformers.GPT2Config(attn_implementation="sdpa")).to(dev).eval()
        ref.save_pretrained(f"{tmp}/gpt2")
        ours = vlkit.from_pretrained(f"{tmp}/gpt2").to(dev).eval()
        prompt = torch.randint(0, 50000, (1, 16), device=dev)
        new = 64

        def gen_ours():
            with amp:
                return ours.generate(prompt, max_new_tokens=new, eos_token_id=None)

        def gen_ref():
            with amp:
                return ref.generate(prompt, max_new_tokens=new, do_sample=False, eos_token_id=None, pad_token_id=0)

        with torch.no_grad():
            assert torch.equal(gen_ours(), gen_ref()), "greedy generations differ"
        ratios["gpt2"] = compare(f"GPT-2 small greedy generate (16 + {new})", gen_ours, gen_ref, args.repeats, sync)
    print(
        "ratios (vlkit / transformers; <= 1.0 means vlkit is no slower):",
        ", ".join(f"{k} {v:.2f}" for k, v in ratios.items()),
    )


if __name__ == "__main__":
    main()
