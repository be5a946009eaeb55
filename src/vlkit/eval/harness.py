"""Evaluation runs: a model, its tokenizer and the data of :mod:`vlkit.eval.datasets` -> metrics.

    model = load_model("runs/clip-shapes")
    images, tasks = zeroshot_data(model, DataSource())
    result = evaluate_zeroshot(model, load_tokenizer("runs/clip-shapes", model), images, tasks)
    result.metrics          # {"images": 1000, "shape_top1": ..., ...}
    result.skipped          # SkipReport of the unreadable images (left out of every metric)

Images are read in order in batches (:class:`ImageBatches`); an unreadable image is skipped and
its ground truth leaves the metrics with it.

Adding a retrieval re-ranker (``vlkit eval retrieval --rerank NAME``): put a function in
``RERANKERS``; it gets ``(model, tokenizer, pixel_values (N_img, 3, H, W), texts, rank_result, k,
device)`` and returns an (N_img, N_txt) score matrix (``-inf`` where it did not score), which is
ranked again, or a pair ``(i2t (N_img, N_txt), t2i (N_txt, N_img))`` when image and text queries
are scored apart.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from ..data.folder import SkipReport
from ..data.loader import eval_loader
from ..data.synthetic import ZeroShotTask
from .captioning import captioning_scores, generate_captions
from .joint_retrieval import pair_scores
from .rerank import itm_rerank_scores, reranked_recall
from .resolve import captioner
from .retrieval import encode_images, encode_texts, rank, recall_at_k
from .vqa import answer_questions, classifies_answers, classify_answers, rank_answer_list, vqa_scores
from .zeroshot import zeroshot_accuracy


@dataclass
class Evaluation:
    """What an evaluation found: ``metrics`` (counts and scores), the images it ``skipped``, and
    ``examples`` (prediction, reference) for people to read."""

    metrics: dict[str, Any]
    skipped: SkipReport = field(default_factory=SkipReport)
    examples: list[tuple[str, str]] = field(default_factory=list)


class _Positions(Dataset):
    """A dataset's items tagged with their position in it."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> dict:
        return {**self.dataset[i], "position": i}


class ImageBatches:
    """The readable items of ``dataset`` in order, ``batch_size`` at a time. Iterating yields
    pixel batches (B, 3, H, W) (``items()`` yields the item lists); meanwhile ``kept`` collects
    the dataset positions yielded and ``skipped`` the unreadable images. ``num_workers`` processes
    decode the images (0: this one)."""

    def __init__(self, dataset: Dataset, batch_size: int, num_workers: int = 0) -> None:
        if batch_size < 1:
            raise ValueError(f"batch size must be >= 1, got {batch_size}")
        if num_workers < 0:
            raise ValueError(f"number of data workers must be >= 0, got {num_workers}")
        self.dataset, self.batch_size, self.num_workers = dataset, batch_size, num_workers
        self.kept: list[int] = []
        self.skipped: list = []

    def __len__(self) -> int:
        return (len(self.dataset) + self.batch_size - 1) // self.batch_size

    def _collate(self, items: list[dict]) -> list[dict]:
        self.skipped.extend(it["skipped"] for it in items if "skipped" in it)
        return [it for it in items if "skipped" not in it]

    def items(self) -> Iterator[list[dict]]:
        for batch in eval_loader(_Positions(self.dataset), self._collate, self.batch_size, self.num_workers):
            if batch:
                self.kept.extend(it["position"] for it in batch)
                yield batch

    def __iter__(self) -> Iterator[torch.Tensor]:
        for batch in self.items():
            yield torch.stack([it["pixel_values"] for it in batch])  # (B, 3, H, W)

    def skip_report(self) -> SkipReport:
        """Images skipped while reading the annotations and while reading the batches."""
        return SkipReport(list(getattr(self.dataset, "skipped_at_load", [])) + self.skipped)


