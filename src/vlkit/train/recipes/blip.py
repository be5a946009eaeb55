"""The BLIP recipes.

``blip``: builds a BLIP, its preprocessing and WordPiece batches (an optional caption prompt);
trains it with :class:`vlkit.tasks.BLIPTask` (ITC, ITM with hard negatives, captioning LM);
evaluates ITC retrieval as for CLIP, retrieval re-ranked by the ITM head, and BLEU/CIDEr-D/exact
match of greedy captions.

``blip-vqa``: two BLIPs in one run (:class:`CaptionerAndVQA`): the captioner above and a VQA
model (``decoder_context="question"``) that shares its image encoder and text encoder and has its
own answer decoder, trained with :class:`vlkit.tasks.BLIPVQATask` on batches that carry a
caption and a question (the built-in shapes); evaluation adds VQA accuracy.

Recipe settings that are not model fields may sit in the config's ``model`` section:
``tokenizer`` (a name or folder for :func:`vlkit.get_tokenizer`, or ``shapes``: the built-in
shapes' 47-token WordPiece) and ``init_std`` (re-initialise the text towers and heads of a model
built from a preset with this std; BERT's 0.02 suits width 768, tiny widths learn faster from
0.1, as ``albef-tiny`` found). A model built from a preset gets its text ids from the tokenizer:
``vocab_size`` = the tokenizer's + 2, [DEC] and [ENC] the two ids after it (as BLIP adds them),
[SEP] and [PAD] the tokenizer's, unless the ``model.text`` section sets them.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ...data.loader import ImageTextCollator, eval_loader
from ...data.vqa import tokenize_qa
from ...eval.caption_metrics import simple_tokenize
from ...eval.captioning import captioning_scores, decode_generated, generate_captions
from ...eval.rerank import itm_rerank_scores, reranked_recall
from ...eval.retrieval import similarity_matrix, unique_captions
from ...eval.vqa import answer_questions, vqa_scores
from ...models.bert import init_weights
from ...tasks import BLIPTask
from ...tasks.vqa import BLIPVQATask, VQATask
from .albef import ITCView
from .clip import CLIPRecipe, EvalOutput

SHAPES_TOKENIZER = "shapes"
VQA_FOLDER = "vqa"  # CaptionerAndVQA.save_pretrained puts the VQA model in this sub-folder


def load_tokenizer(name: str):
    """``shapes`` -> :func:`vlkit.data.synthetic.shapes_tokenizer`; anything else ->
    :func:`vlkit.get_tokenizer`."""
    if name == SHAPES_TOKENIZER:
        from ...data.synthetic import shapes_tokenizer

        return shapes_tokenizer()
    import vlkit

    return vlkit.get_tokenizer(name)


def text_ids(tokenizer) -> dict[str, int]:
    """A BLIP text config's vocabulary fields for ``tokenizer``: its tokens, then [DEC] and [ENC]."""
    V = tokenizer.vocab_size
    if tokenizer.sep_token_id is None or tokenizer.pad_token_id is None:
        raise ValueError("a BLIP tokenizer needs [SEP] and [PAD] tokens (a WordPiece vocabulary, e.g. bert-base-uncased)")
    return {"vocab_size": V + 2, "bos_token_id": V, "enc_token_id": V + 1, "sep_token_id": tokenizer.sep_token_id,
            "pad_token_id": tokenizer.pad_token_id}


class _CaptionCollator:
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
        items = [it if "skipped" in it or "target_caption" not in it else {**it, "caption": it["target_caption"]}
                 for it in items]
        batch = self.base(items)
        if self.prompt and batch["captions"]:
            tokens = self.tokenizer([self.prompt + c for c in batch["captions"]], padding="longest")
            batch["decoder_input_ids"] = tokens["input_ids"]
            batch["decoder_attention_mask"] = tokens["attention_mask"]
        return batch


