"""Image-text retrieval: embed both sides, rank by cosine similarity, Recall@K in both directions.

Ranking is kept apart from scoring so that a re-ranker (e.g. BLIP's image-text matching head)
can take the top-k candidates of :func:`rank` and hand its own scores back to
:func:`recall_at_k`:

    result = rank(image_features, text_features, k=128)        # similarity + top-k candidates
    scores = my_reranker(result.i2t_topk, result.t2i_topk)      # (N_img, N_txt), -inf elsewhere
    recall_at_k(scores, positives)                               # same metrics on the new scores

Ground truth is a boolean ``positives`` matrix (N_img, N_txt): COCO-style data (several captions
per image) and data where several images share one caption both fit.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..runtime import autocast


# ---------------------------------------------------------------------------------- embedding
@torch.no_grad()
def encode_images(
    model,
    batches: Iterable[torch.Tensor],
    *,
    device: torch.device | str = "cpu",
    normalize: bool = True,
    precision: str = "auto",
    progress: bool = False,
    total: int | None = None,
) -> torch.Tensor:
    """Image features (N, D), float32 on the CPU, from batches of pixel values (B, 3, H, W).
    ``precision``: one of :data:`vlkit.runtime.PRECISIONS` ("auto" decides by the model's width)."""
    device = torch.device(device)
    out = []
    for pixels in tqdm(batches, desc="images", total=total, disable=not progress, leave=False):
        with autocast(device, precision, model):
            f = model.encode_image(pixels.to(device, non_blocking=True), normalize=normalize)  # (B, D)
        out.append(f.float().cpu())
    if not out:
        raise ValueError("no images to encode")
    return torch.cat(out)


@torch.no_grad()
def encode_texts(
    model,
    tokenizer,
    texts: Sequence[str],
    *,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    normalize: bool = True,
    precision: str = "auto",
    progress: bool = False,
) -> torch.Tensor:
    """Text features (N, D), float32 on the CPU, tokenized in batches (padded to each batch's longest);
    ``precision`` as :func:`encode_images`."""
    if len(texts) == 0:
        raise ValueError("no texts to encode")
    device = torch.device(device)
    out = []
    starts = range(0, len(texts), batch_size)
    for i in tqdm(starts, desc="texts", disable=not progress, leave=False):
        tokens = tokenizer(list(texts[i : i + batch_size]), padding="longest")
        ids, mask = tokens["input_ids"].to(device), tokens["attention_mask"].to(device)  # (B, T)
        with autocast(device, precision, model):
            f = model.encode_text(ids, mask, normalize=normalize)  # (B, D)
        out.append(f.float().cpu())
    return torch.cat(out)


# ---------------------------------------------------------------------------------- ranking
@dataclass
class RankResult:
    """Cosine similarities and each side's top-k candidates (indices, best first)."""

    similarity: torch.Tensor  # (N_img, N_txt)
    i2t_topk: torch.Tensor  # (N_img, k) text indices
    t2i_topk: torch.Tensor  # (N_txt, k) image indices


def similarity_matrix(image_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
    """Cosine similarities (N_img, N_txt) of two feature sets (normalised here). Images with one
    feature per query (N_img, Q, D), as BLIP-2 encodes them, score with their best query."""
    image, text = F.normalize(image_features.float(), dim=-1), F.normalize(text_features.float(), dim=-1)
    if image.dim() == 3:
        return torch.einsum("iqd,td->itq", image, text).max(dim=-1).values
    return image @ text.t()


def rank(image_features: torch.Tensor, text_features: torch.Tensor, k: int = 10) -> RankResult:
    """Similarity matrix and top-k candidates in both directions (k is capped at the candidates)."""
    sim = similarity_matrix(image_features, text_features)  # (N_img, N_txt)
    return RankResult(
        sim, sim.topk(min(k, sim.shape[1]), dim=1).indices, sim.t().topk(min(k, sim.shape[0]), dim=1).indices
    )


def positives_from_pairs(text_to_image: Sequence[int] | torch.Tensor, num_images: int) -> torch.Tensor:
    """(N_img, N_txt) ground truth when text ``j`` describes image ``text_to_image[j]``."""
    t2i = torch.as_tensor(text_to_image, dtype=torch.long)
    pos = torch.zeros(num_images, len(t2i), dtype=torch.bool)
    pos[t2i, torch.arange(len(t2i))] = True
    return pos


def unique_captions(captions: Sequence[str]) -> tuple[list[str], torch.Tensor]:
    """Distinct captions (first-seen order) and the (N_img, N_unique) ground truth: image ``i``
    matches every text equal to its own caption. Use when several images share a caption."""
    index: dict[str, int] = {}
    for c in captions:
        index.setdefault(c, len(index))
    pos = torch.zeros(len(captions), len(index), dtype=torch.bool)
    pos[torch.arange(len(captions)), torch.tensor([index[c] for c in captions])] = True
    return list(index), pos


def recall_at_k(scores: torch.Tensor, positives: torch.Tensor, ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """Recall@K in both directions, in percent, for any (N_img, N_txt) score matrix.

    Image->text: an image counts as found when one of its positive texts is among its ``k``
    best-scored texts; text->image likewise per text. Ties are broken by index (as ``topk``).
    """
    if scores.shape != positives.shape:
        raise ValueError(f"scores {tuple(scores.shape)} and positives {tuple(positives.shape)} differ in shape")
    if not positives.any(1).all() or not positives.any(0).all():
        raise ValueError("every image and every text needs at least one positive")
    out = {}
    for direction, s, p in (("i2t", scores, positives), ("t2i", scores.t(), positives.t())):
        order = s.argsort(dim=1, descending=True, stable=True)  # (N, M) candidates, best first
        hit_rank = p.gather(1, order).float().argmax(1)  # (N,) position of the first positive
        for k in ks:
            out[f"{direction}_R@{k}"] = 100.0 * (hit_rank < k).float().mean().item()
    return out


def retrieval_metrics(
    image_features: torch.Tensor, text_features: torch.Tensor, positives: torch.Tensor, ks: Sequence[int] = (1, 5, 10)
) -> dict[str, float]:
    """Recall@K (percent) of cosine-similarity ranking, plus the mean of all of them (``mean_R``)."""
    out = recall_at_k(similarity_matrix(image_features, text_features), positives, ks)
    out["mean_R"] = sum(out.values()) / len(out)
    return out
