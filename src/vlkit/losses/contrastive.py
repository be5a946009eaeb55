"""Contrastive losses: InfoNCE in its general form and CLIP's symmetric image-text loss (ITC).

InfoNCE (van den Oord et al. 2018) scores a query against one positive key and K negatives and
takes the cross-entropy of picking the positive:

    L = -log( exp(q.k+ / t) / (exp(q.k+ / t) + sum_j exp(q.k-_j / t)) )

CLIP's loss is InfoNCE both ways over a batch of pairs, image->text and text->image, where each
row's partner is its positive and every other row of the batch a negative; the inverse
temperature is the model's learnable ``scale``. Under ``torch.distributed`` every rank gathers
the other ranks' features *with gradients* (:func:`gather_features`) and scores its own rows
against the whole global batch, so with equal per-rank batches and gradients averaged over ranks
(as DDP does) the loss and gradients equal those of one process on the global batch.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F

from .tiled_contrastive import check_chunk_size, tiled_nce


def _check_2d(name: str, x: torch.Tensor) -> None:
    if x.dim() != 2:
        raise ValueError(f"{name} must be (B, D) features, got shape {tuple(x.shape)}")


def _key_nce(query: torch.Tensor, keys: torch.Tensor, labels: torch.Tensor, scale) -> torch.Tensor:
    """Cross-entropy of picking ``keys[labels[i]]`` for query i among all keys: InfoNCE where every
    other key is a negative. query (B, D), keys (N, D), labels (B,), scale = 1 / temperature."""
    logits = scale * query @ keys.t()  # (B, N)
    return F.cross_entropy(logits, labels)


def info_nce(
    query: torch.Tensor,
    positive: torch.Tensor,
    negatives: torch.Tensor | None = None,
    temperature: float | torch.Tensor = 0.07,
) -> torch.Tensor:
    """Mean InfoNCE loss over a batch of queries.

    query, positive: (B, D). negatives: (B, K, D) per query, (K, D) shared by all queries, or
    None: the other rows of ``positive`` (in-batch negatives). Similarities are dot products, so
    pass L2-normalised features for cosine similarity. Returns a scalar.
    """
    _check_2d("query", query)
    _check_2d("positive", positive)
    if positive.shape != query.shape:
        raise ValueError(f"positive {tuple(positive.shape)} must have the query's shape {tuple(query.shape)}")
    B = query.shape[0]
    if negatives is None:
        return _key_nce(query, positive, torch.arange(B, device=query.device), 1.0 / temperature)
    if (
        negatives.shape[-1] != query.shape[-1]
        or negatives.dim() not in (2, 3)
        or (negatives.dim() == 3 and negatives.shape[0] != B)
    ):
        raise ValueError(
            f"negatives must be (B, K, D) or (K, D) with B={B}, D={query.shape[-1]}; got {tuple(negatives.shape)}"
        )
    pos = (query * positive).sum(dim=-1, keepdim=True)  # (B, 1)
    if negatives.dim() == 2:
        neg = query @ negatives.t()  # (B, K)
    else:
        neg = torch.einsum("bd,bkd->bk", query, negatives)  # (B, K)
    logits = torch.cat([pos, neg], dim=1) / temperature  # (B, 1 + K), the positive in column 0
    return F.cross_entropy(logits, torch.zeros(B, dtype=torch.long, device=query.device))


class _GatherWithGrad(torch.autograd.Function):
    """all_gather whose backward sends every rank's gradient for a slice back to its owner."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.rank, ctx.world = dist.get_rank(), dist.get_world_size()
        parts = [torch.empty_like(x) for _ in range(ctx.world)]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts)  # (W * B, D), rank order

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()  # (W * B, D)
        dist.all_reduce(grad)  # sum over ranks of d(local loss)/d(gathered features)
        return grad.chunk(ctx.world)[ctx.rank]


def distributed_world() -> tuple[int, int]:
    """(rank, world size); (0, 1) outside torch.distributed."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather_features(x: torch.Tensor) -> torch.Tensor:
    """(B, D) local features -> (W * B, D) features of all ranks in rank order; gradients flow back
    to the rank each row came from. Every rank must pass the same B. Identity outside
    torch.distributed."""
    if distributed_world()[1] == 1:
        return x
    return _GatherWithGrad.apply(x)


def clip_logits(image_features: torch.Tensor, text_features: torch.Tensor, scale) -> tuple[torch.Tensor, torch.Tensor]:
    """-> (logits_per_image (B_img, B_txt), logits_per_text (B_txt, B_img)) = scale * cosine similarities
    (features as the model's ``forward`` returns them: L2-normalised)."""
    logits_per_image = scale * image_features @ text_features.t()
    return logits_per_image, logits_per_image.t()


def clip_loss(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    scale,
    *,
    gather: bool = True,
    chunk_size: int | None = None,
) -> dict[str, torch.Tensor]:
    """CLIP's symmetric image-text contrastive loss (ITC).

    image_features, text_features: (B, D), row i of each is a pair (L2-normalised); scale: the
    inverse temperature (``model.scale()``, or a float). With ``gather`` under torch.distributed,
    each rank's rows are scored against the texts/images of all ranks (its local share of the
    global loss). ``chunk_size``: None computes the (B, B_all) logits at once; an integer computes
    the same loss and gradients in (chunk_size x chunk_size) tiles of them, forward and backward
    (:mod:`vlkit.losses.tiled_contrastive`), so the memory grows with B, not B^2.
    Returns {"contrastive_loss": scalar}.
    """
    check_chunk_size(chunk_size)
    _check_2d("image_features", image_features)
    _check_2d("text_features", text_features)
    if image_features.shape != text_features.shape:
        raise ValueError(
            f"image_features {tuple(image_features.shape)} and text_features {tuple(text_features.shape)} must "
            "have the same shape: one text per image"
        )
    rank, world = distributed_world()
    B = image_features.shape[0]
    if gather and world > 1:
        all_images, all_texts = gather_features(image_features), gather_features(text_features)  # (W * B, D)
    else:
        all_images, all_texts, rank = image_features, text_features, 0
    if chunk_size is not None:
        if world > 1 and gather:  # this rank's rows against every rank's keys, one direction at a time
            i2t = tiled_nce(image_features, all_texts, scale, offset=rank * B, chunk_size=chunk_size)
            t2i = tiled_nce(text_features, all_images, scale, offset=rank * B, chunk_size=chunk_size)
            return {"contrastive_loss": (i2t + t2i) / 2}
        # one matrix of logits serves both directions: its rows' and its columns' log-sum-exps
        return {
            "contrastive_loss": tiled_nce(image_features, text_features, scale, chunk_size=chunk_size, symmetric=True)
        }
    labels = torch.arange(B, device=image_features.device) + rank * B  # positions of the partners
    loss = (_key_nce(image_features, all_texts, labels, scale) + _key_nce(text_features, all_images, labels, scale)) / 2
    return {"contrastive_loss": loss}
