"""Retrieval with a single-stream model (ViLT): no features to compare, every (image, text) pair
goes through the joint encoder, N images x M texts forward passes, and the pair's score ranks it.

    scores = pair_scores(model, pixel_values, input_ids, attention_mask)   # (N_img, N_txt)
    recall_at_k(scores, positives)

The score is the rank head's when the model has one (ViltForImageAndTextRetrieval), else the ITM
head's matched-minus-not-matched logit (a pre-trained ViLT).
"""

from __future__ import annotations

import torch
from torch import nn

from ..runtime import autocast, eval_mode


def _pair_score(model: nn.Module, pixels: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    hidden = model(pixels, ids, mask)  # (P, L, H)
    if getattr(model, "rank_head", None) is not None:
        return model.rank_head(model.pool(hidden)).squeeze(-1)  # (P,)
    logits = model.match_logits(hidden)  # (P, 2)
    return logits[:, 1] - logits[:, 0]


@torch.no_grad()
def pair_scores(
    model: nn.Module,
    pixel_values: torch.Tensor,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    *,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    precision: str = "auto",
) -> torch.Tensor:
    """Scores (N_img, N_txt), float32 on the CPU, of every image (N_img, 3, H, W) with every text
    (N_txt, T), ``batch_size`` pairs per forward pass."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    device = torch.device(device)
    N, M = pixel_values.shape[0], input_ids.shape[0]
    ids, mask = input_ids.to(device), attention_mask.to(device)
    out = torch.empty(N * M)
    with eval_mode(model):
        for start in range(0, N * M, batch_size):
            pairs = torch.arange(start, min(start + batch_size, N * M))  # flat (image, text) indices
            images, texts = (pairs // M).tolist(), (pairs % M).to(device)
            with autocast(device, precision):
                s = _pair_score(model, pixel_values[images].to(device), ids[texts], mask[texts])
            out[pairs] = s.float().cpu()
    return out.view(N, M)
