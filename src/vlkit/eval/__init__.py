"""Evaluation: zero-shot classification and image-text retrieval (and, in their own files,
captioning and VQA metrics)."""
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
    "RankResult", "encode_images", "encode_texts", "positives_from_pairs", "rank", "recall_at_k",
    "retrieval_metrics", "similarity_matrix", "unique_captions", "class_prompts", "topk_accuracy",
    "zeroshot_accuracy", "zeroshot_classifier", "zeroshot_logits",
]
