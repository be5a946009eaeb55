"""Image-text matching (ITM) with hard negatives, as ALBEF and BLIP train it.

For every image one text, and for every text one image, is drawn as a negative with probability
proportional to the softmax of their contrastive similarity, positives excluded: the pair itself
and, when ids are given, every other caption of the same image. The matching head then sees
``B`` positive pairs followed by ``2B`` negative pairs (image with its sampled text, text with its
sampled image) and is trained with a two-way cross-entropy (label 1 = matched).

Across ranks the candidates are the features of the whole global batch (gathered by the caller
with :func:`vlkit.losses.contrastive.gather_features`); row i of rank r is global sample
``r * B + i``.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F

from .contrastive import distributed_world, gather_features

MATCHED, NOT_MATCHED = 1, 0


def caption_ids(captions: Sequence[str], device: torch.device | None = None) -> torch.Tensor:
    """A pair id per caption (B,): equal captions get equal ids, on every rank (CRC-32 of the text),
    the ``ids`` of :func:`positive_mask` when equal captions count as one pair."""
    return torch.tensor([zlib.crc32(c.encode("utf-8")) for c in captions], dtype=torch.long, device=device)


def positive_mask(
    num_rows: int,
    num_columns: int,
    offset: int = 0,
    ids: torch.Tensor | None = None,
    column_ids: torch.Tensor | None = None,
    device: torch.device | None = None,
) -> torch.Tensor:
    """Which candidates are positives for each row, (R, N) bool: row i's own pair is column
    ``offset + i``; with ``ids`` (R,) and ``column_ids`` (N,) also every column with the same id."""
    if offset + num_rows > num_columns:
        raise ValueError(f"rows {offset}..{offset + num_rows - 1} do not fit in {num_columns} candidates")
    cols = torch.arange(num_columns, device=device)
    rows = torch.arange(num_rows, device=device) + offset
    mask = cols[None, :] == rows[:, None]  # (R, N)
    if ids is not None or column_ids is not None:
        if ids is None or column_ids is None or ids.shape != (num_rows,) or column_ids.shape != (num_columns,):
            raise ValueError(
                f"ids must be ({num_rows},) and column_ids ({num_columns},), got "
                f"{None if ids is None else tuple(ids.shape)} and "
                f"{None if column_ids is None else tuple(column_ids.shape)}"
            )
        mask = mask | (ids.to(device)[:, None] == column_ids.to(device)[None, :])
    return mask


def sample_negatives(
    similarity: torch.Tensor, positives: torch.Tensor, generator: torch.Generator | None = None
) -> torch.Tensor:
    """One column per row (R,), drawn with probability ``softmax(similarity[i])`` renormalised
    over the non-positive columns (computed by masking the logits, so that it stays exact when
    the positive's probability is close to 1). ``similarity``: (R, N) scaled logits.

    Raises ValueError when a row has no negative candidate (every candidate is a positive); that
    check reads one value on the host, so under ``torch.compile`` it is left out and such a row
    draws among its N columns (all positives) by the softmax of its similarities. The draw itself never syncs: it is
    ``torch.multinomial``'s one-sample draw (``argmax(p / q)``, ``q ~ Exp(1)``) written out
    without that function's host-side checks, the same numbers from the same generator state.
    """
    if similarity.shape != positives.shape:
        raise ValueError(f"similarity {tuple(similarity.shape)} and positives {tuple(positives.shape)} differ in shape")
    with torch.no_grad():
        no_candidate = positives.all(dim=1, keepdim=True)  # (R, 1)
        if not torch.compiler.is_compiling():
            _check_candidates(no_candidate, positives.shape[1])
        logits = similarity.detach().float().masked_fill(positives & ~no_candidate, float("-inf"))  # (R, N)
        probs = F.softmax(logits, dim=1)  # (R, N)
        q = torch.empty_like(probs).exponential_(1.0, generator=generator)  # (R, N) ~ Exp(1)
        return (probs / q).argmax(dim=1)  # (R,)


def _check_candidates(no_candidate: torch.Tensor, num_columns: int) -> None:
    """A ValueError naming the first row without a negative candidate (a host read)."""
    if bool(no_candidate.any()):
        row = int(no_candidate.nonzero()[0, 0])
        raise ValueError(
            f"row {row} has no negative to sample: all {num_columns} candidates are its "
            "positives (same pair or same id); use a larger batch or more distinct ids"
        )


def sample_itm_negatives(
    sim_i2t: torch.Tensor,
    sim_t2i: torch.Tensor,
    offset: int = 0,
    ids: torch.Tensor | None = None,
    all_ids: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Hard negatives of a local batch of B pairs among N (global) candidates.

    ``sim_i2t`` (B, N): local images against all texts; ``sim_t2i`` (B, N): local texts against
    all images; ``offset``: global index of local pair 0 (``rank * B``); ``ids`` (B,) / ``all_ids``
    (N,): image ids, so that captions of the same image are never negatives.
    Returns ``(text index for each image, image index for each text)``, both (B,) into the N.
    """
    B, N = sim_i2t.shape
    if sim_t2i.shape != (B, N):
        raise ValueError(f"sim_i2t {tuple(sim_i2t.shape)} and sim_t2i {tuple(sim_t2i.shape)} must both be (B, N)")
    pos = positive_mask(B, N, offset, ids, all_ids, device=sim_i2t.device)
    text_for_image = sample_negatives(sim_i2t, pos, generator)
    image_for_text = sample_negatives(sim_t2i, pos, generator)
    return text_for_image, image_for_text


def itm_labels(batch_size: int, device: torch.device | None = None) -> torch.Tensor:
    """Labels of the (3B,) ITM logits: B matched pairs, then 2B negatives (images with a sampled
    text, then texts with a sampled image)."""
    return torch.cat(
        [
            torch.full((batch_size,), MATCHED, dtype=torch.long, device=device),
            torch.full((2 * batch_size,), NOT_MATCHED, dtype=torch.long, device=device),
        ]
    )


def itm_loss(logits: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
    """Two-way cross-entropy of ITM logits (3B, 2) laid out as :func:`itm_labels` says."""
    if logits.dim() != 2 or logits.shape[1] != 2:
        raise ValueError(f"ITM logits must be (N, 2), got {tuple(logits.shape)}")
    if labels is None:
        if logits.shape[0] % 3:
            raise ValueError(
                f"without labels the ITM logits must be 3B rows (B positives, 2B negatives), got {logits.shape[0]}"
            )
        labels = itm_labels(logits.shape[0] // 3, logits.device)
    return F.cross_entropy(logits.float(), labels)


def gather_padded(x: torch.Tensor, pad_value: float | int = 0) -> torch.Tensor:
    """All ranks' rows of ``x`` (B, ...) in rank order (W * B, ...), gradients flowing back to
    their owners (:func:`~vlkit.losses.contrastive.gather_features`). Sequences (``x.dim() >= 2``)
    are first right-padded along dim 1 with ``pad_value`` to the longest length on any rank, since
    each rank pads its captions to its own batch's longest. Identity outside torch.distributed."""
    if distributed_world()[1] == 1:
        return x
    if x.dim() >= 2:
        length = torch.tensor([x.shape[1]], device=x.device)
        dist.all_reduce(length, op=dist.ReduceOp.MAX)
        x = pad_to_length(x, int(length.item()), pad_value)
    return gather_features(x)


def pad_to_length(x: torch.Tensor, length: int, pad_value: float | int = 0) -> torch.Tensor:
    """Right-pad dim 1 of (B, T, ...) to ``length``."""
    extra = length - x.shape[1]
    if extra < 0:
        raise ValueError(f"cannot pad a sequence of {x.shape[1]} down to {length}")
    if extra == 0:
        return x
    pad = x.new_full((x.shape[0], extra, *x.shape[2:]), pad_value)
    return torch.cat([x, pad], dim=1)


def hard_negatives(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    scale: torch.Tensor | float,
    image_side: torch.Tensor,
    text_side: Mapping[str, torch.Tensor],
    text_pad_values: Mapping[str, float | int] | None = None,
    ids: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    all_ranks: bool = True,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Pick the ITM hard negatives of a local batch of B pairs, among all ranks' samples
    (``all_ranks=False``: among this rank's batch only, ALBEF's pre-training choice).

    ``image_features``/``text_features`` (B, D): normalised ITC features (only their similarities
    ``scale * f_i . f_t`` are used, without gradient); ``image_side`` (B, S, C): what the fusion
    encoder reads of an image; ``text_side``: what it reads of a text, e.g. ``{"hidden": (B, T, H),
    "attention_mask": (B, T)}`` (ALBEF) or ``{"input_ids", "attention_mask"}`` (BLIP), padded with
    ``text_pad_values[name]`` (default 0) when ranks' lengths differ; ``ids`` (B,): image ids
    (texts with the same id are never negatives of each other's images).

    Returns ``(image for each local text (B, S, C), {name: text for each local image (B, T', ...)})``
    where T' is the longest text length over the ranks; gradients reach the chosen samples.
    """
    rank, world = distributed_world() if all_ranks else (0, 1)
    gather = gather_features if all_ranks else (lambda t: t)
    gather_side = gather_padded if all_ranks else (lambda t, pad=0: t)
    B = image_features.shape[0]
    pads = dict(text_pad_values or {})
    with torch.no_grad():
        all_image_features = gather(image_features.detach())  # (W * B, D)
        all_text_features = gather(text_features.detach())  # (W * B, D)
        all_ids = None if ids is None else gather(ids)  # (W * B,)
        s = scale.detach() if torch.is_tensor(scale) else scale
        sim_i2t = s * image_features.detach() @ all_text_features.t()  # (B, W * B)
        sim_t2i = s * text_features.detach() @ all_image_features.t()  # (B, W * B)
        text_idx, image_idx = sample_itm_negatives(
            sim_i2t, sim_t2i, rank * B if world > 1 else 0, ids, all_ids, generator
        )
    negative_images = gather_side(image_side)[image_idx]  # (B, S, C)
    negative_texts = {name: gather_side(t, pads.get(name, 0))[text_idx] for name, t in text_side.items()}
    return negative_images, negative_texts


def itm_pairs(
    image_side: torch.Tensor,
    text_side: Mapping[str, torch.Tensor],
    negative_images: torch.Tensor,
    negative_texts: Mapping[str, torch.Tensor],
    text_pad_values: Mapping[str, float | int] | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The 3B pairs in :func:`itm_labels` order: (image i, text i), (image i, its negative text),
    (the negative image of text i, text i). Returns (images (3B, S, C), {name: texts (3B, T', ...)})."""
    pads = dict(text_pad_values or {})
    length = max([t.shape[1] for t in negative_texts.values()] + [t.shape[1] for t in text_side.values()])
    texts = {}
    for name, t in text_side.items():
        own = pad_to_length(t, length, pads.get(name, 0))
        texts[name] = torch.cat([own, pad_to_length(negative_texts[name], length, pads.get(name, 0)), own])
    images = torch.cat([image_side, image_side, negative_images])  # (3B, S, C)
    return images, texts
