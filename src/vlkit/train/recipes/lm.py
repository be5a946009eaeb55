"""The ``lm`` recipe: a decoder language model (GPT, OPT, Llama) trained on text alone, next-token
cross-entropy (:mod:`vlkit.tasks.lm`), so that a VLM or BLIP-2 can start from an LLM that already
speaks the data's language.

Data: ``data.kind: shapes-text`` (the built-in shapes' captions, chat-template conversations and
"question: ... answer: ..." texts, no image rendered: :class:`vlkit.data.text_corpus.ShapesText`)
or ``data.kind: text`` (``data.train_annotations`` / ``val_annotations``: text files, one sample
per line). Each sample is ``<bos> text <eos>``; padding is labelled -100.

A preset is built with the tokenizer's start, end and padding ids (unless the ``model`` section
sets them) and must have room for its vocabulary. Evaluation: validation loss, perplexity and
next-token accuracy. The saved ``model/`` folder (config, weights and the tokenizer) loads with
``vlkit.from_pretrained``.

Options (the config's ``task:`` section): ``tokenizer`` ("conversations": the shapes' word
tokenizer, :func:`vlkit.data.conversations.conversation_tokenizer`; or a preset or a folder),
``max_length`` (tokens per sample, start and end included; longer ones are cut).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ...data.loader import eval_loader
from ...data.skips import start_batch
from ...models.decoder import DecoderLM
from ...runtime import autocast, eval_mode
from ...tasks.lm import IGNORE_INDEX, LMTask, next_token_loss
from .base import Recipe
from .common import EvalOutput, check_vocabulary, model_from_spec

SPECIAL_FIELDS = {"bos_token_id": "bos_token_id", "eos_token_id": "eos_token_id", "pad_token_id": "padding_id"}


@dataclass(frozen=True)
class LMOptions:
    tokenizer: str = "conversations"  # the shapes' word tokenizer, a preset or a folder
    max_length: int = 128  # tokens per sample (with <bos> and <eos>); longer samples are cut

    def __post_init__(self) -> None:
        if self.max_length < 2:
            raise ValueError(f"max_length must be at least 2 (a start and an end token), got {self.max_length}")


class TextCollator:
    """Items with a ``text`` -> ``{"input_ids", "attention_mask", "labels" (B, T) right-padded,
    "texts", "index", "skipped"}``: ``<bos> text <eos>`` (no second end token when the text ends
    with one), cut to ``max_length``; labels -100 on the start token and the padding."""

    def __init__(self, tokenizer, max_length: int = 128) -> None:
        self.tokenizer, self.max_length = tokenizer, max_length
        self.bos, self.eos = tokenizer.bos_token_id, tokenizer.eos_token_id

    def encode(self, text: str) -> list[int]:
        ids = self.tokenizer.encode(text)
        if self.eos is not None and (not ids or ids[-1] != self.eos):
            ids.append(self.eos)
        if self.bos is not None:
            ids.insert(0, self.bos)
        return ids[: self.max_length]

    def __call__(self, items: Sequence[dict[str, Any]]) -> dict[str, Any]:
        batch, items = start_batch(items)
        if not items:
            return batch
        if "text" not in items[0]:
            raise TypeError("the lm task reads text samples: use data.kind shapes-text or text (items have no 'text')")
        rows = [self.encode(it["text"]) for it in items]
        width, pad = max(len(r) for r in rows), self.tokenizer.padding_id
        ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows], dtype=torch.long)  # (B, T)
        mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows], dtype=torch.long)  # (B, T)
        labels = ids.masked_fill(mask == 0, IGNORE_INDEX)
        if self.bos is not None:
            labels[:, 0] = IGNORE_INDEX
        batch.update(input_ids=ids, attention_mask=mask, labels=labels, texts=[it["text"] for it in items])
        return batch


class LMRecipe(Recipe):
    name = "lm"
    validation_loss = "lm_loss"
    Options = LMOptions
    default_preset = "llama-tiny"

    def build_task(self) -> LMTask:
        return LMTask()

    def build_model(self) -> nn.Module:
        spec, extra = dict(self.model_spec), {}
        if "preset" in spec:  # the tokenizer's special ids, where the family has the field
            from ...models.registry import PRESETS

            fields = (
                {f.name for f in dataclasses.fields(PRESETS[spec["preset"]]())} if spec["preset"] in PRESETS else ()
            )
            for field_name, attribute in SPECIAL_FIELDS.items():
                if field_name in fields and field_name not in spec:
                    extra[field_name] = getattr(self.tokenizer, attribute)
        model = model_from_spec(spec, expected=DecoderLM, task=self.name, **extra)
        check_vocabulary(self.tokenizer, self.options.tokenizer, model.config.vocab_size)
        return model

    def image_size(self, model: nn.Module) -> int:
        return 32  # text only: a nominal size for data kinds that render images (they are refused in collate)

    def transform(self, model: nn.Module, train: bool = False) -> Callable | None:
        return None

    def collate(self) -> Callable:
        return TextCollator(self.tokenizer, self.options.max_length)

    def batch_size(self, batch: dict[str, Any]) -> int:
        return int(batch["input_ids"].shape[0]) if "input_ids" in batch else 0

    def evaluate(self, model: nn.Module, dataset, **kwargs) -> EvalOutput:
        """Validation ``lm_loss`` (mean next-token cross-entropy over the scored tokens), its
        ``perplexity`` and the greedy ``token_accuracy`` (percent)."""
        device, precision = kwargs.get("device", "cpu"), kwargs.get("precision", "auto")
        total, right, count = 0.0, 0, 0
        with eval_mode(model), torch.no_grad():
            for batch in eval_loader(dataset, self.collate(), kwargs.get("batch_size", 64)):
                if "input_ids" not in batch:
                    continue
                ids, labels = batch["input_ids"].to(device), batch["labels"].to(device)
                with autocast(device, precision):
                    logits = model(ids)  # (B, T, V)
                total += float(next_token_loss(logits, labels, reduction="sum"))
                scored = labels[:, 1:] != IGNORE_INDEX  # (B, T - 1)
                right += int(((logits[:, :-1].argmax(-1) == labels[:, 1:]) & scored).sum())
                count += int(scored.sum())
        if count == 0:
            raise ValueError("the validation data has no usable samples")
        loss = total / count
        metrics = {"lm_loss": loss, "loss": loss, "perplexity": math.exp(min(loss, 50.0))}
        metrics["token_accuracy"] = 100.0 * right / count
        return EvalOutput(metrics)

    def summary(self, metrics: dict[str, float], num_images: int | None = None) -> list[str]:
        if "lm_loss" not in metrics:
            return []
        held = f" on {num_images} held-out texts" if num_images else ""
        return [
            f"validation next-token loss{held}: {metrics['lm_loss']:.4f} (perplexity {metrics['perplexity']:.3f}, "
            f"greedy next-token accuracy {metrics['token_accuracy']:.1f}%)"
        ]