def evaluate_zeroshot(
    model: nn.Module,
    tokenizer,
    images: Dataset,
    tasks: dict[str, ZeroShotTask],
    *,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    precision: str = "auto",
    progress: bool = False,
) -> Evaluation:
    """Top-1/top-5 accuracy (percent) of every task: ``<task>_top1``, ``<task>_top5``, ``<task>_classes``."""
    batches = ImageBatches(images, batch_size)
    feats = encode_images(
        model, batches, device=device, precision=precision, progress=progress, total=len(batches)
    )  # (N, D)
    metrics: dict[str, Any] = {"images": len(batches.kept)}
    for name, task in tasks.items():
        labels = [task.labels[i] for i in batches.kept]
        acc = zeroshot_accuracy(
            model, tokenizer, feats, labels, task.classnames, task.templates, device=device, precision=precision
        )
        metrics.update(
            {f"{name}_top1": acc["top1"], f"{name}_top5": acc["top5"], f"{name}_classes": len(task.classnames)}
        )
    return Evaluation(metrics, batches.skip_report())


def _itm_reranker(model, tokenizer, pixel_values, texts, result, k, device):
    """BLIP's retrieval: each query's ITC top ``k`` re-scored by the ITM head (plus ITC)."""
    blip = captioner(model)
    if not getattr(blip.config, "retrieval_heads", False):
        raise ValueError("--rerank itm needs a BLIP with an image-text matching head (retrieval_heads)")
    return itm_rerank_scores(blip, tokenizer, pixel_values, texts, result.similarity, k, device=device)


# name -> re-ranking function (see the module docstring)
RERANKERS: dict[str, Callable[..., Any]] = {"itm": _itm_reranker}


def evaluate_retrieval(
    model: nn.Module,
    tokenizer,
    images: Dataset,
    texts: Sequence[str],
    positives: torch.Tensor,
    *,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    precision: str = "auto",
    rerank: str | None = None,
    rerank_k: int = 16,
    progress: bool = False,
) -> Evaluation:
    """Recall@1/5/10 both ways of ITC similarity, or (``rerank``) of a re-ranker's scores on
    each query's top ``rerank_k`` (the ITC figures then come as ``itc_<metric>``). A single-stream
    model (ViLT: no ``encode_image``) scores every (image, text) pair with its joint encoder."""
    if rerank is not None and rerank not in RERANKERS:
        raise ValueError(f"unknown re-ranker {rerank!r}; known: {sorted(RERANKERS)}")
    if rerank_k < 1:
        raise ValueError(f"--rerank-k must be >= 1, got {rerank_k}")
    batches = ImageBatches(images, batch_size)
    if not hasattr(model, "encode_image") and hasattr(model, "match_logits"):  # single stream (ViLT)
        if rerank is not None:
            raise ValueError("a single-stream model (ViLT) scores every pair already; --rerank does not apply")
        return _joint_retrieval(
            model, tokenizer, batches, texts, positives, batch_size=batch_size, device=device, precision=precision
        )
    kept_pixels: list[torch.Tensor] = []

    def pixels() -> Iterator[torch.Tensor]:
        for px in batches:
            if rerank is not None:
                kept_pixels.append(px)
            yield px

    image_feats = encode_images(
        model, pixels(), device=device, precision=precision, progress=progress, total=len(batches)
    )  # (N_img, D)
    text_feats = encode_texts(
        model, tokenizer, texts, batch_size=batch_size, device=device, precision=precision, progress=progress
    )  # (N_txt, D)
    positives = positives[torch.tensor(batches.kept)]  # unreadable images leave the ground truth too
    keep_texts = positives.any(0)  # (N_txt,)
    if not keep_texts.all():  # texts whose only image was unreadable
        text_feats, positives = text_feats[keep_texts], positives[:, keep_texts]
        texts = [t for t, k in zip(texts, keep_texts.tolist()) if k]
    result = rank(image_feats, text_feats, k=rerank_k)
    metrics: dict[str, Any] = {"images": len(batches.kept), "texts": len(texts)}
    if rerank is None:
        metrics.update(recall_at_k(result.similarity, positives))
        return Evaluation(metrics, batches.skip_report())
    metrics.update({f"itc_{k}": v for k, v in recall_at_k(result.similarity, positives).items()})
    scores = RERANKERS[rerank](model, tokenizer, torch.cat(kept_pixels), texts, result, rerank_k, device)
    metrics.update(reranked_recall(*scores, positives) if isinstance(scores, tuple) else recall_at_k(scores, positives))
    return Evaluation(metrics, batches.skip_report())


