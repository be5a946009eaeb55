"""Evaluation: zero-shot classification and image-text retrieval (and, in their own files,
captioning and VQA metrics), and :func:`load_model` / :func:`load_tokenizer`, which read what a
``--model`` names (a run folder, a model folder, a training checkpoint, a hub id)."""

from .retrieval import (
    RankResult,
    encode_images,
    encode_texts,
    positives_from_pairs,
    rank,
    recall_at_k,
    retrieval_metrics,
    similarity_matrix,
    unique_captions,
)
from .zeroshot import class_prompts, topk_accuracy, zeroshot_accuracy, zeroshot_classifier, zeroshot_logits

__all__ = [
    "RankResult",
    "encode_images",
    "encode_texts",
    "positives_from_pairs",
    "rank",
    "recall_at_k",
    "retrieval_metrics",
    "similarity_matrix",
    "unique_captions",
    "class_prompts",
    "topk_accuracy",
    "zeroshot_accuracy",
    "zeroshot_classifier",
    "zeroshot_logits",
    "load_model",
    "load_model_and_tokenizer",
    "load_tokenizer",
    "model_source",
]

_RESOLVE = ("load_model", "load_model_and_tokenizer", "load_tokenizer", "model_source")


def __getattr__(name: str):
    """``load_model`` and friends on first use: :mod:`vlkit.eval.resolve` reads training
    checkpoints through the recipes, which import this package."""
    if name in _RESOLVE:
        from . import resolve

        return getattr(resolve, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
