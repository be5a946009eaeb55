"""CLIP's contrastive loss computed in tiles of the logits: memory O(B * D + chunk^2), not O(B^2).

The loss of rows ``a`` (Na, D) against keys ``c`` (Nc, D), with row i's positive at key
``offset + i``, is

    loss = mean_i [ LSE_j(s a_i . c_j) - s a_i . c_(offset+i) ]

and, with ``symmetric`` (a and c the two sides of one batch), the mean of that and the same over
columns: CLIP's image->text and text->image directions from one matrix of logits. The forward
pass visits the (chunk x chunk) tiles of ``s * a @ c.T`` one at a time and folds each into running
log-sum-exps of its rows (and columns): the online log-sum-exp of Inf-CL (Cheng et al. 2024) and
of FlashAttention. It saves for backward only ``a``, ``c``, ``s`` and the per-row (per-column)
log-sum-exps; the backward pass recomputes each tile's logits, turns them into softmax
probabilities with the saved log-sum-exps and accumulates

    d a_I += P_IJ @ c_J,    d c_J += P_IJ.T @ a_I,    d s += sum(P_IJ * (a_I @ c_J.T))

(plus the positives' terms, which need no tile). So at most one tile of logits and its
temporaries exist at any time, in the forward pass and in the backward pass: no B x B tensor is
made or saved. Tiles are computed in the features' dtype and accumulated in at least float32.
"""

from __future__ import annotations

import torch


def _accum_dtype(*dtypes: torch.dtype) -> torch.dtype:
    out = torch.float32
    for dtype in dtypes:
        out = torch.promote_types(out, dtype)
    return out


def _tile_similarities(a_i: torch.Tensor, c_j: torch.Tensor, acc: torch.dtype) -> torch.Tensor:
    """a_i (ci, D), c_j (cj, D) -> their dot products (ci, cj) in the accumulation dtype (a new tensor)."""
    return (a_i @ c_j.t()).to(acc)


def _row_dots(a_i: torch.Tensor, c_i: torch.Tensor, acc: torch.dtype) -> torch.Tensor:
    """(ci, D), (ci, D) -> row-wise dot products (ci,) in the accumulation dtype."""
    return (a_i.to(acc) * c_i.to(acc)).sum(dim=1)


def _spans(n: int, chunk: int) -> list[slice]:
    return [slice(start, min(start + chunk, n)) for start in range(0, n, chunk)]


