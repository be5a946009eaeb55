"""BLIP-2 captioning: vlkit's ``Blip2.generate`` vs transformers' ``Blip2ForConditionalGeneration.generate``
on the same random weights, timed side by side in one run.

    python benchmarks/bench_blip2.py [--device cuda] [--repeats 5] [--new-tokens 20]

The model is a scaled-down BLIP-2 (ViT 224 px / 16, width 384, 4 layers; Q-Former width 384,
4 layers, 32 queries, cross-attention every second layer; an OPT LLM of width 512, 6 layers),
captioning greedily from BOS at batch 1 and 8 (float32 on the CPU, bf16 autocast on a GPU). Both
must produce the same tokens. Runs alternate between the libraries and the median is reported; a
ratio below 1.0 means vlkit is faster. transformers is a test-only dependency.
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

IMAGE_TOKEN = 1000  # the last id of the LLM's vocabulary: transformers' image placeholder


def hf_model() -> transformers.Blip2ForConditionalGeneration:
    vision = dict(hidden_size=384, intermediate_size=1536, num_hidden_layers=4, num_attention_heads=6, image_size=224,
                  patch_size=16)  # fmt: skip
    qformer = dict(hidden_size=384, intermediate_size=1536, num_hidden_layers=4, num_attention_heads=6,
                   cross_attention_frequency=2)  # fmt: skip
    text = transformers.OPTConfig(vocab_size=IMAGE_TOKEN + 1, hidden_size=512, word_embed_proj_dim=512,
                                  num_hidden_layers=6, ffn_dim=2048, num_attention_heads=8, max_position_embeddings=128)  # fmt: skip
    config = transformers.Blip2Config(vision_config=vision, qformer_config=qformer, text_config=text.to_dict(),
                                      num_query_tokens=32, image_token_index=IMAGE_TOKEN)  # fmt: skip
    return transformers.Blip2ForConditionalGeneration(config).eval()


def timed(fn, sync) -> float:
    sync()
    t = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - t


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--new-tokens", type=int, default=20)
    args = p.parse_args()
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
    ta, tb = statistics.median(a), statistics.median(b)
    print(
        f"caption, batch {batch}, {new_tokens} new tokens: vlkit {ta * 1e3:8.1f} ms   "
        f"transformers {tb * 1e3:8.1f} ms   ratio {ta / tb:5.2f}   speed-up {tb / ta:4.2f}x   same tokens: {same}"
    )


if __name__ == "__main__":
    main()
