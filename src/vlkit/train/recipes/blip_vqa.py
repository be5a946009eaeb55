"""The ``blip-vqa`` recipe: two BLIPs in one run (:class:`CaptionerAndVQA`): a captioner trained
with BLIP's pre-training losses and a VQA model (``decoder_context="question"``) that shares its
image encoder and text encoder and has its own answer decoder, trained with
:class:`vlkit.tasks.vqa.BLIPVQATask` on batches that carry a caption and a question (the built-in
shapes); evaluation is the ``blip`` recipe's plus VQA accuracy.

Options (the config's ``task:`` section, :class:`BLIPVQAOptions`): those of ``blip``
(:class:`vlkit.train.recipes.blip.BLIPOptions`) and ``vqa_weight`` (of the VQA loss, 1.0) and
``vqa_eval_questions`` (1000).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ...data.loader import eval_loader
from ...data.vqa import tokenize_qa
from ...eval.vqa import answer_questions, vqa_scores
from ...models.blip import Blip
from ...tasks.vqa import BLIPVQATask, VQATask
from .base import Recipe
from .blip import (
    VQA_FOLDER,
    BLIPOptions,
    CaptionCollator,
    blip_evaluate,
    blip_summary,
    blip_task,
    check_captioner,
    create_blip,
    decode_caption,
    reinit_text,
)
from .common import EvalOutput


@dataclass(frozen=True)
class BLIPVQAOptions(BLIPOptions):
    vqa_weight: float = 1.0  # weight of the VQA answer loss
    vqa_eval_questions: int = 1000  # greedy answers to this many validation questions are scored

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.vqa_weight < 0 or self.vqa_eval_questions < 0:
            raise ValueError(
                f"vqa_weight and vqa_eval_questions must be >= 0, got {self.vqa_weight} and {self.vqa_eval_questions}"
            )


class CaptionerAndVQA(nn.Module):
    """Two BLIPs trained in one run: ``captioner`` (ITC, ITM, captioning) and ``vqa``
    (``decoder_context="question"``), which uses the captioner's image encoder and text encoder
    (the same modules) and has its own answer decoder. ``forward`` is the captioner's.

    ``save_pretrained(folder)`` writes the captioner as a vlkit folder, the VQA model as another in
    ``folder/vqa`` (each complete: the shared weights are stored in both), and the tokenizer (when
    given) into both, so that ``vlkit.from_pretrained``, ``vlkit caption``, ``vlkit vqa`` and
    ``vlkit eval`` read either folder alone.
    """

    def __init__(self, captioner: nn.Module, vqa: nn.Module, tokenizer=None) -> None:
        super().__init__()
        if vqa.config.decoder_context != "question":
            raise ValueError("the vqa model's decoder must read the question (decoder_context='question')")
        self.captioner, self.vqa = captioner, vqa
        vqa.vision, vqa.text_encoder = captioner.vision, captioner.text_encoder
        self.tokenizer = tokenizer

    def forward(self, *args, **kwargs):
        return self.captioner(*args, **kwargs)

    def encode_image(self, pixel_values: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        return self.captioner.encode_image(pixel_values, normalize)

    def encode_text(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, normalize: bool = False
    ) -> torch.Tensor:
        return self.captioner.encode_text(input_ids, attention_mask, normalize)

    def scale(self) -> torch.Tensor:
        return self.captioner.scale()

    def save_pretrained(self, folder, tokenizer=None) -> Path:
        folder = Path(folder)
        tokenizer = tokenizer if tokenizer is not None else self.tokenizer
        self.captioner.save_pretrained(folder, tokenizer=tokenizer)
        self.vqa.save_pretrained(folder / VQA_FOLDER, tokenizer=tokenizer)
        return folder


def vqa_model_for(captioner: nn.Module) -> Blip:
    """A BLIP VQA model matching ``captioner`` (same vision and text sizes, no retrieval heads,
    its decoder reading the encoded question), with a freshly initialised answer decoder."""
    config = dataclasses.replace(
        captioner.config,
        retrieval_heads=False,
        share_encoder_decoder=False,
        text_encoder=True,
        text_decoder=True,
        decoder_context="question",
    )
    return Blip(config)


class CaptionQACollator(CaptionCollator):
    """Caption batches plus the item's question and answer (:func:`vlkit.data.vqa.tokenize_qa`)."""

    def __call__(self, items):
        batch = super().__call__(items)
        kept = [it for it in items if "skipped" not in it]
        if kept and ("question" not in kept[0] or "answer" not in kept[0]):
            raise ValueError(
                "the blip-vqa recipe trains on items with a caption, a question and an answer "
                "(the built-in shapes, data.kind: shapes)"
            )
        batch["questions"] = [it["question"] for it in kept]
        batch["answers"] = [it["answer"] for it in kept]
        if kept and "question_type" in kept[0]:
            batch["question_types"] = [it["question_type"] for it in kept]
        if kept:
            batch.update(tokenize_qa(self.tokenizer, batch["questions"], batch["answers"]))
        return batch


