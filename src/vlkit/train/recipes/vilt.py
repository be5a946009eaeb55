"""The ViLT recipes: ``vilt`` (pre-training: ITM with in-batch negatives and MLM with whole-word
masking, :class:`vlkit.tasks.vilt.ViltTask`) and ``vilt-vqa`` (VQA as classification over an
answer vocabulary, :class:`vlkit.tasks.vilt.ViltVQATask`), on WordPiece batches.

Options (the config's ``task:`` section): ``tokenizer`` (default ``bert-base-uncased``; ``shapes``
for the built-in shapes' WordPiece). ``vilt``: ``mlm_probability`` (0.15), ``whole_word_masking``
(True), ``same_caption_is_positive`` (True), ``retrieval_eval_images`` (images whose Recall@1 is
measured by N x M joint passes in evaluation, 50). ``vilt-vqa``: ``answers`` (the answer
vocabulary; default the built-in shapes' 20 answers) and ``vqa_eval_questions`` (1000).

A model built from a preset gets the tokenizer's vocabulary size and [PAD] id unless the ``model``
section sets them; ``vilt-vqa`` gives it the answer vocabulary, and adds a fresh VQA head to a
``pretrained`` ViLT that has none (a ``vilt`` run's model, say).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ...data.loader import eval_loader
from ...data.synthetic import ANSWERS
from ...data.vqa import QuestionAnswerCollator
from ...eval.joint_retrieval import pair_scores
from ...eval.retrieval import recall_at_k, unique_captions
from ...eval.vqa import vqa_scores
from ...losses.mlm import IGNORE_INDEX, mask_tokens
from ...models.vilt import Vilt, with_answers
from ...runtime import autocast, eval_mode
from ...tasks.vilt import ViltTask, ViltVQATask, vqa_loss, vqa_targets
from .base import Recipe
from .blip import CaptionCollator
from .common import EvalOutput, check_vocabulary, held_out, model_from_spec


@dataclass(frozen=True)
class ViltOptions:
    tokenizer: str = "bert-base-uncased"  # or "shapes", or a folder
    mlm_probability: float = 0.15  # share of caption words masked for MLM
    whole_word_masking: bool = True  # mask every piece of a chosen word (WordPiece tokenizers)
    same_caption_is_positive: bool = True  # equal captions are never ITM negatives of each other
    retrieval_eval_images: int = 50  # Recall@1 over this many validation images (N x M joint passes)

    def __post_init__(self) -> None:
        if not 0.0 < self.mlm_probability < 1.0:
            raise ValueError(f"mlm_probability must be in (0, 1), got {self.mlm_probability}")
        if self.retrieval_eval_images < 0:
            raise ValueError(f"retrieval_eval_images must be >= 0, got {self.retrieval_eval_images}")


@dataclass(frozen=True)
class ViltVQAOptions:
    tokenizer: str = "bert-base-uncased"
    answers: tuple[str, ...] = ANSWERS  # the answer vocabulary of the classifier
    vqa_eval_questions: int = 1000  # answers to this many validation questions are scored

    def __post_init__(self) -> None:
        if not self.answers:
            raise ValueError("answers must name at least one answer")
        if self.vqa_eval_questions < 0:
            raise ValueError(f"vqa_eval_questions must be >= 0, got {self.vqa_eval_questions}")


def continuation_flags(tokenizer) -> torch.Tensor | None:
    """(V,) bool: the ids of a WordPiece tokenizer that continue a word (``##`` pieces); None for
    other tokenizers (their tokens are masked one by one)."""
    prefix = getattr(tokenizer, "continuing_prefix", None)
    if not prefix:
        return None
    return torch.tensor([tokenizer.id_to_token(i).startswith(prefix) for i in range(tokenizer.vocab_size)])


def create_vilt(model_spec: dict[str, Any], tokenizer, tokenizer_name: str, task: str, **extra) -> Vilt:
    """The ViLT the ``model`` section describes; a preset gets the tokenizer's vocabulary and [PAD]."""
    spec = dict(model_spec)
    if "preset" in spec and "pretrained" not in spec:
        spec.setdefault("vocab_size", tokenizer.vocab_size)
        if tokenizer.pad_token_id is not None:
            spec.setdefault("pad_token_id", tokenizer.pad_token_id)
        spec.update(extra)
    model = model_from_spec(spec, expected=Vilt, task=task)
    check_vocabulary(tokenizer, tokenizer_name, model.config.vocab_size)
    return model


class ViltRecipe(Recipe):
    """ViLT pre-training on image-caption data. Evaluation: validation ITM loss and accuracy (each
    image with its caption and with the next different caption), MLM accuracy on masked words,
    and Recall@1/5 both ways over ``retrieval_eval_images`` images by N x M joint passes."""

    name = "vilt"
    validation_loss = "itm_loss"  # what the validation "loss" measures (the plots label it so)
    Options = ViltOptions
    default_preset = "vilt-tiny"

    def build_task(self) -> ViltTask:
        o = self.options
        return ViltTask(
            self.tokenizer.mask_token_id,
            self.tokenizer.all_special_ids,
            continuation=continuation_flags(self.tokenizer) if o.whole_word_masking else None,
            mlm_probability=o.mlm_probability,
            same_caption_is_positive=o.same_caption_is_positive,
        )

    def build_model(self) -> nn.Module:
        model = create_vilt(self.model_spec, self.tokenizer, self.options.tokenizer, self.name)
        if model.itm_head is None or model.mlm_head is None:
            raise ValueError("the vilt task trains the ITM and MLM heads: the model needs itm_head and mlm_head")
        return model

    def image_size(self, model: nn.Module) -> int:
        return model.config.image_size

    def collate(self) -> Callable:
        return CaptionCollator(self.tokenizer)  # the canonical caption of the built-in shapes

    def evaluate(self, model: nn.Module, dataset, **kwargs) -> EvalOutput:
        return vilt_evaluate(model, dataset, self.tokenizer, self.collate(), self.task, self.options, **kwargs)

    def summary(self, metrics: dict[str, float], num_images: int | None = None) -> list[str]:
        lines = [
            f"ITM accuracy{held_out(num_images)} (true vs other caption): {metrics['itm_accuracy']:.1f}%, "
            f"MLM accuracy {metrics['mlm_accuracy']:.1f}%"
        ]
        if "i2t_R@1" in metrics:
            n = int(metrics["retrieval_images"])
            lines.append(
                f"retrieval Recall@1 over {n} held-out images (N x M joint passes): image->text "
                f"{metrics['i2t_R@1']:.1f}%, text->image {metrics['t2i_R@1']:.1f}%"
            )
        return lines


def _other_caption(captions: list[str]) -> list[int]:
    """For each sample the next one (cyclically) with a different caption (itself if none)."""
    n = len(captions)
    return [next((j % n for j in range(i + 1, i + n) if captions[j % n] != captions[i]), i) for i in range(n)]


@torch.no_grad()
def vilt_evaluate(
    model: Vilt,
    dataset,
    tokenizer,
    collate: Callable,
    task: ViltTask,
    options: ViltOptions,
    *,
    batch_size: int = 256,
    device="cpu",
    precision: str = "auto",
    retrieval: bool = True,
    **_,
) -> EvalOutput:
    """ITM loss/accuracy and MLM accuracy over the validation data; Recall@K by joint passes."""
    device = torch.device(device)
    generator = torch.Generator().manual_seed(0)  # the same masked words at every evaluation
    itm_sum = itm_right = mlm_right = mlm_total = n = 0.0
    pixels_kept, captions_kept = [], []
    with eval_mode(model):
        for batch in eval_loader(dataset, collate, batch_size):
            if "pixel_values" not in batch:
                continue
            px, ids, mask = batch["pixel_values"].to(device), batch["input_ids"], batch["attention_mask"]
            B = len(ids)
            other = torch.tensor(_other_caption(batch["captions"]))
            mlm_ids, labels = mask_tokens(
                ids, model.config.vocab_size, task.mask_token_id, task.special_ids, task.mlm_probability,
                generator, continuation=task.continuation,
            )  # fmt: skip
            labels = labels.masked_fill(mask == 0, IGNORE_INDEX)
            with autocast(device, precision):
                hidden = model(
                    torch.cat([px, px, px]),
                    torch.cat([mlm_ids, ids, ids[other]]).to(device),
                    torch.cat([mask, mask, mask[other]]).to(device),
                )
                itm = model.match_logits(hidden[B:]).float().cpu()  # (2B, 2)
                mlm = model.text_logits(hidden[:B], ids.shape[1]).float().cpu()  # (B, T, V)
            target = torch.cat([torch.ones(B, dtype=torch.long), torch.zeros(B, dtype=torch.long)])
            itm_sum += torch.nn.functional.cross_entropy(itm, target, reduction="sum").item() / 2
            itm_right += (itm.argmax(1) == target).sum().item() / 2
            predicted = labels != IGNORE_INDEX
            mlm_right += (mlm.argmax(-1)[predicted] == labels[predicted]).sum().item()
            mlm_total += predicted.sum().item()
            n += B
            if len(captions_kept) < options.retrieval_eval_images:
                pixels_kept.append(batch["pixel_values"])
                captions_kept += batch["captions"]
    if n == 0:
        raise ValueError("the validation data has no usable samples")
    metrics = {
        "loss": itm_sum / n,
        "itm_accuracy": 100.0 * itm_right / n,
        "mlm_accuracy": 100.0 * mlm_right / max(mlm_total, 1),
    }
    k = min(options.retrieval_eval_images, len(captions_kept))
    if retrieval and k > 0:
        texts, positives = unique_captions(captions_kept[:k])
        tokens = tokenizer(texts, padding="longest")
        scores = pair_scores(
            model, torch.cat(pixels_kept)[:k], tokens["input_ids"], tokens["attention_mask"],
            batch_size=batch_size, device=device, precision=precision,
        )  # fmt: skip
        metrics.update({name: v for name, v in recall_at_k(scores, positives, (1, 5)).items()})
        metrics["retrieval_images"] = float(k)
    return EvalOutput(metrics)


class ViltVQARecipe(Recipe):
    """ViLT VQA fine-tuning on data whose items carry a question and an answer (the built-in
    shapes): the classifier over ``options.answers`` trained with soft-score BCE. Evaluation:
    validation VQA loss, VQA accuracy and exact match of the best-scored answer (per question type
    on the shapes)."""

    name = "vilt-vqa"
    validation_loss = "vqa_loss"
    Options = ViltVQAOptions
    default_preset = "vilt-tiny"

    def build_task(self) -> ViltVQATask:
        return ViltVQATask()

    def build_model(self) -> nn.Module:
        answers = tuple(self.options.answers)
        model = create_vilt(self.model_spec, self.tokenizer, self.options.tokenizer, self.name, answers=answers)
        if model.config.answers != answers:
            if model.config.answers:
                raise ValueError(
                    f"the pretrained ViLT answers {len(model.config.answers)} other answers; task.answers must "
                    "be its own (config.answers) or the model must have no VQA head yet"
                )
            model = with_answers(model, answers)
        return model

    def image_size(self, model: nn.Module) -> int:
        return model.config.image_size

    def collate(self) -> Callable:
        return QuestionAnswerCollator(self.tokenizer)

    def batch_size(self, batch: dict[str, Any]) -> int:
        return len(batch["questions"])

    def evaluate(self, model: nn.Module, dataset, **kwargs) -> EvalOutput:
        return vilt_vqa_evaluate(model, dataset, self.collate(), self.options, **kwargs)

    def summary(self, metrics: dict[str, float], num_images: int | None = None) -> list[str]:
        n = int(metrics.get("vqa_questions", 0))
        types = sorted(k[len("vqa_accuracy_") :] for k in metrics if k.startswith("vqa_accuracy_"))
        parts = ", ".join(f"{t} {metrics['vqa_accuracy_' + t]:.1f}%" for t in types)
        return [
            f"VQA accuracy on {n} held-out questions (best of {len(self.options.answers)} answers): "
            f"{metrics['vqa_accuracy']:.1f}%" + (f" ({parts})" if parts else "")
        ]


@torch.no_grad()
def vilt_vqa_evaluate(
    model: Vilt,
    dataset,
    collate: Callable,
    options: ViltVQAOptions,
    *,
    batch_size: int = 256,
    device="cpu",
    precision: str = "auto",
    **_,
) -> EvalOutput:
    """Validation VQA loss over the first ``vqa_eval_questions`` questions, and the VQA accuracy and
    exact match of the best-scored answer (percent, overall and per question type)."""
    device = torch.device(device)
    loss_sum, predictions, answer_lists, types = 0.0, [], [], []
    with eval_mode(model):
        for batch in eval_loader(dataset, collate, batch_size):
            if "pixel_values" not in batch or len(predictions) >= options.vqa_eval_questions:
                continue
            with autocast(device, precision):
                logits = model.vqa_logits(
                    batch["pixel_values"].to(device),
                    batch["question_input_ids"].to(device),
                    batch["question_attention_mask"].to(device),
                ).float()  # (B, A)
            targets = vqa_targets(batch["answer_lists"], model.config.answers).to(device)
            loss_sum += vqa_loss(logits, targets).item() * len(logits)
            predictions += [model.config.answers[i] for i in logits.argmax(-1).tolist()]
            answer_lists += batch["answer_lists"]
            types += batch.get("question_type", [""] * len(logits))
    n = min(len(predictions), options.vqa_eval_questions)
    if n == 0:
        raise ValueError("the validation data has no questions")
    typed = all(types[:n])
    scores = vqa_scores(predictions[:n], answer_lists[:n], types[:n] if typed else None)
    metrics = {"loss": loss_sum / len(predictions), "vqa_questions": float(n)}
    metrics.update({f"vqa_{k}" if not k.startswith("vqa") else k: v for k, v in scores.items()})
    return EvalOutput(metrics)
