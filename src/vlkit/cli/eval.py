"""``vlkit eval <kind>``: evaluate a trained or pretrained model.

    vlkit eval zeroshot  --model runs/clip-shapes                      # built-in shapes: shape and colour
    vlkit eval zeroshot  --model M --annotations labels.csv --templates "a photo of a {}."
    vlkit eval retrieval --model runs/clip-shapes                      # Recall@1/5/10 both ways
    vlkit eval retrieval --model M --annotations pairs.jsonl --root images/
    vlkit eval retrieval --model runs/blip-shapes --rerank itm        # BLIP: ITC top-k re-ranked by ITM
    vlkit eval captioning --model runs/blip-shapes                     # BLEU-1..4, CIDEr-D, exact match
    vlkit eval captioning --model M --annotations pairs.csv --root images/
    vlkit eval vqa --model runs/blip-shapes                            # VQA accuracy of generated answers
    vlkit eval vqa --model M --annotations qa.jsonl --answers all      # rank the closed answer set

``--model`` is read by :func:`vlkit.eval.load_model` (a model folder, a run folder of ``vlkit
train``, a training checkpoint ``.pt``, anything ``vlkit.from_pretrained`` reads) and its
tokenizer by :func:`vlkit.eval.load_tokenizer`. For ``vqa`` a captioning BLIP folder whose
``vqa/`` sub-folder holds a VQA model (what the ``blip-vqa`` recipe saves) stands for that VQA
model. The evaluations themselves live in :mod:`vlkit.eval.harness` (re-rankers: its
``RERANKERS``, re-exported here) and their data in :mod:`vlkit.eval.datasets`.

Adding an evaluation: write ``add_<kind>(kinds)`` that registers a sub-parser (use
:func:`add_evaluation_parser`: it adds the model and data arguments) with
``set_defaults(run=handler)``, and list it in ``EVALUATIONS``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ..eval.datasets import (
    DataSource,
    captioning_data,
    parse_classes,
    read_answer_list,
    retrieval_data,
    vqa_data,
    zeroshot_data,
)
from ..eval.harness import (
    RERANKERS,
    Evaluation,
    evaluate_captioning,
    evaluate_retrieval,
    evaluate_vqa,
    evaluate_zeroshot,
)
from ..eval.resolve import captioner, load_model_and_tokenizer, require_captioner, vqa_model
from ..runtime import check_precision, resolve_device
from .embed import add_precision_argument
from .generation_options import add_generation_arguments, generation_config_from_args
from .output import write_json

__all__ = [
    "EVALUATIONS",
    "RERANKERS",
    "add_commands",
    "add_data_arguments",
    "add_evaluation_parser",
    "add_model_arguments",
]


# ---------------------------------------------------------------------------- shared helpers
def _progress() -> bool:
    """Progress bars on a terminal only (a log file gets no bar updates)."""
    return sys.stderr.isatty()


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        required=True,
        help="model folder, run folder, training checkpoint (.pt), or anything vlkit.from_pretrained reads",
    )
    p.add_argument(
        "--tokenizer",
        default=None,
        help="tokenizer name or folder, or 'shapes' (default: the checkpoint's or the model folder's, else "
        "bert-base-uncased for BLIP and ALBEF, clip for the others)",
    )
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:N, mps")
    add_precision_argument(p)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch CPU threads (default 0: torch's choice); 1 is much faster for tiny models on a busy machine",
    )
    p.add_argument("--json", dest="json_out", metavar="FILE", help="also write the metrics to this JSON file")


def add_data_arguments(p: argparse.ArgumentParser, what: str) -> None:
    g = p.add_argument_group("data (default: the built-in shapes' validation split)")
    g.add_argument("--annotations", help=f"CSV or JSONL file of {what}")
    g.add_argument("--root", help="folder the image paths are relative to (default: the annotation file's)")
    g.add_argument("--image-key", help="image column (default: image/filepath/file/path/image_path)")
    g.add_argument("--size", type=int, default=1000, help="shapes: number of validation images (default 1000)")
    g.add_argument("--seed", type=int, default=0, help="shapes: data seed (default 0)")


def add_evaluation_parser(kinds, name: str, rows: str, *, help: str, description: str) -> argparse.ArgumentParser:
    """The sub-parser of ``vlkit eval NAME`` with the model arguments and the data arguments (an
    annotation file of ``rows``)."""
    p = kinds.add_parser(name, help=help, description=description)
    add_model_arguments(p)
    add_data_arguments(p, rows)
    return p


def _data_source(args) -> DataSource:
    return DataSource(
        annotations=args.annotations, root=args.root, image_key=args.image_key, size=args.size, seed=args.seed
    )


def set_threads(args) -> None:
    if getattr(args, "threads", 0) < 0:
        raise ValueError(f"--threads must be >= 0, got {args.threads}")
    if getattr(args, "threads", 0) > 0:
        torch.set_num_threads(args.threads)


def _prepare(args) -> torch.device:
    """Threads and device from the arguments, checked before any model is read."""
    set_threads(args)
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    check_precision(args.precision, "--precision")
    return resolve_device(args.device)


def _load(
    args, device: torch.device, pick: Callable[[nn.Module, str], nn.Module] | None = None
) -> tuple[nn.Module, Any]:
    """(the model ``--model`` names on ``device``, its tokenizer). ``pick(model, source)`` narrows
    it to the model the evaluation needs (default: the captioner of a blip-vqa pair, else itself)."""
    model, tokenizer = load_model_and_tokenizer(args.model, args.tokenizer)
    return (pick(model, args.model) if pick is not None else captioner(model)).to(device).eval(), tokenizer


def report(result: Evaluation, json_out: str | None, title: str, show: int = 0) -> None:
    """Print the skipped images, up to ``show`` examples and the metrics; write them to ``json_out``."""
    if len(result.skipped):
        print(result.skipped.summary())
    for prediction, reference in result.examples[: max(show, 0)]:
        print(f"  {prediction!r}  (reference: {reference!r})")
    metrics = result.metrics
    print(title)
    width = max(len(k) for k in metrics)
    for k, v in metrics.items():
        print(f"  {k:<{width}}  {v:.2f}" if isinstance(v, float) else f"  {k:<{width}}  {v}")
    if json_out:
        write_json(json_out, metrics)


# ---------------------------------------------------------------------------- zeroshot
def add_zeroshot(kinds) -> None:
    p = add_evaluation_parser(
        kinds,
        "zeroshot",
        "(image, label) rows",
        help="zero-shot classification: class names x prompt templates, top-1/top-5",
        description="Zero-shot classification. Built-in shapes: by shape and by colour on held-out "
        "images. Your data: --annotations with an image and a label column.",
    )
    p.add_argument("--label-key", default="label", help="label column (default: label)")
    p.add_argument(
        "--classes", help="comma-separated class names, or a file with one per line (default: the labels seen)"
    )
    p.add_argument(
        "--templates",
        action="append",
        help="prompt template with {} for the class name (repeatable; default: 'a photo of a {}.')",
    )
    p.set_defaults(run=run_zeroshot)


def run_zeroshot(args) -> int:
    device = _prepare(args)
    model, tokenizer = _load(args, device)
    images, tasks = zeroshot_data(
        model,
        _data_source(args),
        label_key=args.label_key,
        classes=parse_classes(args.classes),
        templates=args.templates,
    )
    result = evaluate_zeroshot(
        model,
        tokenizer,
        images,
        tasks,
        batch_size=args.batch_size,
        device=device,
        precision=args.precision,
        progress=_progress(),
    )
    report(result, args.json_out, "zero-shot accuracy (%)")
    return 0


# ---------------------------------------------------------------------------- retrieval
def add_retrieval(kinds) -> None:
    p = add_evaluation_parser(
        kinds,
        "retrieval",
        "(image, caption) rows",
        help="image-text retrieval: Recall@1/5/10 both ways",
        description="Image->text and text->image retrieval. Built-in shapes: held-out images and "
        "their full captions (images sharing a caption all count as matches). Your data: "
        "--annotations of (image, caption) rows; rows with the same image are its captions.",
    )
    p.add_argument("--caption-key", help="caption column (default: caption/text/title)")
    p.add_argument(
        "--rerank",
        default="none",
        choices=["none", *sorted(RERANKERS)],
        help="re-rank the top candidates with another scorer",
    )
    p.add_argument("--rerank-k", type=int, default=16, help="candidates per query to re-rank (default 16)")
    p.set_defaults(run=run_retrieval)


def run_retrieval(args) -> int:
    device = _prepare(args)
    rerank = None if args.rerank == "none" else args.rerank
    model, tokenizer = _load(args, device)
    images, texts, positives = retrieval_data(model, _data_source(args), caption_key=args.caption_key)
    result = evaluate_retrieval(
        model,
        tokenizer,
        images,
        texts,
        positives,
        batch_size=args.batch_size,
        device=device,
        precision=args.precision,
        rerank=rerank,
        rerank_k=args.rerank_k,
        progress=_progress(),
    )
    report(result, args.json_out, "retrieval Recall@K (%)" + (f", re-ranked by {rerank}" if rerank else ""))
    return 0


# ---------------------------------------------------------------------------- captioning
def add_captioning(kinds) -> None:
    p = add_evaluation_parser(
        kinds,
        "captioning",
        "(image, caption) rows",
        help="image captioning: BLEU-1..4, CIDEr-D, exact match",
        description="Caption images with a BLIP and score the captions against references "
        "(BLEU-1..4 and CIDEr-D as pycocoevalcap computes them, exact match in percent). Built-in "
        "shapes: held-out images and their canonical captions. Your data: --annotations of "
        "(image, caption) rows; rows with the same image are its reference captions.",
    )
    p.add_argument("--caption-key", help="caption column (default: caption/text/title)")
    p.add_argument("--prompt", default=None, help='text the captions continue (e.g. "a picture of "); not scored')
    add_generation_arguments(p, beams=3, max_new=20, min_length=5)
    p.add_argument("--show", type=int, default=5, help="print this many (caption, reference) examples (default 5)")
    p.set_defaults(run=run_captioning, batch_size=64)


def run_captioning(args) -> int:
    device = _prepare(args)
    model, tokenizer = _load(args, device, require_captioner)
    images, references = captioning_data(model, _data_source(args), caption_key=args.caption_key)
    result = evaluate_captioning(
        model,
        tokenizer,
        images,
        references,
        batch_size=args.batch_size,
        device=device,
        precision=args.precision,
        prompt=args.prompt,
        progress=_progress(),
        generation_config=generation_config_from_args(args),
    )
    report(result, args.json_out, "captioning (BLEU and CIDEr-D as pycocoevalcap; exact match in %)", show=args.show)
    return 0


# ---------------------------------------------------------------------------- vqa
def add_vqa(kinds) -> None:
    p = add_evaluation_parser(
        kinds,
        "vqa",
        "(image, question, answer[s]) rows",
        help="visual question answering: VQA accuracy",
        description="Answer questions about images with a BLIP VQA model and score the answers with "
        "the official VQA accuracy (a question with one answer counts it as ten agreeing "
        "annotators) and exact match. Built-in shapes: a question about each held-out image, "
        "with accuracy per question type. Your data: --annotations of (image, question, "
        "answer or answers) rows.",
    )
    p.add_argument("--question-key", help="question column (default: question)")
    p.add_argument("--answer-key", help="answer column (default: answers, else answer)")
    p.add_argument(
        "--answers",
        default=None,
        metavar="FILE|all",
        help="rank a closed answer list instead of generating (BLIP's VQA evaluation): a file with one "
        "answer per line, or 'all' for every answer of the data (the shapes' 20 answers)",
    )
    p.add_argument("--k", type=int, default=128, help="answers shortlisted by their first token before ranking")
    add_generation_arguments(p, beams=3, max_new=10, min_length=1)
    p.set_defaults(run=run_vqa, batch_size=64)


def run_vqa(args) -> int:
    device = _prepare(args)
    answer_list = read_answer_list(args.answers) if args.answers not in (None, "all") else None
    model, tokenizer = _load(args, device, vqa_model)
    items, answer_lists, types, all_answers = vqa_data(
        model, _data_source(args), question_key=args.question_key, answer_key=args.answer_key
    )
    candidates = all_answers if args.answers == "all" else answer_list
    result = evaluate_vqa(
        model,
        tokenizer,
        items,
        answer_lists,
        types,
        candidates=candidates,
        k=args.k,
        batch_size=args.batch_size,
        device=device,
        precision=args.precision,
        generation_config=generation_config_from_args(args),
    )
    how = f"ranking {len(candidates)} answers" if candidates is not None else "generated answers"
    report(result, args.json_out, f"VQA accuracy (%), {how}")
    return 0


# ---------------------------------------------------------------------------- the group
EVALUATIONS = (add_zeroshot, add_retrieval, add_captioning, add_vqa)


def add_commands(commands) -> None:
    p = commands.add_parser(
        "eval",
        help="evaluate a model (zeroshot, retrieval, ...)",
        description="Evaluate a model. `vlkit eval KIND --help` for each kind.",
    )
    kinds = p.add_subparsers(dest="eval_kind", required=True, metavar="KIND")
    for add in EVALUATIONS:
        add(kinds)
