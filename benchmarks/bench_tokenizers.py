"""Tokenizer speed: vlkit vs open_clip (pure Python) vs HF tokenizers (Rust), in one run.

    .venv/bin/python benchmarks/bench_tokenizers.py [--corpus-mb 10] [--captions 20000] [--rounds 3]

Encoding: the same captions and documents through each tokenizer, in ``--rounds`` + 1 rounds run
in alternation (so a busy machine hurts every contender alike). Every round has its own captions
and documents: "cold" is the first round on fresh tokenizers (empty caches), "warm" the best of
the later rounds, on text not seen before but with caches warmed by the earlier rounds, which is
the steady state of a training loop.
Per-caption latency: one caption per call, padded to 77 ids and returned as a tensor, as a
training loop would ask for it; vlkit's ``tok([caption])`` vs transformers' CLIPTokenizerFast
``tok(caption, padding="max_length", truncation=True, max_length=77, return_tensors="pt")`` vs
``open_clip.tokenize([caption])``.
Training: byte-level BPE and WordPiece on the same corpus (Python standard library sources and
docstrings, ``--corpus-mb`` MB), vlkit's trainer vs HF's BpeTrainer / WordPieceTrainer.

open_clip sets TOKENIZERS_PARALLELISM=false when imported, so HF's Rust batch encoding runs on
one thread here, like vlkit and open_clip.
"""

from __future__ import annotations

import argparse
import datetime
import glob
import importlib.util
import json
import os
import platform
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from vlkit.tokenizers import BPETokenizer, WordPieceTokenizer, get_tokenizer


def load_open_clip_tokenizer():
    """open_clip's tokenizer module alone (the package itself imports torchvision)."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None:
        raise SystemExit("open_clip_torch is needed for this benchmark (pip install --no-deps open_clip_torch)")
    path = os.path.join(spec.submodule_search_locations[0], "tokenizer.py")
    module_spec = importlib.util.spec_from_file_location("open_clip_tokenizer", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def stdlib_text(megabytes: float) -> str:
    """Deterministic text: the Python standard library's sources, in path order."""
    parts, size = [], 0
    for path in sorted(glob.glob(os.path.join(os.path.dirname(os.__file__), "**", "*.py"), recursive=True)):
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        parts.append(text)
        size += len(text.encode())
        if size >= megabytes * 1e6:
            break
    return "".join(parts)


def make_captions(n: int, text: str) -> list[str]:
    """Caption-like sentences: Zipf-distributed words of the corpus in a few templates, plus
    multilingual and emoji captions (every 10th)."""
    import regex

    rng = random.Random(0)
    counts: dict[str, int] = {}
    for w in regex.findall(r"\b[a-z]{3,12}\b", text):
        counts[w] = counts.get(w, 0) + 1
    words = sorted(counts, key=lambda w: (-counts[w], w))[:5000]
    weights = [1 / (i + 1) for i in range(len(words))]
    templates = [
        "a photo of a {} {} next to the {}.",
        "A {} and a {} on a {} in the {}",
        "Two {} {} {} near a {}, at sunset",
        "close-up of the {} with {} {}",
        "{} {} {} {} {} {} {} {}",
    ]
    extra = [
        "一只猫坐在沙发上",
        "Café au lait sur la table, très jolie",
        "🐱🚀 a cat astronaut 👍🏽",
        "Собака бежит по пляжу",
    ]
    out = []
    for i in range(n):
        if i % 10 == 9:
            out.append(f"{rng.choice(extra)} {rng.choice(words)} {i % 97}")
            continue
        t = rng.choice(templates)
        out.append(t.format(*rng.choices(words, weights, k=t.count("{}"))))
    return out


def best_of(rounds: int, contenders: dict) -> dict[str, tuple[float, float]]:
    """{name: (cold seconds, best warm seconds)}; ``contenders[name](r)`` runs round r."""
    cold: dict[str, float] = {}
    warm: dict[str, float] = {name: float("inf") for name in contenders}
    for r in range(rounds + 1):
        for name, fn in contenders.items():
            t = time.perf_counter()
            fn(r)
            dt = time.perf_counter() - t
            if r == 0:
                cold[name] = dt
            else:
                warm[name] = min(warm[name], dt)
    return {name: (cold[name], warm[name]) for name in contenders}