class _CaptionQACollator(_CaptionCollator):
    """Caption batches plus the item's question and answer (:func:`vlkit.data.vqa.tokenize_qa`)."""

    def __call__(self, items):
        batch = super().__call__(items)
        kept = [it for it in items if "skipped" not in it]
        if kept and ("question" not in kept[0] or "answer" not in kept[0]):
            raise ValueError("the blip-vqa recipe trains on items with a caption, a question and an answer "
                             "(the built-in shapes, data.kind: shapes)")
        batch["questions"] = [it["question"] for it in kept]
        batch["answers"] = [it["answer"] for it in kept]
        if kept and "question_type" in kept[0]:
            batch["question_types"] = [it["question_type"] for it in kept]
        if kept:
            batch.update(tokenize_qa(self.tokenizer, batch["questions"], batch["answers"]))
        return batch


class BLIPRecipe(CLIPRecipe):
    """Builds a BLIP, its preprocessing and batches (BERT WordPiece unless told otherwise;
    [DEC]/[ENC] are the model's extra ids), and computes its pre-training losses. Evaluation: ITC
    retrieval (and zero-shot on the built-in shapes) as for CLIP; with the ITM head, Recall@K of
    the ITC top ``itm_rerank_k`` re-ranked by it (``itm_i2t_R@1``, ...); with a decoder, BLEU-1..4,
    CIDEr-D and exact match of greedy captions of the first ``caption_eval_images`` images."""

    name = "blip"
    validation_loss = "itc_loss"  # what evaluate()'s "loss" is (the loss plot's label)

    def __init__(
        self,
        model_spec: dict[str, Any] | None = None,
        tokenizer: str | None = None,
        *,
        prompt: str = "",
        label_smoothing: float = 0.1,
        negatives_all_ranks: bool = True,
        same_caption_is_positive: bool = True,
        caption_eval_images: int = 1000,
        max_caption_tokens: int = 20,
        itm_rerank_k: int = 16,
        init_std: float | None = None,
    ) -> None:
        spec = dict(model_spec or {"preset": "blip-tiny"})
        tokenizer = spec.pop("tokenizer", None) or tokenizer or "bert-base-uncased"
        self.init_std = spec.pop("init_std", init_std)
        super().__init__(spec, tokenizer)
        self.prompt = prompt
        self.label_smoothing = label_smoothing
        self.negatives_all_ranks = negatives_all_ranks
        self.same_caption_is_positive = same_caption_is_positive
        self.caption_eval_images = caption_eval_images
        self.max_caption_tokens = max_caption_tokens
        self.itm_rerank_k = itm_rerank_k
        self._prompt_length: int | None = None

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            self._tokenizer = load_tokenizer(self.tokenizer_name)
        return self._tokenizer

    def create_blip(self) -> nn.Module:
        """The BLIP the ``model`` section describes (a preset gets the tokenizer's text ids)."""
        import vlkit

        spec = dict(self.model_spec)
        pretrained, preset = spec.pop("pretrained", None), spec.pop("preset", None)
        if pretrained is not None:
            model = vlkit.from_pretrained(pretrained, **spec)
        elif preset is not None:
            spec["text"] = {**text_ids(self.tokenizer), **(spec.get("text") or {})}
            model = vlkit.create_model(preset, **spec)
            if self.init_std is not None:
                reinit_text(model, self.init_std)
        else:
            raise ValueError("model needs a 'preset' (e.g. blip-tiny) or a 'pretrained' folder")
        for name in ("fused_hidden", "match_logits", "decoder_logits"):
            if not callable(getattr(model, name, None)):
                raise TypeError(f"the blip task needs a BLIP model (with {name}()); got {type(model).__name__}")
        if self.tokenizer.vocab_size > model.config.text.vocab_size:
            raise ValueError(f"tokenizer {self.tokenizer_name!r} has {self.tokenizer.vocab_size} tokens but the model's "
                             f"vocabulary only {model.config.text.vocab_size}")
        return model

    def build_model(self) -> nn.Module:
        model = self.create_blip()
        c = model.config
        if c.text_decoder and c.decoder_context != "image":
            raise ValueError("the blip task trains captioning: the model's decoder must read the image "
                             "(decoder_context='image'), not a question")
        return model

    @property
    def prompt_length(self) -> int:
        """Tokens of the prompt the LM loss ignores: [DEC] and the prompt's words (not [SEP])."""
        if self._prompt_length is None:
            self._prompt_length = len(self.tokenizer([self.prompt])["input_ids"][0]) - 1 if self.prompt else 0
        return self._prompt_length

    def collate(self) -> Callable:
        return _CaptionCollator(self.tokenizer, self.prompt)

    def make_task(self) -> BLIPTask:
        return BLIPTask(prompt_length=self.prompt_length, label_smoothing=self.label_smoothing,
                        negatives_all_ranks=self.negatives_all_ranks,
                        same_caption_is_positive=self.same_caption_is_positive)

    def summary(self, metrics: dict[str, float], num_images: int | None = None) -> list[str]:
        on = f" on {num_images} held-out images" if num_images else ""
        lines = [line for line in super().summary(metrics, num_images) if not line.startswith("retrieval")]
        if "caption_cider" in metrics:
            n = int(metrics.get("caption_images", 0))
            lines.append(f"captions of {n} held-out images (greedy): CIDEr-D {metrics['caption_cider']:.3f}, "
                         f"BLEU-4 {metrics['caption_bleu_4']:.3f}, exact match {metrics['caption_exact_match']:.1f}%")
        if "i2t_R@1" in metrics:
            line = (f"retrieval Recall@1{on}: image->text {metrics['i2t_R@1']:.1f}%, "
                    f"text->image {metrics['t2i_R@1']:.1f}% (ITC)")
            if "itm_i2t_R@1" in metrics:
                line += (f"; re-ranked by ITM (top {self.itm_rerank_k}): {metrics['itm_i2t_R@1']:.1f}%, "
                         f"{metrics['itm_t2i_R@1']:.1f}%")
            lines.append(line)
        return lines

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def evaluate(self, model: nn.Module, dataset, **kwargs) -> EvalOutput:
        """ITC retrieval metrics and the ITM re-ranked ones (with retrieval heads), caption metrics
        (with a decoder reading the image)."""
        c = model.config
        if c.retrieval_heads:
            result = super().evaluate(ITCView(model, model.scale), dataset, **kwargs)
        else:
            result = EvalOutput({})
        device = kwargs.get("device", "cpu")
        batch_size = kwargs.get("batch_size", 256)
        if c.retrieval_heads and kwargs.get("retrieval", True) and self.itm_rerank_k > 0:
            result.metrics.update(self.itm_retrieval_metrics(model, dataset, device=device, batch_size=batch_size))
        if c.text_decoder and c.decoder_context == "image" and self.caption_eval_images > 0:
            result.metrics.update(self.caption_metrics(model, dataset, device=device,
                                                       precision=kwargs.get("precision", "auto"),
                                                       batch_size=batch_size))
        return result

    def _images_and_captions(self, dataset, batch_size: int, limit: int | None = None):
        """(pixel values (N, 3, H, W), captions) of the first ``limit`` samples."""
        pixels, captions = [], []
        for batch in eval_loader(dataset, self.collate(), batch_size):
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
    def itm_retrieval_metrics(self, model: nn.Module, dataset, *, device="cpu", batch_size: int = 256) -> dict[str, float]:
        """Recall@1/5/10 of the ITC top ``itm_rerank_k`` re-ranked by the ITM head (BLIP's retrieval)."""
        device = torch.device(device)
        was_training = model.training
        model.eval()
        pixels, captions = self._images_and_captions(dataset, batch_size)
        texts, positives = unique_captions(captions)
        tokens = self.tokenizer(texts, padding="longest")
        image_f = torch.cat([model.encode_image(pixels[i : i + batch_size].to(device), normalize=True).float().cpu()
                             for i in range(0, len(pixels), batch_size)])
        text_f = model.encode_text(tokens["input_ids"].to(device), tokens["attention_mask"].to(device),
                                   normalize=True).float().cpu()
        i2t, t2i = itm_rerank_scores(model, self.tokenizer, pixels, texts, similarity_matrix(image_f, text_f),
                                     self.itm_rerank_k, device=device, batch_size=batch_size)
        model.train(was_training)
        return {f"itm_{k}": v for k, v in reranked_recall(i2t, t2i, positives).items()}

    @torch.no_grad()
    def caption_metrics(self, model: nn.Module, dataset, *, device="cpu", precision: str = "auto",
                        batch_size: int = 64) -> dict[str, float]:
        """BLEU-1..4, CIDEr-D and exact match (percent) of greedy captions of the first
        ``caption_eval_images`` images, each image's own caption (target) the reference."""
        pixels, references = self._images_and_captions(dataset, batch_size, self.caption_eval_images)
        batches = [pixels[i : i + batch_size] for i in range(0, len(pixels), batch_size)]
        captions = generate_captions(model, self.tokenizer, batches, prompt=self.prompt or None, device=device,
                                     precision=precision, max_new_tokens=self.max_caption_tokens)
        scores = captioning_scores(captions, [[r] for r in references])
        return {"caption_images": float(len(captions)), **{f"caption_{k}": v for k, v in scores.items()}}

    def decode_caption(self, ids: torch.Tensor, config) -> str:
        """Generated ids (L,) -> tokenized caption text without [DEC], the prompt, [SEP] and padding."""
        return simple_tokenize(decode_generated(self.tokenizer, ids, config.text, max(self.prompt_length, 1)))


