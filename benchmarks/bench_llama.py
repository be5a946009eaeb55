"""vlkit's Llama vs HF transformers' LlamaForCausalLM: parity and greedy-generation speed, one run.

    python benchmarks/bench_llama.py [--device cuda] [--preset smollm-135m] [--repeats 5] [--threads 1]

Parity: random weights (perturbed so that the choices are clear), float32, 4 prompts of 32 tokens:
the largest logit difference, and whether greedy and beam (3) continuations of 16 tokens are
identical, for a GQA/untied, an MHA/tied/biased, a Qwen2 and a Mistral config.
Speed: greedy decoding of 64 new tokens after 16-token prompts, batch 1 and 8, on the same weights
(``--preset``: a vlkit preset's shape with random weights; default a 4-layer width-256 GQA model
that fits the CPU); runs alternate and the median is reported. A ratio above 1.0 means vlkit is
faster. transformers is a test-only dependency.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
if not torch.cuda.is_available():  # the CPU venv's torchvision needs the test suite's operator shim
    import conftest  # noqa: F401
import transformers

import vlkit
from vlkit.convert.hf_llama import config_to_hf
from vlkit.models.registry import PRESETS


def parity() -> None:
    from test_llama import CASES, V, _hf_model

    for case in sorted(CASES):
        hf = _hf_model(case)
        with tempfile.TemporaryDirectory() as tmp:
            hf.save_pretrained(tmp)
            ours = vlkit.from_pretrained(tmp)
        ids = torch.randint(3, V, (4, 32), generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            diff = (hf(ids).logits - ours(ids)).abs().max().item()
        same = {
            nb: torch.equal(
                hf.generate(ids, max_new_tokens=16, do_sample=False, num_beams=nb, pad_token_id=5),
                ours.generate(ids, max_new_tokens=16, num_beams=nb, pad_token_id=5),
            )
            for nb in (1, 3)
        }
        print(f"{case:<22} max |logit diff| {diff:.1e}   greedy identical {same[1]}   beam-3 identical {same[3]}")


def speed(preset: str | None, device: torch.device, repeats: int) -> None:
    if preset:
        config = PRESETS[preset]()
    else:
        config = vlkit.models.LlamaConfig(
            vocab_size=2000, hidden_size=256, intermediate_size=688, num_layers=4, num_heads=8, num_kv_heads=2,
            max_positions=512,
        )  # fmt: skip
    torch.manual_seed(0)
    ours = vlkit.models.Llama(config).to(device).eval()
    fields = {k: v for k, v in config_to_hf(config).items() if k not in ("architectures", "model_type")}
    ref = transformers.LlamaForCausalLM(transformers.LlamaConfig(**fields)).to(device).eval()
    ref.load_state_dict(vlkit.convert.hf_llama.state_dict_to_hf(ours.state_dict(), config), strict=False)
    if config.tie_word_embeddings:
        ref.tie_weights()
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    amp = (
        torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)
    )
    for batch in (1, 8):
        ids = torch.randint(3, config.vocab_size, (batch, 16), device=device)

        def run_ours(ids=ids):
            with amp:
                return ours.generate(ids, max_new_tokens=64, eos_token_id=None)

        def run_ref(ids=ids):
            with amp:
                return ref.generate(ids, max_new_tokens=64, min_new_tokens=64, do_sample=False, pad_token_id=5)

        same = torch.equal(run_ours(), run_ref())  # also the warm-up
        a, b = [], []
        for _ in range(repeats):
            for fn, out in ((run_ours, a), (run_ref, b)):
                sync()
                t = time.perf_counter()
                fn()
                sync()
                out.append(time.perf_counter() - t)
        ta, tb = statistics.median(a), statistics.median(b)
        print(
            f"greedy batch {batch}: vlkit {ta * 1e3:8.1f} ms   transformers {tb * 1e3:8.1f} ms   "
            f"speed-up {tb / ta:4.2f}x   same tokens {same}"
        )


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--preset", default=None, help="a Llama preset's shape for the speed runs, e.g. smollm-135m")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=1, help="CPU threads (set after the test set-up, which sets 2)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    threads = f", {torch.get_num_threads()} CPU threads" if device.type == "cpu" else ""
    print(f"device {device}{threads}, torch {torch.__version__}, transformers {transformers.__version__}")
    parity()
    speed(args.preset, device, args.repeats)


if __name__ == "__main__":
    main()