def _joint_retrieval(
    model, tokenizer, batches: ImageBatches, texts, positives, *, batch_size, device, precision
) -> Evaluation:
    """Recall@1/5/10 of a single-stream model: every (image, text) pair through the joint encoder."""
    pixels = torch.cat(list(batches))  # (N_img, 3, H, W)
    positives = positives[torch.tensor(batches.kept)]
    keep = positives.any(0)  # texts whose only image was unreadable leave
    texts = [t for t, k in zip(texts, keep.tolist()) if k]
    tokens = tokenizer(texts, padding="longest")
    scores = pair_scores(
        model,
        pixels,
        tokens["input_ids"],
        tokens["attention_mask"],
        batch_size=batch_size,
        device=device,
        precision=precision,
    )
    metrics: dict[str, Any] = {"images": len(batches.kept), "texts": len(texts), "joint_passes": scores.numel()}
    metrics.update(recall_at_k(scores, positives[:, keep]))
    return Evaluation(metrics, batches.skip_report())


def evaluate_captioning(
    model: nn.Module,
    tokenizer,
    images: Dataset,
    references: Sequence[Sequence[str]],
    *,
    batch_size: int = 64,
    device: torch.device | str = "cpu",
    precision: str = "auto",
    prompt: str | None = None,
    progress: bool = False,
    **generate_options,
) -> Evaluation:
    """BLEU-1..4, CIDEr-D and exact match of one generated caption per image (``generate_options``
    go to ``model.generate``); ``examples`` are (caption, first reference) pairs."""
    batches = ImageBatches(images, batch_size)
    captions = generate_captions(
        model,
        tokenizer,
        batches,
        prompt=prompt,
        device=device,
        precision=precision,
        progress=progress,
        total=len(batches),
        **generate_options,
    )
    references = [references[i] for i in batches.kept]
    metrics: dict[str, Any] = {"images": len(batches.kept), **captioning_scores(captions, references)}
    return Evaluation(metrics, batches.skip_report(), [(c, refs[0]) for c, refs in zip(captions, references)])


def evaluate_vqa(
    model: nn.Module,
    tokenizer,
    items: Dataset,
    answer_lists: Sequence[Sequence[str]],
    types: Sequence[str] | None = None,
    *,
    candidates: Sequence[str] | None = None,
    k: int = 128,
    batch_size: int = 64,
    device: torch.device | str = "cpu",
    precision: str = "auto",
    **generate_options,
) -> Evaluation:
    """VQA accuracy and exact match (per question type when ``types`` are given) of generated
    answers, or of the best of ``candidates`` (a closed answer set, ranked as BLIP does); a ViLT
    answers by classification (the best of its answers, of those in ``candidates`` when given)."""
    batches = ImageBatches(items, batch_size)
    predictions: list[str] = []
    for batch in batches.items():
        pixels = torch.stack([it["pixel_values"] for it in batch])  # (B, 3, H, W)
        questions = [it["question"] for it in batch]
        if classifies_answers(model):  # ViLT: the best of its answer vocabulary (within the candidates)
            predictions += classify_answers(
                model,
                tokenizer,
                pixels,
                questions,
                candidates=candidates,
                device=device,
                precision=precision,
                batch_size=batch_size,
            )
        elif candidates is None:
            predictions += answer_questions(
                model,
                tokenizer,
                pixels,
                questions,
                device=device,
                precision=precision,
                batch_size=batch_size,
                **generate_options,
            )
        else:
            predictions += rank_answer_list(
                model,
                tokenizer,
                pixels,
                questions,
                list(candidates),
                k=k,
                device=device,
                precision=precision,
                batch_size=batch_size,
            )
    if not batches.kept:
        raise ValueError("no question could be answered (every image was skipped)")
    metrics: dict[str, Any] = {"questions": len(batches.kept)}
    metrics.update(
        vqa_scores(
            predictions,
            [answer_lists[i] for i in batches.kept],
            None if types is None else [types[i] for i in batches.kept],
        )
    )
    return Evaluation(metrics, batches.skip_report())