@torch.no_grad()
def vqa_metrics(
    vqa: nn.Module,
    tokenizer,
    dataset,
    collate: Callable,
    questions_limit: int,
    *,
    device="cpu",
    precision: str = "auto",
    batch_size: int = 256,
) -> dict[str, float]:
    """VQA accuracy and exact match (percent, overall and per question type) of greedy answers to
    the first ``questions_limit`` validation questions."""
    pixels, questions, answers, types = [], [], [], []
    for batch in eval_loader(dataset, collate, batch_size):
        if "pixel_values" not in batch:
            continue
        pixels.append(batch["pixel_values"])
        questions += batch["questions"]
        answers += batch["answers"]
        types += batch.get("question_types", [""] * len(batch["questions"]))
        if len(questions) >= questions_limit:
            break
    n = min(len(questions), questions_limit)
    if n == 0:
        raise ValueError("the validation data has no questions")
    predictions = answer_questions(
        vqa, tokenizer, torch.cat(pixels)[:n], questions[:n], device=device, precision=precision, batch_size=batch_size
    )
    typed = all(types[:n])
    scores = vqa_scores(predictions, [[a] for a in answers[:n]], types[:n] if typed else None)
    out = {"vqa_questions": float(n), "vqa_accuracy": scores["vqa_accuracy"], "vqa_exact_match": scores["exact_match"]}
    out.update({f"vqa_{k}": v for k, v in scores.items() if k.startswith("accuracy_")})
    return out


def vqa_summary(metrics: dict[str, float]) -> list[str]:
    if "vqa_accuracy" not in metrics:
        return []
    n = int(metrics.get("vqa_questions", 0))
    types = sorted(k[len("vqa_accuracy_") :] for k in metrics if k.startswith("vqa_accuracy_"))
    parts = ", ".join(f"{t} {metrics['vqa_accuracy_' + t]:.1f}%" for t in types)
    return [
        f"VQA accuracy on {n} held-out questions (greedy answers): {metrics['vqa_accuracy']:.1f}%"
        + (f" ({parts})" if parts else "")
    ]


class BLIPVQARecipe(Recipe):
    """BLIP's pre-training losses and VQA in one run (:class:`CaptionerAndVQA`, trained with
    :class:`vlkit.tasks.vqa.BLIPVQATask`) on data whose items carry a caption, a question and an
    answer (the built-in shapes). ``model.pretrained`` may name a folder this recipe wrote (the VQA
    model is read from its ``vqa`` sub-folder, sharing the captioner's encoders) or a captioning
    BLIP (a new answer decoder is added). Evaluation adds VQA accuracy of greedy answers to the
    first ``vqa_eval_questions`` questions (``vqa_accuracy``, ``vqa_exact_match``, per question type)."""

    name = "blip-vqa"
    validation_loss = "itc_loss"  # what the validation "loss" measures (the plots label it so)
    Options = BLIPVQAOptions
    default_preset = "blip-tiny"

    def build_task(self) -> BLIPVQATask:
        blip, vqa = (
            blip_task(self.tokenizer, self.options, self.loss.chunk_size),
            VQATask(label_smoothing=self.options.label_smoothing),
        )
        return BLIPVQATask(blip, vqa, vqa_weight=self.options.vqa_weight)

    def build_model(self) -> nn.Module:
        import vlkit

        captioner = create_blip(self.model_spec, self.tokenizer, self.options, self.name)
        check_captioner(captioner)
        pretrained = self.model_spec.get("pretrained")
        if pretrained is not None and (Path(pretrained) / VQA_FOLDER / "config.json").is_file():
            vqa = vlkit.from_pretrained(Path(pretrained) / VQA_FOLDER)
        else:
            vqa = vqa_model_for(captioner)
            if self.options.init_std is not None:
                reinit_text(vqa, self.options.init_std)
        return CaptionerAndVQA(captioner, vqa, self.tokenizer)

    def image_model(self, model: nn.Module) -> nn.Module:
        """The captioner (the VQA model shares its image encoder)."""
        return model.captioner

    def collate(self) -> Callable:
        return CaptionQACollator(self.tokenizer, self.options.prompt)

    def evaluate(self, model: nn.Module, dataset, **kwargs) -> EvalOutput:
        """The captioner's evaluation (:func:`vlkit.train.recipes.blip.blip_evaluate`) and VQA accuracy."""
        collate = self.collate()
        result = blip_evaluate(model.captioner, dataset, self.tokenizer, collate, self.options, **kwargs)
        if self.options.vqa_eval_questions > 0:
            result.metrics.update(
                vqa_metrics(
                    model.vqa,
                    self.tokenizer,
                    dataset,
                    collate,
                    self.options.vqa_eval_questions,
                    device=kwargs.get("device", "cpu"),
                    precision=kwargs.get("precision", "auto"),
                    batch_size=kwargs.get("batch_size", 256),
                )
            )
        return result

    def summary(self, metrics: dict[str, float], num_images: int | None = None) -> list[str]:
        return blip_summary(metrics, num_images, self.options) + vqa_summary(metrics)

    @property
    def prompt_length(self) -> int:
        return self.task.blip.prompt_length

    def decode_caption(self, ids: torch.Tensor, config) -> str:
        """Generated ids (L,) -> tokenized caption text without [DEC], the prompt, [SEP] and padding."""
        return decode_caption(self.tokenizer, ids, config, self.prompt_length)