class TiledContrastive(torch.autograd.Function):
    """``apply(a, c, scale, offset, chunk, symmetric) -> scalar loss`` (see the module docstring).

    a (Na, D), c (Nc, D); ``scale`` a 0-dim tensor (it may require grad); ``offset`` where row 0's
    positive is among the keys; ``symmetric`` (Na == Nc, offset 0) also averages the column
    direction in."""

    @staticmethod
    def forward(ctx, a, c, scale, offset: int, chunk: int, symmetric: bool):
        acc = _accum_dtype(a.dtype, c.dtype, scale.dtype)
        s = scale.detach().to(acc)
        Na, Nc = a.shape[0], c.shape[0]
        with torch.autocast(a.device.type, enabled=False):
            row_lse = torch.full((Na,), -torch.inf, dtype=acc, device=a.device)  # (Na,)
            col_lse = torch.full((Nc if symmetric else 0,), -torch.inf, dtype=acc, device=a.device)  # (Nc,)
            for rows in _spans(Na, chunk):
                for cols in _spans(Nc, chunk):
                    logits = _tile_similarities(a[rows], c[cols], acc).mul_(s)  # (ci, cj)
                    row_lse[rows] = torch.logaddexp(row_lse[rows], torch.logsumexp(logits, dim=1))
                    if symmetric:
                        col_lse[cols] = torch.logaddexp(col_lse[cols], torch.logsumexp(logits, dim=0))
            positives = torch.cat(  # (Na,) raw a_i . c_(offset+i), a chunk of rows at a time
                [_row_dots(a[rows], c[offset + rows.start : offset + rows.stop], acc) for rows in _spans(Na, chunk)]
            )
            lse_sum = row_lse.sum() + col_lse.sum()
            loss = lse_sum / (2 * Na if symmetric else Na) - s * positives.mean()
        ctx.save_for_backward(a, c, scale, row_lse, col_lse, positives)
        ctx.offset, ctx.chunk, ctx.symmetric = offset, chunk, symmetric
        return loss

    @staticmethod
    def backward(ctx, grad):
        a, c, scale, row_lse, col_lse, positives = ctx.saved_tensors
        offset, chunk, symmetric = ctx.offset, ctx.chunk, ctx.symmetric
        acc = row_lse.dtype
        s, g = scale.detach().to(acc), grad.to(acc)
        Na, Nc = a.shape[0], c.shape[0]
        weight = 1.0 / (2 * Na if symmetric else Na)  # d loss / d (each log-sum-exp)
        need_a, need_c, need_s = ctx.needs_input_grad[:3]
        grad_a = torch.zeros(a.shape, dtype=acc, device=a.device) if need_a else None  # (Na, D)
        grad_c = torch.zeros(c.shape, dtype=acc, device=c.device) if need_c else None  # (Nc, D)
        grad_s = torch.zeros((), dtype=acc, device=a.device)
        with torch.autocast(a.device.type, enabled=False):
            for rows in _spans(Na, chunk):
                a_i = a[rows]
                for cols in _spans(Nc, chunk):
                    c_j = c[cols]
                    raw = _tile_similarities(a_i, c_j, acc)  # (ci, cj)
                    logits = raw * s
                    probs = torch.exp(logits - row_lse[rows, None])  # row softmax of the tile's logits
                    if symmetric:
                        probs += logits.sub_(col_lse[None, cols]).exp_()  # plus the column softmax
                    if need_s:
                        grad_s += torch.dot(probs.view(-1), raw.view(-1))  # sum(probs * raw)
                    probs = probs.to(a.dtype)
                    if grad_a is not None:
                        grad_a[rows] += (probs @ c_j).to(acc)
                    if grad_c is not None:
                        grad_c[cols] += (probs.t() @ a_i).to(acc)
            # the tiles' softmax part is scaled by weight * s; the positives' part needs no tile
            # (addcmul_ scales in place: no (N, D) temporary)
            minus_positive_weight = -s / Na
            if grad_a is not None:
                grad_a.mul_(weight * s).addcmul_(c[offset : offset + Na], minus_positive_weight).mul_(g)
            if grad_c is not None:
                grad_c.mul_(weight * s)
                grad_c[offset : offset + Na].addcmul_(a, minus_positive_weight)
                grad_c.mul_(g)
            grad_scale = (grad_s * weight - positives.mean()) * g if need_s else None
        return (
            None if grad_a is None else grad_a.to(a.dtype),
            None if grad_c is None else grad_c.to(c.dtype),
            None if grad_scale is None else grad_scale.to(scale.dtype),
            None,
            None,
            None,
        )


def check_chunk_size(chunk_size) -> None:
    """``chunk_size`` must be None (no tiling) or a positive int."""
    if chunk_size is None:
        return
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size <= 0:
        raise ValueError(f"chunk_size must be None or a positive integer, got {chunk_size!r}")


def tiled_nce(
    a: torch.Tensor, c: torch.Tensor, scale, *, offset: int = 0, chunk_size: int, symmetric: bool = False
) -> torch.Tensor:
    """Mean InfoNCE of rows ``a`` (Na, D) against keys ``c`` (Nc, D) at inverse temperature ``scale``
    (a float or a 0-dim tensor), row i's positive at key ``offset + i``, in tiles of ``chunk_size``
    (see the module docstring); ``symmetric``: the mean of both directions of a square batch."""
    check_chunk_size(chunk_size)
    if offset < 0 or offset + a.shape[0] > c.shape[0]:
        raise ValueError(f"offset {offset} puts the {a.shape[0]} positives outside the {c.shape[0]} keys")
    if symmetric and (a.shape[0] != c.shape[0] or offset != 0):
        raise ValueError("symmetric needs as many rows as keys and offset 0")
    if a.dtype != c.dtype:
        raise ValueError(f"rows and keys must have one dtype, got {a.dtype} and {c.dtype}")
    if not torch.is_tensor(scale):
        scale = torch.tensor(float(scale), dtype=_accum_dtype(a.dtype), device=a.device)
    if scale.numel() != 1:
        raise ValueError(f"scale must be a number or a one-element tensor, got shape {tuple(scale.shape)}")
    return TiledContrastive.apply(a, c, scale.reshape(()), offset, chunk_size, symmetric)
