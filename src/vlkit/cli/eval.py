"""``vlkit eval <kind>``: evaluate a trained or pretrained model.

    vlkit eval zeroshot  --model runs/clip-shapes                      # built-in shapes: shape and colour
    vlkit eval zeroshot  --model M --annotations labels.csv --templates "a photo of a {}."
    vlkit eval retrieval --model runs/clip-shapes                      # Recall@1/5/10 both ways
    vlkit eval retrieval --model M --annotations pairs.jsonl --root images/

``--model`` takes a vlkit model folder (``save_pretrained``), a run folder of ``vlkit train``
(its final ``model/``, else its newest checkpoint), a training checkpoint (``.pt``), or anything
``vlkit.from_pretrained`` reads.

Adding an evaluation: write ``add_<kind>(kinds)`` that registers a sub-parser (use
:func:`add_model_arguments`) with ``set_defaults(run=handler)``, and list it in ``EVALUATIONS``.
Adding a retrieval re-ranker (e.g. ``--rerank itm``): put a function in ``RERANKERS``; it gets
``(model, tokenizer, pixel_values (N_img, 3, H, W), texts, rank_result, k, device)`` and returns
an (N_img, N_txt) score matrix (``-inf`` where it did not score), which is ranked again.
"""
from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

# name -> re-ranking function (see the module docstring)
RERANKERS: dict[str, Callable[..., torch.Tensor]] = {}


# ---------------------------------------------------------------------------- shared helpers
def add_model_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="model folder, run folder, or training checkpoint (.pt)")
    p.add_argument("--tokenizer", default="clip", help="tokenizer name or folder (default: clip)")
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:N")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--json", dest="json_out", metavar="FILE", help="also write the metrics to this JSON file")


def add_data_arguments(p: argparse.ArgumentParser, what: str) -> None:
    g = p.add_argument_group("data (default: the built-in shapes' validation split)")
    g.add_argument("--annotations", help=f"CSV or JSONL file of {what}")
    g.add_argument("--root", help="folder the image paths are relative to (default: the annotation file's)")
    g.add_argument("--image-key", help="image column (default: image/filepath/file/path/image_path)")
    g.add_argument("--size", type=int, default=1000, help="shapes: number of validation images (default 1000)")
    g.add_argument("--seed", type=int, default=0, help="shapes: data seed (default 0)")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def load_model(source: str | os.PathLike) -> torch.nn.Module:
    """A model from a vlkit/HF/open_clip folder, a ``vlkit train`` run folder, or a training checkpoint."""
    import vlkit

    path = Path(source)
    if path.is_file():
        from ..train.checkpoint import load_checkpoint
        from ..train.config import Config
        from ..train.recipes import get_recipe

        state = load_checkpoint(path)
        cfg = Config.from_dict(state["config"], f"{path} config")
        model = get_recipe(cfg.task, cfg.model).build_model()
        model.load_state_dict(state["model"])
        return model
    if path.is_dir() and not (path / "config.json").is_file():
        from ..train.checkpoint import latest_checkpoint

        if (path / "model" / "config.json").is_file():  # a finished run
            path = path / "model"
        elif latest_checkpoint(path) is not None:  # a run stopped before its end
            return load_model(latest_checkpoint(path))
    return vlkit.from_pretrained(path)


def shapes_model_size(model) -> int:
    vision = getattr(model.config, "vision", None)
    if vision is None:
        raise TypeError(f"{type(model).__name__} has no vision tower")
    return vision.image_size


