"""Retrieval re-ranked by BLIP's image-text matching (ITM) head, as BLIP evaluates retrieval:
every query's top ``k`` candidates by ITC similarity are re-scored by the ITM head (matched
logit plus the ITC similarity); the rest keep their ITC order behind the shortlist.

    i2t, t2i = itm_rerank_scores(model, tokenizer, pixel_values, texts, similarity, k=16)
    reranked_recall(i2t, t2i, positives)    # {"i2t_R@1": ..., "t2i_R@1": ...}

The texts' first token is replaced by [ENC] before the ITM head reads them, as BLIP's training
and its retrieval evaluation do.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .retrieval import recall_at_k

BEHIND = 1e4  # candidates outside the shortlist: their ITC similarity minus this


@torch.no_grad()
def itm_rerank_scores(
    model,
    tokenizer,
    pixel_values: torch.Tensor,
    texts: Sequence[str],
    similarity: torch.Tensor,
    k: int = 16,
    *,
    device: torch.device | str = "cpu",
    batch_size: int = 256,
    add_itc: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(i2t, t2i)`` score matrices, (N_img, N_txt) and (N_txt, N_img), each row a query: its
    ITC top ``k`` scored by :func:`vlkit.models.blip.itm_rerank`, every other candidate at its ITC
    similarity minus 1e4 (so it ranks behind the shortlist, in ITC order)."""
    from ..models.blip import itm_rerank

    if similarity.shape != (pixel_values.shape[0], len(texts)):
        raise ValueError(
            f"similarity must be (images, texts) = ({pixel_values.shape[0]}, {len(texts)}), "
            f"got {tuple(similarity.shape)}"
        )
    device = torch.device(device)
    tokens = tokenizer(list(texts), padding="longest")
    ids, mask = tokens["input_ids"].clone(), tokens["attention_mask"]  # (N_txt, T)
    ids[:, 0] = model.config.text.enc_token_id  # [CLS] -> [ENC]
    sim = similarity.float()
    i2t, t2i = itm_rerank(
        model,
        pixel_values.to(device),
        ids.to(device),
        mask.to(device),
        sim.to(device),
        k=k,
        batch_size=batch_size,
        add_itc=add_itc,
    )
    i2t, t2i = i2t.cpu(), t2i.cpu()
    i2t = torch.where(torch.isinf(i2t), sim - BEHIND, i2t)
    t2i = torch.where(torch.isinf(t2i), sim.t() - BEHIND, t2i)
    return i2t, t2i


def reranked_recall(
    i2t: torch.Tensor, t2i: torch.Tensor, positives: torch.Tensor, ks: Sequence[int] = (1, 5, 10)
) -> dict[str, float]:
    """Recall@K (percent) with image queries ranked by ``i2t`` (N_img, N_txt) and text queries by
    ``t2i`` (N_txt, N_img)."""
    if t2i.shape != i2t.t().shape:
        raise ValueError(f"t2i {tuple(t2i.shape)} must be the transpose of i2t {tuple(i2t.shape)}")
    out = {k: v for k, v in recall_at_k(i2t, positives, ks).items() if k.startswith("i2t_")}
    out.update({k: v for k, v in recall_at_k(t2i.t(), positives, ks).items() if k.startswith("t2i_")})
    return out
