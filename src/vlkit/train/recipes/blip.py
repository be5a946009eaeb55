"""The ``blip`` recipe: builds a BLIP, its preprocessing and WordPiece batches (an optional caption
prompt); trains it with :class:`vlkit.tasks.BLIPTask` (ITC, ITM with hard negatives, captioning
LM); evaluates ITC retrieval as for CLIP, retrieval re-ranked by the ITM head, and
BLEU/CIDEr-D/exact match of greedy captions. The ``blip-vqa`` recipe (:mod:`.blip_vqa`) uses the
functions of this module.

Options (the config's ``task:`` section, :class:`BLIPOptions`): ``tokenizer`` (a name or folder for
:func:`vlkit.get_tokenizer`, or ``shapes``: the built-in shapes' 47-token WordPiece) and
``init_std`` (re-initialise the text towers and heads of a model built from a preset with this
std; BERT's 0.02 suits width 768, tiny widths learn faster from 0.1, as ``albef-tiny`` found),
``prompt`` and the loss and evaluation settings. A model built from a preset gets its text ids
from the tokenizer: ``vocab_size`` = the tokenizer's + 2, [DEC] and [ENC] the two ids after it (as
BLIP adds them), [SEP] and [PAD] the tokenizer's, unless the ``model.text`` section sets them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ...data.loader import ImageTextCollator, eval_loader
from ...eval.caption_metrics import simple_tokenize
from ...eval.captioning import captioning_scores, decode_generated, generate_captions
from ...eval.rerank import itm_rerank_scores, reranked_recall
from ...eval.retrieval import similarity_matrix, unique_captions
from ...models.bert import init_weights
from ...models.blip import Blip
from ...runtime import eval_mode
from ...tasks import BLIPTask
from .base import Recipe
from .common import (
    EvalOutput,
    check_vocabulary,
    contrastive_evaluate,
    load_tokenizer,
    model_from_spec,
    retrieval_lines,
    zeroshot_lines,
)

VQA_FOLDER = "vqa"  # CaptionerAndVQA.save_pretrained puts the VQA model in this sub-folder

__all__ = ["BLIPOptions", "BLIPRecipe", "VQA_FOLDER", "create_blip", "load_tokenizer", "reinit_text", "text_ids"]


@dataclass(frozen=True)
class BLIPOptions:
    tokenizer: str = "bert-base-uncased"  # or "shapes", or a folder
    init_std: float | None = None  # re-initialise a preset's text towers and heads from N(0, init_std)
    prompt: str = ""  # caption prompt ("a picture of "): prepended to the decoder input, not in the LM loss
    label_smoothing: float = 0.1  # of the LM (and VQA) loss
    negatives_all_ranks: bool = True  # ITM hard negatives sampled from every process's batch
    same_caption_is_positive: bool = True  # equal captions are positives of each other
    caption_eval_images: int = 1000  # greedy captions of this many validation images are scored
    max_caption_tokens: int = 20
    itm_rerank_k: int = 16  # ITC top-k re-ranked by the ITM head in evaluation (0: no re-ranking)

    def __post_init__(self) -> None:
        if self.init_std is not None and not self.init_std > 0:
            raise ValueError(f"init_std must be > 0, got {self.init_std}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        for name in ("caption_eval_images", "itm_rerank_k"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.max_caption_tokens < 1:
            raise ValueError(f"max_caption_tokens must be >= 1, got {self.max_caption_tokens}")


def text_ids(tokenizer) -> dict[str, int]:
    """A BLIP text config's vocabulary fields for ``tokenizer``: its tokens, then [DEC] and [ENC]."""
    V = tokenizer.vocab_size
    if tokenizer.sep_token_id is None or tokenizer.pad_token_id is None:
        raise ValueError(
            "a BLIP tokenizer needs [SEP] and [PAD] tokens (a WordPiece vocabulary, e.g. bert-base-uncased)"
        )
    return {
        "vocab_size": V + 2,
        "bos_token_id": V,
        "enc_token_id": V + 1,
        "sep_token_id": tokenizer.sep_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }


def reinit_text(model: nn.Module, std: float) -> None:
    """Normal(0, ``std``) weights for a BLIP's text towers, LM head and retrieval heads (the ViT
    keeps its own init)."""
    for name in ("text_encoder", "text_decoder", "lm_head", "vision_proj", "text_proj", "itm_head"):
        part = getattr(model, name, None)
        if part is not None:
            part.apply(lambda m: init_weights(m, std=std))


def create_blip(model_spec: dict[str, Any], tokenizer, options: BLIPOptions, task: str = "blip") -> Blip:
    """The BLIP the ``model`` section describes (a preset gets the tokenizer's text ids and, with
    ``options.init_std``, re-initialised text towers)."""
    spec = dict(model_spec)
    if "preset" in spec and "pretrained" not in spec:
        spec["text"] = {**text_ids(tokenizer), **(spec.get("text") or {})}
    model = model_from_spec(spec, expected=Blip, task=task)
    if "pretrained" not in spec and options.init_std is not None:
        reinit_text(model, options.init_std)
    check_vocabulary(tokenizer, options.tokenizer, model.config.text.vocab_size)
    return model