def report(metrics: dict[str, Any], json_out: str | None, title: str) -> None:
    print(title)
    width = max(len(k) for k in metrics)
    for k, v in metrics.items():
        print(f"  {k:<{width}}  {v:.2f}" if isinstance(v, float) else f"  {k:<{width}}  {v}")
    if json_out:
        Path(json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(json_out).write_text(json.dumps(metrics, indent=2) + "\n")


class _Positions(torch.utils.data.Dataset):
    """A dataset's items tagged with their position in it."""

    def __init__(self, dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> dict:
        return {**self.dataset[i], "position": i}


def _image_batches(dataset, batch_size: int, skipped: list):
    """(pixel batch, positions in ``dataset``) in order; unreadable images go to ``skipped``."""
    from ..data.loader import eval_loader

    def collate(items):
        skipped.extend(it["skipped"] for it in items if "skipped" in it)
        keep = [it for it in items if "skipped" not in it]
        return torch.stack([it["pixel_values"] for it in keep]) if keep else None, [it["position"] for it in keep]

    for pixels, positions in eval_loader(_Positions(dataset), collate, batch_size):
        if pixels is not None:
            yield pixels, positions


# ---------------------------------------------------------------------------- zeroshot
def add_zeroshot(kinds) -> None:
    p = kinds.add_parser("zeroshot", help="zero-shot classification: class names x prompt templates, top-1/top-5",
                         description="Zero-shot classification. Built-in shapes: by shape and by colour on held-out "
                         "images. Your data: --annotations with an image and a label column.")
    add_model_arguments(p)
    add_data_arguments(p, "(image, label) rows")
    p.add_argument("--label-key", default="label", help="label column (default: label)")
    p.add_argument("--classes", help="comma-separated class names, or a file with one per line (default: the labels seen)")
    p.add_argument("--templates", action="append", help="prompt template with {} for the class name (repeatable; "
                   "default: 'a photo of a {}.')")
    p.set_defaults(run=run_zeroshot)


def _zeroshot_tasks(args, model) -> tuple[Any, dict[str, Any]]:
    """(dataset of images, {task name: ZeroShotTask})."""
    import vlkit

    from ..data.folder import ImageTextFolder, read_annotations
    from ..data.synthetic import ShapesDataset, ZeroShotTask

    transform = vlkit.image_transform(model)
    if args.annotations is None:
        ds = ShapesDataset("validation", size=args.size, seed=args.seed, image_size=shapes_model_size(model),
                           transform=transform)
        tasks = ds.zeroshot_tasks()
        if args.templates:
            tasks = {k: ZeroShotTask(t.classnames, tuple(args.templates), t.labels) for k, t in tasks.items()}
        return ds, tasks
    rows = read_annotations(args.annotations)
    if rows and args.label_key not in rows[0]:
        raise KeyError(f"{args.annotations}: no label column {args.label_key!r}; columns are {sorted(rows[0])}")
    ds = ImageTextFolder(args.annotations, root=args.root, transform=transform, image_key=args.image_key,
                         caption_key=args.label_key)
    labels_seen = ds.captions()
    if args.classes:
        cls_path = Path(args.classes)
        classnames = [c.strip() for c in (cls_path.read_text().splitlines() if cls_path.is_file()
                                          else args.classes.split(",")) if c.strip()]
    else:
        classnames = sorted(set(labels_seen))
    unknown = sorted(set(labels_seen) - set(classnames))
    if unknown:
        raise ValueError(f"labels {unknown[:10]} are not among the classes {classnames[:10]}")
    templates = tuple(args.templates or ("a photo of a {}.",))
    task = ZeroShotTask(tuple(classnames), templates, tuple(classnames.index(c) for c in labels_seen))
    return ds, {args.label_key: task}


def run_zeroshot(args) -> int:
    from ..data.folder import SkipReport
    from ..eval.retrieval import encode_images
    from ..eval.zeroshot import zeroshot_accuracy

    device = resolve_device(args.device)
    model = load_model(args.model).to(device).eval()
    tokenizer = _tokenizer(args.tokenizer)
    ds, tasks = _zeroshot_tasks(args, model)
    skipped: list = []
    kept: list[int] = []

    def pixels():
        for px, index in _image_batches(ds, args.batch_size, skipped):
            kept.extend(index)
            yield px

    feats = encode_images(model, pixels(), device=device, progress=True)
    metrics: dict[str, Any] = {"images": len(kept)}
    for name, task in tasks.items():
        labels = [task.labels[i] for i in kept]
        acc = zeroshot_accuracy(model, tokenizer, feats, labels, task.classnames, task.templates, device=device)
        metrics.update({f"{name}_top1": acc["top1"], f"{name}_top5": acc["top5"], f"{name}_classes": len(task.classnames)})
    skip = SkipReport(list(getattr(ds, "skipped_at_load", [])) + skipped)
    if len(skip):
        print(skip.summary())
    report(metrics, args.json_out, "zero-shot accuracy (%)")
    return 0


# ---------------------------------------------------------------------------- retrieval
def add_retrieval(kinds) -> None:
    p = kinds.add_parser("retrieval", help="image-text retrieval: Recall@1/5/10 both ways",
                         description="Image->text and text->image retrieval. Built-in shapes: held-out images and "
                         "their full captions (images sharing a caption all count as matches). Your data: "
                         "--annotations of (image, caption) rows; rows with the same image are its captions.")
    add_model_arguments(p)
    add_data_arguments(p, "(image, caption) rows")
    p.add_argument("--caption-key", help="caption column (default: caption/text/title)")
    p.add_argument("--rerank", default="none", choices=["none", *sorted(RERANKERS)],
                   help="re-rank the top candidates with another scorer")
    p.add_argument("--rerank-k", type=int, default=16, help="candidates per query to re-rank (default 16)")
    p.set_defaults(run=run_retrieval)


def _retrieval_data(args, model):
    """(image dataset with one item per distinct image, texts, positives (N_img, N_txt))."""
    import vlkit

    from ..data.folder import ImageTextFolder
    from ..data.synthetic import ShapesDataset
    from ..eval.retrieval import unique_captions

    transform = vlkit.image_transform(model)
    if args.annotations is None:
        ds = ShapesDataset("validation", size=args.size, seed=args.seed, image_size=shapes_model_size(model),
                           transform=transform, captions="full")
        texts, positives = unique_captions([ds.caption(i) for i in range(len(ds))])
        return ds, texts, positives
    pairs = ImageTextFolder(args.annotations, root=args.root, transform=transform, image_key=args.image_key,
                            caption_key=args.caption_key)
    images: dict[Path, int] = {}
    for path, _ in pairs.samples:
        images.setdefault(path, len(images))
    texts = pairs.captions()
    positives = torch.zeros(len(images), len(texts), dtype=torch.bool)
    for j, (path, _) in enumerate(pairs.samples):
        positives[images[path], j] = True
    first = {}
    for i, (path, _) in enumerate(pairs.samples):
        first.setdefault(path, i)
    image_ds = torch.utils.data.Subset(pairs, [first[p] for p in images])
    image_ds.skipped_at_load = pairs.skipped_at_load
    return image_ds, texts, positives


def run_retrieval(args) -> int:
    from ..data.folder import SkipReport
    from ..eval.retrieval import encode_images, encode_texts, rank, recall_at_k

    device = resolve_device(args.device)
    model = load_model(args.model).to(device).eval()
    tokenizer = _tokenizer(args.tokenizer)
    ds, texts, positives = _retrieval_data(args, model)
    skipped: list = []
    kept: list[int] = []
    pixel_batches: list[torch.Tensor] = []

    def pixels():
        for px, index in _image_batches(ds, args.batch_size, skipped):
            kept.extend(index)
            if args.rerank != "none":
                pixel_batches.append(px)
            yield px

    image_feats = encode_images(model, pixels(), device=device, progress=True)
    text_feats = encode_texts(model, tokenizer, texts, batch_size=args.batch_size, device=device, progress=True)
    positives = positives[torch.tensor(kept)]  # unreadable images leave the ground truth too
    keep_texts = positives.any(0)
    if not keep_texts.all():  # texts whose only image was unreadable
        text_feats, positives = text_feats[keep_texts], positives[:, keep_texts]
        texts = [t for t, k in zip(texts, keep_texts.tolist()) if k]
    result = rank(image_feats, text_feats, k=args.rerank_k)
    scores = result.similarity
    if args.rerank != "none":
        scores = RERANKERS[args.rerank](model, tokenizer, torch.cat(pixel_batches), texts, result, args.rerank_k, device)
    metrics: dict[str, Any] = {"images": len(kept), "texts": len(texts), **recall_at_k(scores, positives)}
    skip = SkipReport(list(getattr(ds, "skipped_at_load", [])) + skipped)
    if len(skip):
        print(skip.summary())
    report(metrics, args.json_out, "retrieval Recall@K (%)" + (f", re-ranked by {args.rerank}" if args.rerank != "none" else ""))
    return 0


def _tokenizer(name: str):
    import vlkit

    return vlkit.get_tokenizer(name)


# ---------------------------------------------------------------------------- the group
EVALUATIONS = (add_zeroshot, add_retrieval)  # add_captioning, add_vqa, ... go here


def add_commands(commands) -> None:
    p = commands.add_parser("eval", help="evaluate a model (zeroshot, retrieval, ...)",
                            description="Evaluate a model. `vlkit eval KIND --help` for each kind.")
    kinds = p.add_subparsers(dest="eval_kind", required=True, metavar="KIND")
    for add in EVALUATIONS:
        add(kinds)
