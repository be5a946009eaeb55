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

``--model`` takes a vlkit model folder (``save_pretrained``), a run folder of ``vlkit train``
(its final ``model/``, else its newest checkpoint), a training checkpoint (``.pt``), or anything
``vlkit.from_pretrained`` reads. For ``vqa`` a captioning BLIP folder whose ``vqa/`` sub-folder
holds a VQA model (what the ``blip-vqa`` recipe saves) stands for that VQA model. The tokenizer
is ``--tokenizer``, else (BLIP) the one saved in the model folder or the checkpoint's recipe,
else ``bert-base-uncased`` for BLIP and ``clip`` for the others.

Adding an evaluation: write ``add_<kind>(kinds)`` that registers a sub-parser (use
:func:`add_model_arguments`) with ``set_defaults(run=handler)``, and list it in ``EVALUATIONS``.
Adding a retrieval re-ranker (e.g. ``--rerank itm``): put a function in ``RERANKERS``; it gets
``(model, tokenizer, pixel_values (N_img, 3, H, W), texts, rank_result, k, device)`` and returns
an (N_img, N_txt) score matrix (``-inf`` where it did not score), which is ranked again, or a
pair ``(i2t (N_img, N_txt), t2i (N_txt, N_img))`` when image and text queries are scored apart.
"""
from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from .generation_options import add_generation_arguments, generation_config_from_args


def _itm_reranker(model, tokenizer, pixel_values, texts, result, k, device):
    """BLIP's retrieval: each query's ITC top ``k`` re-scored by the ITM head (plus ITC)."""
    from ..eval.rerank import itm_rerank_scores

    blip = _captioner(model)
    if not getattr(blip.config, "retrieval_heads", False):
        raise ValueError("--rerank itm needs a BLIP with an image-text matching head (retrieval_heads)")
    return itm_rerank_scores(blip, tokenizer, pixel_values, texts, result.similarity, k, device=device)


# name -> re-ranking function (see the module docstring)
RERANKERS: dict[str, Callable[..., Any]] = {"itm": _itm_reranker}


# ---------------------------------------------------------------------------- shared helpers
def add_model_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="model folder, run folder, or training checkpoint (.pt)")
    p.add_argument("--tokenizer", default=None,
                   help="tokenizer name or folder, or 'shapes' (default: BLIP: the model's own, else bert-base-uncased; "
                        "others: clip)")
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:N")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--threads", type=int, default=0,
                   help="torch CPU threads (default 0: torch's choice); 1 is much faster for tiny models on a busy machine")
    p.add_argument("--json", dest="json_out", metavar="FILE", help="also write the metrics to this JSON file")


def add_data_arguments(p: argparse.ArgumentParser, what: str) -> None:
    g = p.add_argument_group("data (default: the built-in shapes' validation split)")
    g.add_argument("--annotations", help=f"CSV or JSONL file of {what}")
    g.add_argument("--root", help="folder the image paths are relative to (default: the annotation file's)")
    g.add_argument("--image-key", help="image column (default: image/filepath/file/path/image_path)")
    g.add_argument("--size", type=int, default=1000, help="shapes: number of validation images (default 1000)")
    g.add_argument("--seed", type=int, default=0, help="shapes: data seed (default 0)")


def set_threads(args) -> None:
    if getattr(args, "threads", 0) < 0:
        raise ValueError(f"--threads must be >= 0, got {args.threads}")
    if getattr(args, "threads", 0) > 0:
        torch.set_num_threads(args.threads)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def model_source(source: str | os.PathLike) -> Path:
    """What ``load_model`` reads for ``source``: a model folder (a finished run's ``model/``), a
    training checkpoint (a stopped run's newest), or ``source`` itself."""
    path = Path(source)
    if path.is_dir() and not (path / "config.json").is_file():
        from ..train.checkpoint import latest_checkpoint

        if (path / "model" / "config.json").is_file():  # a finished run
            return path / "model"
        if latest_checkpoint(path) is not None:  # a run stopped before its end
            return latest_checkpoint(path)
    return path


def _checkpoint_recipe(path: Path):
    from ..train.checkpoint import load_checkpoint
    from ..train.config import Config
    from ..train.recipes import get_recipe

    state = load_checkpoint(path)
    cfg = Config.from_dict(state["config"], f"{path} config")
    return get_recipe(cfg.task, cfg.model), state


def load_model(source: str | os.PathLike) -> torch.nn.Module:
    """A model from a vlkit/HF/open_clip folder, a ``vlkit train`` run folder, or a training checkpoint."""
    import vlkit

    path = model_source(source)
    if path.is_file():
        recipe, state = _checkpoint_recipe(path)
        model = recipe.build_model()
        model.load_state_dict(state["model"])
        return model
    return vlkit.from_pretrained(path)


def _is_blip(model) -> bool:
    from ..models.blip import Blip

    return isinstance(_captioner(model), Blip)


def _captioner(model):
    """The captioning BLIP of a ``blip-vqa`` training checkpoint's model pair, else ``model``."""
    return getattr(model, "captioner", model)


def load_tokenizer_for(name: str | None, source: str | os.PathLike, model):
    """``name`` if given; else a BLIP's own tokenizer (saved in its folder, or its checkpoint's
    recipe's) or ``bert-base-uncased``; else CLIP's."""
    from ..train.recipes.blip import load_tokenizer

    if name:
        return load_tokenizer(name)
    if not _is_blip(model):
        return load_tokenizer("clip")
    path = model_source(source)
    if path.is_file():
        return _checkpoint_recipe(path)[0].tokenizer
    if path.is_dir():
        import vlkit

        try:
            return vlkit.get_tokenizer(path)
        except ValueError:  # the folder holds no tokenizer files
            pass
    return load_tokenizer("bert-base-uncased")


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

    set_threads(args)
    device = resolve_device(args.device)
    model = _captioner(load_model(args.model)).to(device).eval()
    tokenizer = load_tokenizer_for(args.tokenizer, args.model, model)
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

    set_threads(args)
    device = resolve_device(args.device)
    model = _captioner(load_model(args.model)).to(device).eval()
    tokenizer = load_tokenizer_for(args.tokenizer, args.model, model)
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
    if args.rerank_k < 1:
        raise ValueError(f"--rerank-k must be >= 1, got {args.rerank_k}")
    result = rank(image_feats, text_feats, k=args.rerank_k)
    metrics: dict[str, Any] = {"images": len(kept), "texts": len(texts)}
    if args.rerank == "none":
        metrics.update(recall_at_k(result.similarity, positives))
    else:
        metrics.update({f"itc_{k}": v for k, v in recall_at_k(result.similarity, positives).items()})
        scores = RERANKERS[args.rerank](model, tokenizer, torch.cat(pixel_batches), texts, result, args.rerank_k, device)
        if isinstance(scores, tuple):
            from ..eval.rerank import reranked_recall

            metrics.update(reranked_recall(scores[0], scores[1], positives))
        else:
            metrics.update(recall_at_k(scores, positives))
    skip = SkipReport(list(getattr(ds, "skipped_at_load", [])) + skipped)
    if len(skip):
        print(skip.summary())
    report(metrics, args.json_out, "retrieval Recall@K (%)" + (f", re-ranked by {args.rerank}" if args.rerank != "none" else ""))
    return 0


# ---------------------------------------------------------------------------- captioning
def add_captioning(kinds) -> None:
    p = kinds.add_parser("captioning", help="image captioning: BLEU-1..4, CIDEr-D, exact match",
                         description="Caption images with a BLIP and score the captions against references "
                         "(BLEU-1..4 and CIDEr-D as pycocoevalcap computes them, exact match in percent). Built-in "
                         "shapes: held-out images and their canonical captions. Your data: --annotations of "
                         "(image, caption) rows; rows with the same image are its reference captions.")
    add_model_arguments(p)
    add_data_arguments(p, "(image, caption) rows")
    p.add_argument("--caption-key", help="caption column (default: caption/text/title)")
    p.add_argument("--prompt", default=None, help='text the captions continue (e.g. "a picture of "); not scored')
    add_generation_arguments(p, beams=3, max_new=20, min_length=5)
    p.add_argument("--show", type=int, default=5, help="print this many (caption, reference) examples (default 5)")
    p.set_defaults(run=run_captioning, batch_size=64)


def _captioning_data(args, model):
    """(image dataset with one item per distinct image, reference captions per image)."""
    import vlkit

    from ..data.folder import ImageTextFolder
    from ..data.synthetic import ShapesDataset

    transform = vlkit.image_transform(model)
    if args.annotations is None:
        ds = ShapesDataset("validation", size=args.size, seed=args.seed, image_size=shapes_model_size(model),
                           transform=transform, captions="full")
        return ds, [[ds.caption(i)] for i in range(len(ds))]
    pairs = ImageTextFolder(args.annotations, root=args.root, transform=transform, image_key=args.image_key,
                            caption_key=args.caption_key)
    references: dict[Path, list[str]] = {}
    first: dict[Path, int] = {}
    for i, (path, caption) in enumerate(pairs.samples):
        references.setdefault(path, []).append(caption)
        first.setdefault(path, i)
    image_ds = torch.utils.data.Subset(pairs, [first[p] for p in references])
    image_ds.skipped_at_load = pairs.skipped_at_load
    return image_ds, list(references.values())


def _blip_with_decoder(model, source: str, context: str):
    from ..models.blip import Blip

    if not isinstance(model, Blip) or not model.config.text_decoder or model.config.decoder_context != context:
        what = "a captioning BLIP (a decoder reading the image)" if context == "image" else \
            "a BLIP VQA model (a decoder reading the question)"
        raise ValueError(f"{source} is not {what}")
    return model


def run_captioning(args) -> int:
    from ..data.folder import SkipReport
    from ..eval.captioning import captioning_scores, generate_captions

    set_threads(args)
    device = resolve_device(args.device)
    model = _blip_with_decoder(_captioner(load_model(args.model)), args.model, "image").to(device).eval()
    tokenizer = load_tokenizer_for(args.tokenizer, args.model, model)
    ds, references = _captioning_data(args, model)
    skipped: list = []
    kept: list[int] = []

    def pixels():
        for px, index in _image_batches(ds, args.batch_size, skipped):
            kept.extend(index)
            yield px

    captions = generate_captions(model, tokenizer, pixels(), prompt=args.prompt, device=device, progress=True,
                                 generation_config=generation_config_from_args(args))
    references = [references[i] for i in kept]
    metrics: dict[str, Any] = {"images": len(kept), **captioning_scores(captions, references)}
    skip = SkipReport(list(getattr(ds, "skipped_at_load", [])) + skipped)
    if len(skip):
        print(skip.summary())
    for caption, refs in list(zip(captions, references))[: max(args.show, 0)]:
        print(f"  {caption!r}  (reference: {refs[0]!r})")
    report(metrics, args.json_out, "captioning (BLEU and CIDEr-D as pycocoevalcap; exact match in %)")
    return 0


# ---------------------------------------------------------------------------- vqa
def add_vqa(kinds) -> None:
    p = kinds.add_parser("vqa", help="visual question answering: VQA accuracy",
                         description="Answer questions about images with a BLIP VQA model and score the answers with "
                         "the official VQA accuracy (a question with one answer counts it as ten agreeing "
                         "annotators) and exact match. Built-in shapes: a question about each held-out image, "
                         "with accuracy per question type. Your data: --annotations of (image, question, "
                         "answer or answers) rows.")
    add_model_arguments(p)
    add_data_arguments(p, "(image, question, answer[s]) rows")
    p.add_argument("--question-key", help="question column (default: question)")
    p.add_argument("--answer-key", help="answer column (default: answers, else answer)")
    p.add_argument("--answers", default=None, metavar="FILE|all",
                   help="rank a closed answer list instead of generating (BLIP's VQA evaluation): a file with one "
                        "answer per line, or 'all' for every answer of the data (the shapes' 20 answers)")
    p.add_argument("--k", type=int, default=128, help="answers shortlisted by their first token before ranking")
    add_generation_arguments(p, beams=3, max_new=10, min_length=1)
    p.set_defaults(run=run_vqa, batch_size=64)


def _vqa_model(model, source: str):
    """The VQA model: ``model`` itself, a pair's ``vqa``, or the ``vqa/`` sub-folder of its folder."""
    import vlkit

    from ..train.recipes.blip import VQA_FOLDER

    if hasattr(model, "vqa"):
        return model.vqa
    if getattr(getattr(model, "config", None), "decoder_context", None) == "question":
        return model
    path = model_source(source)
    if path.is_dir() and (path / VQA_FOLDER / "config.json").is_file():
        return vlkit.from_pretrained(path / VQA_FOLDER)
    raise ValueError(f"{source} is not a BLIP VQA model (a decoder reading the question) and has no "
                     f"{VQA_FOLDER}/ sub-folder with one")


def _vqa_data(args, model):
    """(dataset of image + question items, human answers per item, question types or None, candidates)."""
    import vlkit

    from ..data.synthetic import ShapesDataset
    from ..data.vqa import VQAFolder

    transform = vlkit.image_transform(model)
    if args.annotations is None:
        ds = ShapesDataset("validation", size=args.size, seed=args.seed, image_size=shapes_model_size(model),
                           transform=transform, captions="full")
        qs = [ds.question(i) for i in range(len(ds))]
        return ds, [[q.answer] for q in qs], [q.type for q in qs], list(ds.answer_list())
    ds = VQAFolder(args.annotations, root=args.root, transform=transform, image_key=args.image_key,
                   question_key=args.question_key, answer_key=args.answer_key)
    answers = ds.answer_lists()
    candidates = list(dict.fromkeys(a for rows in answers for a in rows))
    return ds, answers, None, candidates


def run_vqa(args) -> int:
    from ..data.folder import SkipReport
    from ..data.loader import eval_loader
    from ..eval.vqa import answer_questions, rank_answer_list, vqa_scores

    set_threads(args)
    device = resolve_device(args.device)
    loaded = load_model(args.model)
    model = _blip_with_decoder(_vqa_model(loaded, args.model), args.model, "question").to(device).eval()
    tokenizer = load_tokenizer_for(args.tokenizer, args.model, model)
    ds, answer_lists, types, all_answers = _vqa_data(args, model)
    candidates = None
    if args.answers == "all":
        candidates = all_answers
    elif args.answers:
        path = Path(args.answers)
        if not path.is_file():
            raise FileNotFoundError(f"answer list {path} does not exist (or pass --answers all)")
        candidates = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        if not candidates:
            raise ValueError(f"answer list {path} holds no answers")

    skipped: list = []
    kept: list[int] = []
    predictions: list[str] = []

    def collate(items):
        skipped.extend(it["skipped"] for it in items if "skipped" in it)
        return [it for it in items if "skipped" not in it]

    for batch in eval_loader(_Positions(ds), collate, args.batch_size):
        if not batch:
            continue
        pixels = torch.stack([it["pixel_values"] for it in batch])  # (B, 3, H, W)
        questions = [it["question"] for it in batch]
        if candidates is None:
            predictions += answer_questions(model, tokenizer, pixels, questions, device=device,
                                            batch_size=args.batch_size,
                                            generation_config=generation_config_from_args(args))
        else:
            predictions += rank_answer_list(model, tokenizer, pixels, questions, candidates, k=args.k, device=device,
                                            batch_size=args.batch_size)
        kept += [it["position"] for it in batch]
    if not kept:
        raise ValueError("no question could be answered (every image was skipped)")
    metrics: dict[str, Any] = {"questions": len(kept)}
    metrics.update(vqa_scores(predictions, [answer_lists[i] for i in kept],
                              None if types is None else [types[i] for i in kept]))
    skip = SkipReport(list(getattr(ds, "skipped_at_load", [])) + skipped)
    if len(skip):
        print(skip.summary())
    how = f"ranking {len(candidates)} answers" if candidates is not None else "generated answers"
    report(metrics, args.json_out, f"VQA accuracy (%), {how}")
    return 0


# ---------------------------------------------------------------------------- the group
EVALUATIONS = (add_zeroshot, add_retrieval, add_captioning, add_vqa)


def add_commands(commands) -> None:
    p = commands.add_parser("eval", help="evaluate a model (zeroshot, retrieval, ...)",
                            description="Evaluate a model. `vlkit eval KIND --help` for each kind.")
    kinds = p.add_subparsers(dest="eval_kind", required=True, metavar="KIND")
    for add in EVALUATIONS:
        add(kinds)