def prompt_length(tokenizer, prompt: str) -> int:
    """Tokens of the prompt the LM loss ignores: [DEC] and the prompt's words (not [SEP])."""
    return len(tokenizer([prompt])["input_ids"][0]) - 1 if prompt else 0


def blip_task(tokenizer, options: BLIPOptions, chunk_size: int | None = None) -> BLIPTask:
    """BLIP's task for the options; ``chunk_size``: the loss section's (ITC in tiles)."""
    return BLIPTask(
        prompt_length=prompt_length(tokenizer, options.prompt),
        label_smoothing=options.label_smoothing,
        negatives_all_ranks=options.negatives_all_ranks,
        same_caption_is_positive=options.same_caption_is_positive,
        chunk_size=chunk_size,
    )


class CaptionCollator:
    """Image-caption batches (:class:`vlkit.data.ImageTextCollator`) of each item's
    ``target_caption`` when it has one (the built-in shapes' canonical caption), else its
    ``caption``; with a prompt also ``decoder_input_ids`` / ``decoder_attention_mask``: the prompt
    followed by the caption.

    BLIP trains ITC, ITM and the captioning LM on the same text. On the built-in shapes that is
    the canonical caption: a partial one ("a blue shape") is true of many images of a batch,
    which ITC and ITM would then treat as negatives."""

    def __init__(self, tokenizer, prompt: str = "") -> None:
        self.base, self.tokenizer, self.prompt = ImageTextCollator(tokenizer), tokenizer, prompt

    def __call__(self, items):
        items = [
            it if "skipped" in it or "target_caption" not in it else {**it, "caption": it["target_caption"]}
            for it in items
        ]
        batch = self.base(items)
        if self.prompt and batch["captions"]:
            tokens = self.tokenizer([self.prompt + c for c in batch["captions"]], padding="longest")
            batch["decoder_input_ids"] = tokens["input_ids"]
            batch["decoder_attention_mask"] = tokens["attention_mask"]
        return batch


def images_and_captions(dataset, collate: Callable, batch_size: int, limit: int | None = None):
    """(pixel values (N, 3, H, W), captions) of the first ``limit`` samples."""
    pixels, captions = [], []
    for batch in eval_loader(dataset, collate, batch_size):
        if "pixel_values" not in batch:
            continue
        pixels.append(batch["pixel_values"])
        captions += batch["captions"]
        if limit is not None and len(captions) >= limit:
            break
    if not captions:
        raise ValueError("the validation data has no usable samples")
    pixels = torch.cat(pixels)
    return (pixels, captions) if limit is None else (pixels[:limit], captions[:limit])


@torch.no_grad()
def itm_retrieval_metrics(
    model: Blip, tokenizer, dataset, collate: Callable, *, k: int, device="cpu", batch_size: int = 256
) -> dict[str, float]:
    """Recall@1/5/10 of the ITC top ``k`` re-ranked by the ITM head (BLIP's retrieval)."""
    device = torch.device(device)
    pixels, captions = images_and_captions(dataset, collate, batch_size)
    texts, positives = unique_captions(captions)
    tokens = tokenizer(texts, padding="longest")
    with eval_mode(model):
        image_f = torch.cat(
            [
                model.encode_image(pixels[i : i + batch_size].to(device), normalize=True).float().cpu()
                for i in range(0, len(pixels), batch_size)
            ]
        )  # (N_img, D)
        text_f = (
            model.encode_text(tokens["input_ids"].to(device), tokens["attention_mask"].to(device), normalize=True)
            .float()
            .cpu()
        )  # (N_txt, D)
        i2t, t2i = itm_rerank_scores(
            model, tokenizer, pixels, texts, similarity_matrix(image_f, text_f), k, device=device, batch_size=batch_size
        )
    return {f"itm_{name}": v for name, v in reranked_recall(i2t, t2i, positives).items()}


@torch.no_grad()
def caption_metrics(
    model: Blip,
    tokenizer,
    dataset,
    collate: Callable,
    options: BLIPOptions,
    *,
    device="cpu",
    precision: str = "auto",
    batch_size: int = 64,
) -> dict[str, float]:
    """BLEU-1..4, CIDEr-D and exact match (percent) of greedy captions of the first
    ``options.caption_eval_images`` images, each image's own caption (target) the reference."""
    pixels, references = images_and_captions(dataset, collate, batch_size, options.caption_eval_images)
    batches = [pixels[i : i + batch_size] for i in range(0, len(pixels), batch_size)]
    captions = generate_captions(
        model,
        tokenizer,
        batches,
        prompt=options.prompt or None,
        device=device,
        precision=precision,
        max_new_tokens=options.max_caption_tokens,
    )
    scores = captioning_scores(captions, [[r] for r in references])
    return {"caption_images": float(len(captions)), **{f"caption_{k}": v for k, v in scores.items()}}


