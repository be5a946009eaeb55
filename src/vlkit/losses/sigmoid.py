"""SigLIP's pairwise sigmoid loss (Zhai et al. 2023), whole or in tiles, on one process or many.

Every image-text pair of the batch is an independent binary problem, positive on the diagonal:

    L = -1/B * sum_i sum_j log sigmoid(label_ij * (scale * x_i . y_j + bias)),   label = +1 if i == j else -1

(the mean over images of the sum over texts; transformers' ``SiglipModel(return_loss=True)``).

Because the terms are independent, the B x B logits never need to exist at once: with
``chunk_size`` the loss and its gradients are summed over tiles of chunk_size x chunk_size
logits by a custom autograd function that saves only the features and recomputes each tile in
the backward pass. Under ``torch.distributed`` nothing is gathered: as in the paper's chunked
implementation, each rank scores its images against its own texts, then passes the text block
to the next rank of a ring and receives the previous rank's, W - 1 times. In the backward pass
the text blocks travel the same ring carrying their gradient, to which every rank adds its part,
and one last step hands each gradient back to its owner. A rank holds two text blocks (B x D) and
one tile of logits at a time; the loss and gradients equal one process on the global batch (with
gradients averaged over ranks, as DDP does).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F

from .contrastive import _check_2d, distributed_world


def _as_tensor(x, like: torch.Tensor) -> torch.Tensor:
    return x if isinstance(x, torch.Tensor) else torch.tensor(float(x), dtype=like.dtype, device=like.device)


def _tiles(n: int, size: int) -> list[slice]:
    return [slice(s, min(s + size, n)) for s in range(0, n, size)]


def _tile_logits(img: torch.Tensor, txt: torch.Tensor, scale, bias, rows: slice, cols: slice, diagonal: bool):
    """(sim, z = scale * sim + bias, labels) of one tile; labels +1 where image and text are a pair."""
    sim = img[rows] @ txt[cols].t()  # (r, c)
    z = scale * sim + bias
    labels = -torch.ones_like(z)
    if diagonal:  # the pairs: row index == column index within the rank's own block
        r = torch.arange(rows.start, rows.stop, device=z.device)[:, None]
        c = torch.arange(cols.start, cols.stop, device=z.device)[None, :]
        labels = torch.where(r == c, torch.ones_like(z), labels)
    return sim, z, labels


def _block_loss(img, txt, scale, bias, diagonal: bool, chunk: int) -> torch.Tensor:
    """Sum over one images x texts block of -log sigmoid(label * z), tile by tile."""
    total = img.new_zeros(())
    for rows in _tiles(img.shape[0], chunk):
        for cols in _tiles(txt.shape[0], chunk):
            _, z, labels = _tile_logits(img, txt, scale, bias, rows, cols, diagonal)
            total = total - F.logsigmoid(labels * z).sum()
    return total


def _block_grads(img, txt, scale, bias, diagonal: bool, chunk: int, g: torch.Tensor):
    """Gradients of g * block loss: (d img, d txt, d scale, d bias); one tile of logits at a time."""
    d_img, d_txt = torch.zeros_like(img), torch.zeros_like(txt)
    d_scale, d_bias = img.new_zeros(()), img.new_zeros(())
    for rows in _tiles(img.shape[0], chunk):
        for cols in _tiles(txt.shape[0], chunk):
            sim, z, labels = _tile_logits(img, txt, scale, bias, rows, cols, diagonal)
            dz = -g * labels * torch.sigmoid(-labels * z)  # d(-log sigmoid(l z))/dz = -l sigmoid(-l z)
            d_img[rows] += scale * (dz @ txt[cols])
            d_txt[cols] += scale * (dz.t() @ img[rows])
            d_scale += (dz * sim).sum()
            d_bias += dz.sum()
    return d_img, d_txt, d_scale, d_bias


def _ring_shift(x: torch.Tensor, rank: int, world: int) -> torch.Tensor:
    """Send ``x`` to the next rank of the ring and return what the previous rank sent."""
    received = torch.empty_like(x)
    ops = [
        dist.P2POp(dist.isend, x.contiguous(), (rank + 1) % world),
        dist.P2POp(dist.irecv, received, (rank - 1) % world),
    ]
    for work in dist.batch_isend_irecv(ops):
        work.wait()
    return received


class _SigmoidLoss(torch.autograd.Function):
    """The tiled (and, across ranks, ring-passed) sigmoid loss; saves only the features."""

    @staticmethod
    def forward(ctx, img, txt, scale, bias, chunk: int, distributed: bool):
        with torch.autocast(img.device.type, enabled=False):  # the tiles in float32 (or float64), never bf16
            return _SigmoidLoss._forward(ctx, img, txt, scale, bias, chunk, distributed)

    @staticmethod
    def _forward(ctx, img, txt, scale, bias, chunk: int, distributed: bool):
        rank, world = distributed_world() if distributed else (0, 1)
        dtype = torch.promote_types(img.dtype, torch.float32)  # tiles in float32 at least (bf16 features)
        x, y, s, b = img.detach().to(dtype), txt.detach().to(dtype), scale.detach().to(dtype), bias.detach().to(dtype)
        total, block = x.new_zeros(()), y
        for step in range(world):
            total = total + _block_loss(x, block, s, b, diagonal=step == 0, chunk=chunk)
            if step < world - 1:
                block = _ring_shift(block, rank, world)  # now the texts of rank (rank - step - 1) % world
        ctx.save_for_backward(img, txt, scale, bias)
        ctx.chunk, ctx.rank, ctx.world, ctx.device_type = chunk, rank, world, img.device.type
        return total / img.shape[0]  # in the tiles' dtype (float32 for bf16 features)

    @staticmethod
    def backward(ctx, grad):
        with torch.autocast(ctx.device_type, enabled=False):
            return _SigmoidLoss._backward(ctx, grad)

    @staticmethod
    def _backward(ctx, grad):
        img, txt, scale, bias = ctx.saved_tensors
        rank, world, chunk = ctx.rank, ctx.world, ctx.chunk
        dtype = torch.promote_types(img.dtype, torch.float32)
        x, y, s, b = img.to(dtype), txt.to(dtype), scale.to(dtype), bias.to(dtype)
        g = grad.to(dtype) / img.shape[0]
        d_img, d_scale, d_bias = torch.zeros_like(x), x.new_zeros(()), x.new_zeros(())
        block, d_block = y, torch.zeros_like(y)  # a text block and the gradient it has gathered so far
        for step in range(world):
            gi, gt, gs, gb = _block_grads(x, block, s, b, diagonal=step == 0, chunk=chunk, g=g)
            d_img, d_block, d_scale, d_bias = d_img + gi, d_block + gt, d_scale + gs, d_bias + gb
            if step < world - 1:
                block, d_block = _ring_shift(block, rank, world), _ring_shift(d_block, rank, world)
        if world > 1:  # d_block belongs to rank + 1's texts: one more step takes it home
            d_block = _ring_shift(d_block, rank, world)
        return (
            d_img.to(img.dtype),
            d_block.to(txt.dtype),
            d_scale.to(scale.dtype).reshape(scale.shape) if ctx.needs_input_grad[2] else None,
            d_bias.to(bias.dtype).reshape(bias.shape) if ctx.needs_input_grad[3] else None,
            None,
            None,
        )


def sigmoid_logits(image_features: torch.Tensor, text_features: torch.Tensor, scale, bias) -> torch.Tensor:
    """scale * cosine similarities + bias, images x texts (B_img, B_txt) (L2-normalised features)."""
    return scale * image_features @ text_features.t() + bias


def sigmoid_loss(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    scale,
    bias,
    *,
    chunk_size: int | None = None,
    gather: bool = True,
) -> dict[str, torch.Tensor]:
    """SigLIP's sigmoid loss (see the module docs).

    image_features, text_features: (B, D), row i of each a pair (L2-normalised); scale, bias: the
    model's ``scale()`` and ``logit_bias`` (tensors or numbers). ``chunk_size``: compute in tiles of
    at most chunk_size x chunk_size logits (forward and backward). With ``gather`` under
    torch.distributed, every rank's images are scored against the texts of all ranks (ring-passed,
    never gathered); every rank must pass the same B. Returns {"sigmoid_loss": scalar}.
    """
    _check_2d("image_features", image_features)
    _check_2d("text_features", text_features)
    if image_features.shape != text_features.shape:
        raise ValueError(
            f"image_features {tuple(image_features.shape)} and text_features {tuple(text_features.shape)} must "
            "have the same shape: one text per image"
        )
    if chunk_size is not None and (not isinstance(chunk_size, int) or chunk_size < 1):
        raise ValueError(f"chunk_size must be a positive integer or None, got {chunk_size!r}")
    scale, bias = _as_tensor(scale, image_features), _as_tensor(bias, image_features)
    world = distributed_world()[1] if gather else 1
    if chunk_size is None and world == 1:
        logits = sigmoid_logits(image_features, text_features, scale, bias)  # (B, B)
        labels = 2 * torch.eye(len(logits), dtype=logits.dtype, device=logits.device) - 1
        return {"sigmoid_loss": -F.logsigmoid(labels * logits).sum() / len(logits)}
    chunk = chunk_size or image_features.shape[0]
    return {"sigmoid_loss": _SigmoidLoss.apply(image_features, text_features, scale, bias, chunk, world > 1)}
