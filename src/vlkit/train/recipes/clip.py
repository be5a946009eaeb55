"""The CLIP recipe: builds a two-tower model, its preprocessing and batches; trains it with
:class:`vlkit.tasks.CLIPTask` (symmetric contrastive loss, gathered over all processes under
torchrun); ``evaluate`` gives validation loss, Recall@K both ways and, on data with zero-shot
labels (the built-in shapes), zero-shot top-1/top-5 accuracy per label set.
"""
from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ...data.loader import ImageTextCollator, eval_loader
from ...eval.retrieval import retrieval_metrics, similarity_matrix, unique_captions
from ...eval.zeroshot import zeroshot_accuracy
from ...losses.contrastive import clip_loss
from ...tasks import CLIPTask


@dataclass
class EvalOutput:
    """Metrics of one evaluation, and a small similarity matrix (images x their captions) to plot."""

    metrics: dict[str, float]
    similarity: torch.Tensor | None = None
    texts: list[str] = field(default_factory=list)


def _autocast(device: torch.device, precision: str):
    if precision == "bf16" or (precision == "auto" and device.type == "cuda"):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext()


class CLIPRecipe:
    """Builds the model, its preprocessing and batches; ``losses`` and ``log_values`` are the task's.

    ``model_spec`` is the ``model`` section of a training config: ``{"preset": "clip-tiny",
    **create_model overrides}`` or ``{"pretrained": folder}``.
    """

    name = "clip"
    validation_loss = "contrastive_loss"  # what evaluate()'s "loss" is (the loss plot's label)

    def __init__(self, model_spec: dict[str, Any] | None = None, tokenizer: str = "clip") -> None:
        self.model_spec = dict(model_spec or {"preset": "clip-tiny"})
        self.tokenizer_name = tokenizer
        self._tokenizer = None
        self._task = None

    @property
    def task(self):
        """The task (model + losses) this recipe trains; built on first use."""
        if self._task is None:
            self._task = self.make_task()
        return self._task

    def make_task(self):
        return CLIPTask()

    # ------------------------------------------------------------------ building
    def build_model(self) -> nn.Module:
        import vlkit

        spec = dict(self.model_spec)
        pretrained, preset = spec.pop("pretrained", None), spec.pop("preset", None)
        if pretrained is not None:
            model = vlkit.from_pretrained(pretrained, **spec)
        elif preset is not None:
            model = vlkit.create_model(preset, **spec)
        else:
            raise ValueError("model needs a 'preset' (e.g. clip-tiny) or a 'pretrained' folder")
        for name in ("encode_image", "encode_text", "scale"):
            if not callable(getattr(model, name, None)):
                raise TypeError(f"the clip task needs a two-tower model with {name}(); got {type(model).__name__}")
        return model

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            import vlkit

            self._tokenizer = vlkit.get_tokenizer(self.tokenizer_name)
        return self._tokenizer

    def image_size(self, model: nn.Module) -> int:
        return model.config.vision.image_size

    def transform(self, model: nn.Module, train: bool = False) -> Callable:
        import vlkit

        return vlkit.image_transform(model, train=train)

    def collate(self) -> Callable:
        return ImageTextCollator(self.tokenizer)

    # ------------------------------------------------------------------ training
    def batch_size(self, batch: dict[str, Any]) -> int:
        """The number of samples in a batch (0 when every sample was unreadable)."""
        return len(batch["captions"])

    def losses(self, model: nn.Module, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        return self.task.losses(model, batch)

    def log_values(self, model: nn.Module) -> dict[str, float]:
        return self.task.log_values(model)

    def summary(self, metrics: dict[str, float], num_images: int | None = None) -> list[str]:
        """The headline numbers of an evaluation, as lines for people."""
        on = f" on {num_images} held-out images" if num_images else ""
        lines = []
        zs = sorted({k[len("zeroshot_"):].rsplit("_", 1)[0] for k in metrics if k.startswith("zeroshot_")})
        if zs:
            parts = ", ".join(f"{name} {metrics[f'zeroshot_{name}_top1']:.1f}%" for name in zs)
            lines.append(f"zero-shot top-1 accuracy{on}: {parts}")
        if "i2t_R@1" in metrics:
            lines.append(
                f"retrieval Recall@1{on}: image->text {metrics['i2t_R@1']:.1f}%, text->image {metrics['t2i_R@1']:.1f}%"
                f" (Recall@5: {metrics['i2t_R@5']:.1f}%, {metrics['t2i_R@5']:.1f}%)"
            )
        return lines

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def evaluate(
        self, model: nn.Module, dataset, *, batch_size: int = 256, device: torch.device | str = "cpu",
        precision: str = "auto", zeroshot: bool = True, retrieval: bool = True, plot_size: int = 12,
    ) -> EvalOutput:
        """Validation loss (mean over batches of ``batch_size``), Recall@1/5/10 and zero-shot accuracy."""
        device = torch.device(device)
        was_training = model.training
        model.eval()
        image_feats, text_feats, captions = [], [], []
        loss_sum, n = 0.0, 0
        for batch in eval_loader(dataset, self.collate(), batch_size):
            if "pixel_values" not in batch:
                continue
            with _autocast(device, precision):
                img, txt = model(
                    batch["pixel_values"].to(device), batch["input_ids"].to(device), batch["attention_mask"].to(device)
                )  # (B, D) each, normalised
                loss = clip_loss(img, txt, model.scale(), gather=False)["contrastive_loss"]
            loss_sum += loss.float().item() * len(img)
            n += len(img)
            image_feats.append(img.float().cpu())
            text_feats.append(txt.float().cpu())
            captions += batch["captions"]
        if n == 0:
            raise ValueError("the validation data has no usable samples")
        image_feats, text_feats = torch.cat(image_feats), torch.cat(text_feats)  # (N, D)
        metrics: dict[str, float] = {"loss": loss_sum / n}
        if retrieval:
            texts, positives = unique_captions(captions)  # several images may share one caption
            first = {}
            for i, c in enumerate(captions):
                first.setdefault(c, i)
            unique_feats = text_feats[torch.tensor([first[t] for t in texts])]  # (N_unique, D)
            metrics.update(retrieval_metrics(image_feats, unique_feats, positives))
        if zeroshot and hasattr(dataset, "zeroshot_tasks"):
            for name, zs in dataset.zeroshot_tasks().items():
                acc = zeroshot_accuracy(
                    model, self.tokenizer, image_feats, zs.labels, zs.classnames, zs.templates, device=device,
                    precision=precision,
                )
                metrics.update({f"zeroshot_{name}_{k}": v for k, v in acc.items()})
        k = min(plot_size, n)
        sim = similarity_matrix(image_feats[:k], text_feats[:k])  # (k, k): images x their own captions
        model.train(was_training)
        return EvalOutput(metrics, sim, captions[:k])