def blip_evaluate(
    model: Blip,
    dataset,
    tokenizer,
    collate: Callable,
    options: BLIPOptions,
    *,
    batch_size: int = 256,
    device="cpu",
    precision: str = "auto",
    zeroshot: bool = True,
    retrieval: bool = True,
    plot_size: int = 12,
) -> EvalOutput:
    """ITC retrieval metrics and the ITM re-ranked ones (with retrieval heads), caption metrics
    (with a decoder reading the image)."""
    c = model.config
    result = EvalOutput({})
    if c.retrieval_heads:
        result = contrastive_evaluate(
            model,
            dataset,
            collate,
            tokenizer,
            batch_size=batch_size,
            device=device,
            precision=precision,
            zeroshot=zeroshot,
            retrieval=retrieval,
            plot_size=plot_size,
        )
        if retrieval and options.itm_rerank_k > 0:
            result.metrics.update(
                itm_retrieval_metrics(
                    model, tokenizer, dataset, collate, k=options.itm_rerank_k, device=device, batch_size=batch_size
                )
            )
    if c.text_decoder and c.decoder_context == "image" and options.caption_eval_images > 0:
        result.metrics.update(
            caption_metrics(
                model, tokenizer, dataset, collate, options, device=device, precision=precision, batch_size=batch_size
            )
        )
    return result


def blip_summary(metrics: dict[str, float], num_images: int | None, options: BLIPOptions) -> list[str]:
    """Zero-shot, caption and retrieval lines of a BLIP evaluation."""
    lines = zeroshot_lines(metrics, num_images)
    if "caption_cider" in metrics:
        n = int(metrics.get("caption_images", 0))
        lines.append(
            f"captions of {n} held-out images (greedy): CIDEr-D {metrics['caption_cider']:.3f}, "
            f"BLEU-4 {metrics['caption_bleu_4']:.3f}, exact match {metrics['caption_exact_match']:.1f}%"
        )
    return lines + retrieval_lines(metrics, num_images, rerank_k=options.itm_rerank_k)


def check_captioner(model: Blip) -> None:
    c = model.config
    if c.text_decoder and c.decoder_context != "image":
        raise ValueError(
            "the blip task trains captioning: the model's decoder must read the image "
            "(decoder_context='image'), not a question"
        )


class BLIPRecipe(Recipe):
    """Builds a BLIP, its preprocessing and batches (BERT WordPiece unless told otherwise;
    [DEC]/[ENC] are the model's extra ids), and computes its pre-training losses. Evaluation: ITC
    retrieval (and zero-shot on the built-in shapes) as for CLIP; with the ITM head, Recall@K of
    the ITC top ``itm_rerank_k`` re-ranked by it (``itm_i2t_R@1``, ...); with a decoder, BLEU-1..4,
    CIDEr-D and exact match of greedy captions of the first ``caption_eval_images`` images."""

    name = "blip"
    validation_loss = "itc_loss"  # what the validation "loss" measures (the plots label it so)
    Options = BLIPOptions
    default_preset = "blip-tiny"

    def build_task(self) -> BLIPTask:
        return blip_task(self.tokenizer, self.options, self.loss.chunk_size)

    def build_model(self) -> nn.Module:
        model = create_blip(self.model_spec, self.tokenizer, self.options, self.name)
        check_captioner(model)
        return model

    def collate(self) -> Callable:
        return CaptionCollator(self.tokenizer, self.options.prompt)

    def evaluate(self, model: nn.Module, dataset, **kwargs) -> EvalOutput:
        """:func:`blip_evaluate` (keyword arguments: batch_size, device, precision, zeroshot, retrieval)."""
        return blip_evaluate(model, dataset, self.tokenizer, self.collate(), self.options, **kwargs)

    def summary(self, metrics: dict[str, float], num_images: int | None = None) -> list[str]:
        return blip_summary(metrics, num_images, self.options)

    @property
    def prompt_length(self) -> int:
        """Tokens of the prompt the LM loss ignores: [DEC] and the prompt's words."""
        return self.task.prompt_length

    def decode_caption(self, ids: torch.Tensor, config) -> str:
        """Generated ids (L,) -> tokenized caption text without [DEC], the prompt, [SEP] and padding."""
        return decode_caption(self.tokenizer, ids, config, self.prompt_length)


def decode_caption(tokenizer, ids: torch.Tensor, config, prompt_tokens: int) -> str:
    """Generated ids (L,) -> tokenized caption text without [DEC], the prompt, [SEP] and padding."""
    return simple_tokenize(decode_generated(tokenizer, ids, config.text, max(prompt_tokens, 1)))