def reinit_text(model: nn.Module, std: float) -> None:
    """Normal(0, ``std``) weights for a BLIP's text towers, LM head and retrieval heads (the ViT
    keeps its own init)."""
    for name in ("text_encoder", "text_decoder", "lm_head", "vision_proj", "text_proj", "itm_head"):
        part = getattr(model, name, None)
        if part is not None:
            part.apply(lambda m: init_weights(m, std=std))


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

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                    normalize: bool = False) -> torch.Tensor:
        return self.captioner.encode_text(input_ids, attention_mask, normalize)

    def save_pretrained(self, folder) -> Path:
        folder = Path(folder)
        self.captioner.save_pretrained(folder)
        self.vqa.save_pretrained(folder / VQA_FOLDER)
        if self.tokenizer is not None:
            self.tokenizer.save(folder)
            self.tokenizer.save(folder / VQA_FOLDER)
        return folder


def vqa_model_for(captioner: nn.Module) -> nn.Module:
    """A BLIP VQA model matching ``captioner`` (same vision and text sizes, no retrieval heads,
    its decoder reading the encoded question), with a freshly initialised answer decoder."""
    from ...models.blip import Blip

    config = dataclasses.replace(captioner.config, retrieval_heads=False, share_encoder_decoder=False,
                                 text_encoder=True, text_decoder=True, decoder_context="question")
    return Blip(config)


