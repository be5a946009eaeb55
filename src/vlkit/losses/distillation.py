"""Momentum distillation (ALBEF): soft targets mixed from a momentum (EMA) teacher's predictions,
and the image-text contrastive loss against the momentum features and their queues."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean over rows of ``-sum_j targets[i, j] * log_softmax(logits)[i, j]`` (last dim), in float32."""
    if logits.shape != targets.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and targets {tuple(targets.shape)} must have the same shape")
    return -(targets.float() * F.log_softmax(logits.float(), dim=-1)).sum(-1).mean()


def distillation_targets(teacher_logits: torch.Tensor, hard_targets: torch.Tensor, alpha: float) -> torch.Tensor:
    """``alpha * softmax(teacher_logits) + (1 - alpha) * hard_targets`` (rows of both sum to 1)."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    return alpha * F.softmax(teacher_logits.detach().float(), dim=-1) + (1.0 - alpha) * hard_targets.float()


def contrastive_targets(
    batch_size: int,
    num_columns: int,
    ids: torch.Tensor | None = None,
    column_ids: torch.Tensor | None = None,
    device: torch.device | None = None,
) -> torch.Tensor:
    """Hard ITC targets (B, N) whose rows sum to 1.

    Without ids: one-hot on column i for row i (the paired sample sits first among the columns).
    With ``ids`` (B,) and ``column_ids`` (N,): uniform over every column with the same id (other
    captions of the same image count as positives, as in ALBEF's retrieval fine-tuning); the
    paired column i is always positive.
    """
    columns = torch.arange(num_columns, device=device)
    targets = (columns[None, :] == torch.arange(batch_size, device=device)[:, None]).float()  # (B, N): row i's pair
    if ids is not None:
        if column_ids is None or column_ids.shape[0] != num_columns or ids.shape[0] != batch_size:
            raise ValueError(f"ids must be ({batch_size},) and column_ids ({num_columns},)")
        targets = torch.maximum(targets, (ids.reshape(-1, 1) == column_ids.reshape(1, -1)).float())
    return targets / targets.sum(dim=1, keepdim=True)


def itc_distillation_loss(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    image_features_m: torch.Tensor,
    text_features_m: torch.Tensor,
    logit_scale: torch.Tensor | float,
    image_queue: torch.Tensor | None = None,
    text_queue: torch.Tensor | None = None,
    alpha: float = 0.4,
    ids: torch.Tensor | None = None,
    queue_ids: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """ALBEF's image-text contrastive loss with momentum distillation.

    ``image_features``/``text_features`` (B, D): the online model's normalised projections;
    ``*_m`` (B, D) the momentum model's; queues (K, D) hold earlier momentum features (K may be 0).
    Each image is scored against the momentum texts of the batch followed by the text queue (and
    each text against images): ``sim = logit_scale * f @ [f_m; queue]^T`` (B, B + K). The target
    is ``alpha * softmax(momentum model's sim) + (1 - alpha) * hard`` where ``hard`` is the
    one-hot pair (or uniform over columns sharing the id when ``ids``/``queue_ids`` are given).
    Returns ``{"itc_loss": mean of the image->text and text->image soft cross-entropies}``.
    """
    B, D = image_features.shape
    if text_features.shape != (B, D) or image_features_m.shape != (B, D) or text_features_m.shape != (B, D):
        raise ValueError(
            "image/text features and their momentum versions must all be (B, D); got "
            f"{[tuple(t.shape) for t in (image_features, text_features, image_features_m, text_features_m)]}"
        )
    image_queue = image_features_m.new_zeros(0, D) if image_queue is None else image_queue
    text_queue = text_features_m.new_zeros(0, D) if text_queue is None else text_queue
    if image_queue.shape != text_queue.shape or image_queue.shape[1:] != (D,):
        raise ValueError(f"queues must both be (K, {D}); got {tuple(image_queue.shape)} and {tuple(text_queue.shape)}")
    with torch.no_grad():
        image_all_m = torch.cat([image_features_m, image_queue.to(image_features_m.dtype)])  # (B + K, D)
        text_all_m = torch.cat([text_features_m, text_queue.to(text_features_m.dtype)])  # (B + K, D)
        column_ids = None
        if ids is not None:
            if queue_ids is None:
                queue_ids = ids.new_full((image_queue.shape[0],), -1)
            column_ids = torch.cat([ids, queue_ids.to(ids.dtype)])  # (B + K,)
        hard = contrastive_targets(B, B + image_queue.shape[0], ids, column_ids, device=image_features.device)
        if alpha > 0:
            scale_m = logit_scale.detach() if torch.is_tensor(logit_scale) else logit_scale
            target_i2t = distillation_targets(scale_m * image_features_m @ text_all_m.t(), hard, alpha)
            target_t2i = distillation_targets(scale_m * text_features_m @ image_all_m.t(), hard, alpha)
        else:
            target_i2t = target_t2i = hard
    sim_i2t = logit_scale * image_features @ text_all_m.t()  # (B, B + K)
    sim_t2i = logit_scale * text_features @ image_all_m.t()  # (B, B + K)
    loss = (soft_cross_entropy(sim_i2t, target_i2t) + soft_cross_entropy(sim_t2i, target_t2i)) / 2
    return {"itc_loss": loss}
