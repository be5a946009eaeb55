"""The architecture trade-off, measured: retrieval Recall@1 and wall time of a dual encoder (CLIP),
encoders + fusion (BLIP: ITC shortlist, then ITM re-ranking) and a single stream (ViLT: every
image with every text through the joint encoder) on held-out built-in shapes.

    python benchmarks/bench_architectures.py --clip runs/clip-shapes --blip runs/blip-shapes \\
        --vilt runs/vilt-pretrain-shapes --sizes 50,100,200,500,1000 --plot docs/architectures-retrieval.png

For each collection size N: the first N validation images (seed 0) and their distinct full
captions (M of them; images that share a caption all match it). The images are rendered and
preprocessed before the clock starts; the time covers everything retrieval does after that:
CLIP encodes N images and M texts once and compares them; BLIP does the same with its ITC
features and then runs the ITM head on each query's top ``--rerank-k`` (image and text queries
apart); ViLT runs N x M joint passes. ``--vilt-max`` caps ViLT's sizes (its cost grows with N x M).
One thread (``--threads``), float32, on the CPU; a JSON of every figure is printed.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

import vlkit
from vlkit.data.synthetic import ShapesDataset
from vlkit.eval.joint_retrieval import pair_scores
from vlkit.eval.rerank import itm_rerank_scores, reranked_recall
from vlkit.eval.resolve import load_model_and_tokenizer
from vlkit.eval.retrieval import recall_at_k, similarity_matrix, unique_captions


def held_out(model, n: int):
    """(pixels (n, 3, S, S), distinct captions, positives (n, M)) of the first n validation shapes."""
    size = model.config.vision.image_size if hasattr(model.config, "vision") else model.config.image_size
    ds = ShapesDataset("validation", size=n, seed=0, image_size=size, captions="full")
    transform = vlkit.image_transform(model)
    pixels = torch.stack([transform(ds.image(i)) for i in range(n)])
    texts, positives = unique_captions([ds.caption(i) for i in range(n)])
    return pixels, texts, positives


def _features(model, tokenizer, pixels, texts, batch_size):
    img = torch.cat(
        [model.encode_image(pixels[i : i + batch_size], normalize=True) for i in range(0, len(pixels), batch_size)]
    )
    tok = tokenizer(texts, padding="longest")
    txt = model.encode_text(tok["input_ids"], tok["attention_mask"], normalize=True)
    return similarity_matrix(img, txt)  # (N, M)


@torch.no_grad()
def run_clip(model, tokenizer, pixels, texts, positives, args):
    start = time.perf_counter()
    sim = _features(model, tokenizer, pixels, texts, args.batch_size)
    seconds = time.perf_counter() - start
    return seconds, recall_at_k(sim, positives, (1,))


@torch.no_grad()
def run_blip(model, tokenizer, pixels, texts, positives, args):
    start = time.perf_counter()
    sim = _features(model, tokenizer, pixels, texts, args.batch_size)
    i2t, t2i = itm_rerank_scores(model, tokenizer, pixels, texts, sim, args.rerank_k, batch_size=args.batch_size)
    seconds = time.perf_counter() - start
    return seconds, reranked_recall(i2t, t2i, positives, (1,))


@torch.no_grad()
def run_vilt(model, tokenizer, pixels, texts, positives, args):
    start = time.perf_counter()
    tok = tokenizer(texts, padding="longest")
    scores = pair_scores(model, pixels, tok["input_ids"], tok["attention_mask"], batch_size=args.batch_size)
    seconds = time.perf_counter() - start
    return seconds, recall_at_k(scores, positives, (1,))


RUNNERS = {"clip": run_clip, "blip": run_blip, "vilt": run_vilt}
LABELS = {
    "clip": "dual encoder (CLIP): N + M encodings",
    "blip": "encoders + fusion (BLIP): ITC, ITM re-rank of top k",
    "vilt": "single stream (ViLT): N x M joint passes",
}


def plot(results: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for name in RUNNERS:
        rows = [r for r in results if r["model"] == name]
        if rows:
            ax.plot([r["images"] for r in rows], [r["seconds"] for r in rows], marker="o", label=LABELS[name])
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("collection size N (held-out images; M distinct captions)")
    ax.set_ylabel("retrieval wall time, both directions (s)")
    ax.set_title("Retrieval cost by architecture (1 CPU thread, float32)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for name in RUNNERS:
        p.add_argument(f"--{name}", help=f"{name} model: a run folder or model folder")
    p.add_argument("--sizes", default="50,100,200,500,1000")
    p.add_argument("--vilt-max", type=int, default=1000, help="largest N ViLT is run at")
    p.add_argument("--rerank-k", type=int, default=16)
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--plot", help="write the time-against-size plot here (PNG)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    sizes = [int(s) for s in args.sizes.split(",")]
    results = []
    for name, runner in RUNNERS.items():
        source = getattr(args, name)
        if not source:
            continue
        model, tokenizer = load_model_and_tokenizer(source)
        model = getattr(model, "captioner", model).eval()
        params = model.num_parameters()
        for n in sizes:
            if name == "vilt" and n > args.vilt_max:
                continue
            pixels, texts, positives = held_out(model, n)
            seconds, recall = runner(model, tokenizer, pixels, texts, positives, args)
            row = {"model": name, "parameters": params, "images": n, "texts": len(texts), "seconds": seconds, **recall}
            results.append(row)
            print(json.dumps(row), flush=True)
    if args.plot and results:
        plot(results, args.plot)


if __name__ == "__main__":
    main()