class BLIPVQARecipe(BLIPRecipe):
    """BLIP's pre-training losses and VQA in one run (:class:`CaptionerAndVQA`, trained with
    :class:`vlkit.tasks.BLIPVQATask`) on data whose items carry a caption, a question and an answer
    (the built-in shapes). ``model.pretrained`` may name a folder this recipe wrote (the VQA model
    is read from its ``vqa`` sub-folder, sharing the captioner's encoders) or a captioning BLIP
    (a new answer decoder is added). Evaluation adds VQA accuracy of greedy answers to the first
    ``vqa_eval_questions`` questions (``vqa_accuracy``, ``vqa_exact_match``, per question type)."""

    name = "blip-vqa"

    def __init__(self, model_spec: dict[str, Any] | None = None, tokenizer: str | None = None, *,
                 vqa_weight: float = 1.0, vqa_eval_questions: int = 1000, **kwargs) -> None:
        super().__init__(model_spec, tokenizer, **kwargs)
        self.vqa_weight = vqa_weight
        self.vqa_eval_questions = vqa_eval_questions

    def build_model(self) -> nn.Module:
        import vlkit

        captioner = super().build_model()
        pretrained = self.model_spec.get("pretrained")
        if pretrained is not None and (Path(pretrained) / VQA_FOLDER / "config.json").is_file():
            vqa = vlkit.from_pretrained(Path(pretrained) / VQA_FOLDER)
        else:
            vqa = vqa_model_for(captioner)
            if self.init_std is not None:
                reinit_text(vqa, self.init_std)
        if captioner.config.text_decoder and captioner.config.decoder_context != "image":
            raise ValueError("the captioner's decoder must read the image")
        return CaptionerAndVQA(captioner, vqa, self.tokenizer)

    def make_task(self) -> BLIPVQATask:
        return BLIPVQATask(super().make_task(), VQATask(label_smoothing=self.label_smoothing),
                           vqa_weight=self.vqa_weight)

    def image_size(self, model: nn.Module) -> int:
        return model.captioner.config.vision.image_size

    def transform(self, model: nn.Module, train: bool = False) -> Callable:
        import vlkit

        return vlkit.image_transform(model.captioner, train=train)

    def collate(self) -> Callable:
        return _CaptionQACollator(self.tokenizer, self.prompt)

    def summary(self, metrics: dict[str, float], num_images: int | None = None) -> list[str]:
        lines = super().summary(metrics, num_images)
        if "vqa_accuracy" in metrics:
            n = int(metrics.get("vqa_questions", 0))
            types = sorted(k[len("vqa_accuracy_"):] for k in metrics if k.startswith("vqa_accuracy_"))
            parts = ", ".join(f"{t} {metrics['vqa_accuracy_' + t]:.1f}%" for t in types)
            lines.append(f"VQA accuracy on {n} held-out questions (greedy answers): {metrics['vqa_accuracy']:.1f}%"
                         + (f" ({parts})" if parts else ""))
        return lines

    @torch.no_grad()
    def evaluate(self, model: nn.Module, dataset, **kwargs) -> EvalOutput:
        result = super().evaluate(model.captioner, dataset, **kwargs)
        if self.vqa_eval_questions > 0:
            result.metrics.update(self.vqa_metrics(model.vqa, dataset, device=kwargs.get("device", "cpu"),
                                                   precision=kwargs.get("precision", "auto"),
                                                   batch_size=kwargs.get("batch_size", 256)))
        return result

    @torch.no_grad()
    def vqa_metrics(self, vqa: nn.Module, dataset, *, device="cpu", precision: str = "auto",
                    batch_size: int = 256) -> dict[str, float]:
        pixels, questions, answers, types = [], [], [], []
        for batch in eval_loader(dataset, self.collate(), batch_size):
            if "pixel_values" not in batch:
                continue
            pixels.append(batch["pixel_values"])
            questions += batch["questions"]
            answers += batch["answers"]
            types += batch.get("question_types", [""] * len(batch["questions"]))
            if len(questions) >= self.vqa_eval_questions:
                break
        n = min(len(questions), self.vqa_eval_questions)
        if n == 0:
            raise ValueError("the validation data has no questions")
        predictions = answer_questions(vqa, self.tokenizer, torch.cat(pixels)[:n], questions[:n], device=device,
                                       precision=precision, batch_size=batch_size)
        typed = all(types[:n])
        scores = vqa_scores(predictions, [[a] for a in answers[:n]], types[:n] if typed else None)
        out = {"vqa_questions": float(n), "vqa_accuracy": scores["vqa_accuracy"], "vqa_exact_match": scores["exact_match"]}
        out.update({f"vqa_{k}": v for k, v in scores.items() if k.startswith("accuracy_")})
        return out