def fmt_ratio(a: float, b: float) -> str:
    return f"{b / a:6.2f}x"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus-mb", type=float, default=10.0, help="training corpus size (MB)")
    ap.add_argument("--captions", type=int, default=5000, help="captions per round")
    ap.add_argument("--latency-captions", type=int, default=1000, help="captions per round, one per call")
    ap.add_argument("--documents", type=int, default=60, help="documents (3 KB) per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--vocab-size", type=int, default=8000)
    args = ap.parse_args()

    import tokenizers
    import torch
    import transformers
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import decoders, models, pre_tokenizers, trainers

    torch.set_num_threads(1)
    oc = load_open_clip_tokenizer()
    corpus = stdlib_text(args.corpus_mb)
    lines = corpus.splitlines(keepends=True)
    n_sets = args.rounds + 1
    all_captions = make_captions(args.captions * n_sets, corpus)
    caption_sets = [all_captions[r::n_sets] for r in range(n_sets)]
    latency_sets = [c[: args.latency_captions] for c in caption_sets]
    doc_size = 3000
    step = max(doc_size, len(corpus) // (args.documents * n_sets))
    all_documents = [corpus[i : i + doc_size] for i in range(0, len(corpus) - doc_size, step)][
        : args.documents * n_sets
    ]
    document_sets = [all_documents[r::n_sets] for r in range(n_sets)]
    captions, documents = caption_sets[0], document_sets[0]
    cap_chars = sum(map(len, captions))
    doc_bytes = sum(len(d.encode()) for d in documents)  # per round (all sets are the same size)
    assert len({len(d) for d in document_sets}) == 1 and len({len(c) for c in caption_sets}) == 1
    print(
        f"vlkit tokenizer benchmark, {datetime.date.today()}, Python {platform.python_version()}, "
        f"{os.cpu_count()} CPU cores ({platform.processor() or platform.machine()}), torch threads 1"
    )
    print(
        f"tokenizers {tokenizers.__version__}, transformers {transformers.__version__}, open_clip tokenizer from "
        f"{oc.__file__}"
    )
    print(
        f"per round: {len(captions)} captions (avg {cap_chars / len(captions):.0f} chars), {len(documents)} documents "
        f"({doc_bytes / 1e6:.2f} MB); training corpus: {len(corpus.encode()) / 1e6:.1f} MB, {len(lines)} lines; "
        f"1 cold + {args.rounds} warm rounds\n"
    )

    tmp = Path(tempfile.mkdtemp(prefix="vlkit-bench-"))
    clip_vlkit = get_tokenizer("clip")
    clip_vlkit.save(tmp / "clip")
    vocab = dict(clip_vlkit.get_vocab())
    vocab["<|startoftext|>"] = vocab.pop("<start_of_text>")
    vocab["<|endoftext|>"] = vocab.pop("<end_of_text>")
    clip_tf = transformers.CLIPTokenizerFast(vocab=vocab, merges=[tuple(m) for m in clip_vlkit.merges])
    clip_rust = clip_tf.backend_tokenizer
    assert clip_vlkit.encode(captions[0], add_special_tokens=True) == clip_rust.encode(captions[0]).ids

    ratios: list[tuple[str, float]] = []
    rows = []

    def fresh_clip():
        return get_tokenizer("clip"), oc.SimpleTokenizer()

    # ---- CLIP encode: captions, one encode call each (cold = fresh tokenizers)
    v, o = fresh_clip()
    res = best_of(
        args.rounds,
        {
            "vlkit": lambda r: [v.encode(c) for c in caption_sets[r]],
            "open_clip": lambda r: [o.encode(c) for c in caption_sets[r]],
            "hf_rust": lambda r: [clip_rust.encode(c) for c in caption_sets[r]],
        },
    )
    rows.append(
        (
            "CLIP encode, captions",
            "us/caption",
            {k: (c / len(captions) * 1e6, w / len(captions) * 1e6) for k, (c, w) in res.items()},
        )
    )
    ratios.append(("CLIP encode vs open_clip (warm)", res["open_clip"][1] / res["vlkit"][1]))
    ratios.append(("CLIP encode vs open_clip (cold)", res["open_clip"][0] / res["vlkit"][0]))

    # ---- CLIP batch call: 256 captions -> (256, 77) tensors
    v, o = fresh_clip()
    batches = [[c[i : i + 256] for i in range(0, len(c), 256)] for c in caption_sets]
    res = best_of(
        args.rounds,
        {
            "vlkit": lambda r: [v(b) for b in batches[r]],
            "open_clip": lambda r: [o(b) for b in batches[r]],
            "hf_rust": lambda r: [
                clip_tf(b, padding="max_length", truncation=True, max_length=77, return_tensors="pt")
                for b in batches[r]
            ],
        },
    )
    rows.append(
        (
            "CLIP batch of 256 -> tensor",
            "us/caption",
            {k: (c / len(captions) * 1e6, w / len(captions) * 1e6) for k, (c, w) in res.items()},
        )
    )
    ratios.append(("CLIP batch call vs open_clip (warm)", res["open_clip"][1] / res["vlkit"][1]))
    ratios.append(("CLIP batch call vs transformers CLIPTokenizerFast (warm)", res["hf_rust"][1] / res["vlkit"][1]))

    # ---- per-caption latency: one caption per call, (1, 77) tensor out
    few = latency_sets[0]
    v, o = fresh_clip()
    res = best_of(
        args.rounds,
        {
            "vlkit": lambda r: [v([c]) for c in latency_sets[r]],
            "open_clip": lambda r: [o([c]) for c in latency_sets[r]],
            "hf_rust": lambda r: [
                clip_tf(c, padding="max_length", truncation=True, max_length=77, return_tensors="pt")
                for c in latency_sets[r]
            ],
        },
    )
    rows.append(
        (
            "CLIP one caption per call",
            "us/caption",
            {k: (c / len(few) * 1e6, w / len(few) * 1e6) for k, (c, w) in res.items()},
        )
    )
    ratios.append(("CLIP latency vs transformers CLIPTokenizerFast (warm)", res["hf_rust"][1] / res["vlkit"][1]))
    ratios.append(("CLIP latency vs transformers CLIPTokenizerFast (cold)", res["hf_rust"][0] / res["vlkit"][0]))

    # ---- CLIP on documents
    v, o = fresh_clip()
    res = best_of(
        args.rounds,
        {
            "vlkit": lambda r: [v.encode(d) for d in document_sets[r]],
            "open_clip": lambda r: [o.encode(d) for d in document_sets[r]],
            "hf_rust": lambda r: [clip_rust.encode(d) for d in document_sets[r]],
        },
    )
    rows.append(
        ("CLIP encode, documents", "MB/s", {k: (doc_bytes / c / 1e6, doc_bytes / w / 1e6) for k, (c, w) in res.items()})
    )
    ratios.append(("CLIP documents vs open_clip (warm)", res["open_clip"][1] / res["vlkit"][1]))

    # ---- WordPiece (bert-base-uncased) on captions and documents, vs HF Rust
    bert = get_tokenizer("bert-base-uncased")
    bert.save(tmp / "bert")
    bert_rust = HFTokenizer.from_file(str(tmp / "bert" / "tokenizer.json"))
    assert bert.encode(captions[0], add_special_tokens=True) == bert_rust.encode(captions[0]).ids
    for label, sets, unit in (("captions", caption_sets, "us/caption"), ("documents", document_sets, "MB/s")):
        b = get_tokenizer("bert-base-uncased")
        items = sets[0]
        res = best_of(
            args.rounds,
            {
                "vlkit": lambda r, b=b, sets=sets: [b.encode(t) for t in sets[r]],
                "hf_rust": lambda r, sets=sets: [bert_rust.encode(t) for t in sets[r]],
            },
        )
        conv = (
            (lambda s, items=items: s / len(items) * 1e6) if unit == "us/caption" else (lambda s: doc_bytes / s / 1e6)
        )
        rows.append((f"WordPiece encode, {label}", unit, {k: (conv(c), conv(w)) for k, (c, w) in res.items()}))
        ratios.append((f"WordPiece {label} vs HF tokenizers Rust (warm)", res["hf_rust"][1] / res["vlkit"][1]))

    # ---- training: byte-level BPE and WordPiece, same corpus
    print(f"training on {len(corpus.encode()) / 1e6:.1f} MB ...", flush=True)
    train_rows = []
    t = time.perf_counter()
    bpe = BPETokenizer.train(lines, args.vocab_size)
    t_vlkit = time.perf_counter() - t
    hf = HFTokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=args.vocab_size,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    t = time.perf_counter()
    hf.train_from_iterator(lines, trainer=trainer)
    t_hf = time.perf_counter() - t
    same = [tuple(m) for m in json.loads(hf.to_str())["model"]["merges"]] == bpe.merges
    train_rows.append(("byte-level BPE", t_vlkit, t_hf, f"identical merges: {'yes' if same else 'NO'}"))
    ratios.append(("BPE training vs HF BpeTrainer", t_hf / t_vlkit))

    t = time.perf_counter()
    wp = WordPieceTokenizer.train(lines, args.vocab_size)
    t_vlkit = time.perf_counter() - t
    from tokenizers import normalizers

    hf_wp = HFTokenizer(models.WordPiece(unk_token="[UNK]"))
    hf_wp.normalizer = normalizers.BertNormalizer(lowercase=True)
    hf_wp.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    wp_trainer = trainers.WordPieceTrainer(
        vocab_size=args.vocab_size, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"], show_progress=False
    )
    t = time.perf_counter()
    hf_wp.train_from_iterator(lines, trainer=wp_trainer)
    t_hf = time.perf_counter() - t
    train_rows.append(
        ("WordPiece", t_vlkit, t_hf, f"vlkit: likelihood score, HF: pair frequency; {wp.vocab_size} tokens")
    )
    ratios.append(("WordPiece training vs HF WordPieceTrainer", t_hf / t_vlkit))

    # ---- byte-level BPE encoding with the trained vocabulary (HF's file, read by vlkit)
    hf.save(str(tmp / "gpt_bpe.json"))
    gpt_vlkit = get_tokenizer(tmp / "gpt_bpe.json")
    assert gpt_vlkit.encode(documents[0]) == hf.encode(documents[0]).ids
    res = best_of(
        args.rounds,
        {
            "vlkit": lambda r: [gpt_vlkit.encode(d) for d in document_sets[r]],
            "hf_rust": lambda r: [hf.encode(d) for d in document_sets[r]],
        },
    )
    rows.append(
        (
            "byte-level BPE encode, documents",
            "MB/s",
            {k: (doc_bytes / c / 1e6, doc_bytes / w / 1e6) for k, (c, w) in res.items()},
        )
    )
    ratios.append(("byte-level BPE documents vs HF tokenizers Rust (warm)", res["hf_rust"][1] / res["vlkit"][1]))

    # ---- report
    print(
        f"\n{'encoding':36s} {'unit':>10s} {'vlkit cold/warm':>17s} {'open_clip cold/warm':>20s} {'HF Rust cold/warm':>18s}"
    )
    for name, unit, vals in rows:
        cells = []
        for k in ("vlkit", "open_clip", "hf_rust"):
            cells.append(f"{vals[k][0]:8.2f}/{vals[k][1]:<8.2f}" if k in vals else f"{'-':>8s}/{'-':<8s}")
        print(f"{name:36s} {unit:>10s} {cells[0]:>17s} {cells[1]:>20s} {cells[2]:>18s}")
    print(f"\n{'training (' + str(args.vocab_size) + ' tokens)':36s} {'vlkit s':>10s} {'HF s':>10s}")
    for name, a, b, note in train_rows:
        print(f"{name:36s} {a:10.1f} {b:10.1f}   {note}")
    print("\nratios (> 1: vlkit faster; for 'vs open_clip' the goal is >= 3, for CLIPTokenizerFast latency >= 1)")
    for name, r in ratios:
        print(f"  {name:62s} {r:6.2f}")


if __name__ == "__main__":
    main()
