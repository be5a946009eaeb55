"""The BLIP recipe: builds a BLIP, its preprocessing and WordPiece batches (an optional caption
prompt); trains it with :class:`vlkit.tasks.BLIPTask` (ITC, ITM with hard negatives, captioning
LM); evaluates ITC retrieval as for CLIP plus BLEU/CIDEr-D of greedy captions.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ...data.loader import eval_loader
from ...eval.caption_metrics import caption_scores, simple_tokenize
from ...tasks import BLIPTask
from ...tasks.blip import blip_scale
from .albef import ITCView
from .clip import CLIPRecipe, EvalOutput, _autocast


class _PromptCollator:
    """Adds ``decoder_input_ids`` / ``decoder_attention_mask``: the prompt followed by the caption."""

    def __init__(self, base: Callable, tokenizer, prompt: str) -> None:
        self.base, self.tokenizer, self.prompt = base, tokenizer, prompt

    def __call__(self, items):
        batch = self.base(items)
        if "captions" in batch and batch["captions"]:
            tokens = self.tokenizer([self.prompt + c for c in batch["captions"]], padding="longest")
            batch["decoder_input_ids"] = tokens["input_ids"]
            batch["decoder_attention_mask"] = tokens["attention_mask"]
        return batch


class BLIPRecipe(CLIPRecipe):
    """Builds a BLIP, its preprocessing and batches (BERT WordPiece; [DEC]/[ENC] are the model's
    extra ids), and computes its pre-training losses. Evaluation: ITC retrieval (and zero-shot on
    the built-in shapes) as for CLIP, plus BLEU/CIDEr-D of greedy captions when there is a decoder."""

    name = "blip"

    def __init__(
        self,
        model_spec: dict[str, Any] | None = None,
        tokenizer: str = "bert-base-uncased",
        *,
        prompt: str = "",
        label_smoothing: float = 0.1,
        negatives_all_ranks: bool = True,
        same_caption_is_positive: bool = True,
        caption_eval_images: int = 64,
        max_caption_tokens: int = 20,
    ) -> None:
        super().__init__(model_spec or {"preset": "blip-tiny"}, tokenizer)
        self.prompt = prompt
        self.label_smoothing = label_smoothing
        self.negatives_all_ranks = negatives_all_ranks
        self.same_caption_is_positive = same_caption_is_positive
        self.caption_eval_images = caption_eval_images
        self.max_caption_tokens = max_caption_tokens
        self._prompt_length: int | None = None

    def build_model(self) -> nn.Module:
        import vlkit

        spec = dict(self.model_spec)
        pretrained, preset = spec.pop("pretrained", None), spec.pop("preset", None)
        if pretrained is not None:
            model = vlkit.from_pretrained(pretrained, **spec)
        elif preset is not None:
            model = vlkit.create_model(preset, **spec)
        else:
            raise ValueError("model needs a 'preset' (e.g. blip-tiny) or a 'pretrained' folder")
        for name in ("fused_hidden", "match_logits", "decoder_logits"):
            if not callable(getattr(model, name, None)):
                raise TypeError(f"the blip task needs a BLIP model (with {name}()); got {type(model).__name__}")
        c = model.config
        if c.text_decoder and c.decoder_context != "image":
            raise ValueError("the blip task trains captioning: the model's decoder must read the image "
                             "(decoder_context='image'), not a question")
        if self.tokenizer.vocab_size > c.text.vocab_size:
            raise ValueError(f"tokenizer {self.tokenizer_name!r} has {self.tokenizer.vocab_size} tokens but the model's "
                             f"vocabulary only {c.text.vocab_size}")
        return model

    @property
    def prompt_length(self) -> int:
        """Tokens of the prompt the LM loss ignores: [DEC] and the prompt's words (not [SEP])."""
        if self._prompt_length is None:
            self._prompt_length = len(self.tokenizer([self.prompt])["input_ids"][0]) - 1 if self.prompt else 0
        return self._prompt_length

    def collate(self) -> Callable:
        base = super().collate()
        return _PromptCollator(base, self.tokenizer, self.prompt) if self.prompt else base

    def make_task(self) -> BLIPTask:
        return BLIPTask(prompt_length=self.prompt_length, label_smoothing=self.label_smoothing,
                        negatives_all_ranks=self.negatives_all_ranks,
                        same_caption_is_positive=self.same_caption_is_positive)

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def evaluate(self, model: nn.Module, dataset, **kwargs) -> EvalOutput:
        """ITC retrieval metrics (with retrieval heads) and caption BLEU-1..4 / CIDEr-D of greedy
        captions of the first ``caption_eval_images`` images (with a decoder), their own caption
        the reference (lower-cased, punctuation dropped)."""
        if model.config.retrieval_heads:
            result = super().evaluate(ITCView(model, blip_scale(model)), dataset, **kwargs)
        else:
            result = EvalOutput({})
        if model.config.text_decoder and self.caption_eval_images > 0:
            result.metrics.update(self.caption_metrics(model, dataset, device=kwargs.get("device", "cpu"),
                                                       precision=kwargs.get("precision", "auto"),
                                                       batch_size=kwargs.get("batch_size", 64)))
        return result

    @torch.no_grad()
    def caption_metrics(self, model: nn.Module, dataset, *, device="cpu", precision: str = "auto",
                        batch_size: int = 64) -> dict[str, float]:
        device = torch.device(device)
        was_training = model.training
        model.eval()
        prompt = None
        if self.prompt:
            prompt = self.tokenizer([self.prompt])["input_ids"].to(device)
        hyps, refs = [], []
        for batch in eval_loader(dataset, self.collate(), batch_size):
            if "pixel_values" not in batch:
                continue
            with _autocast(device, precision):
                out = model.generate(batch["pixel_values"].to(device), prompt, max_new_tokens=self.max_caption_tokens)
            hyps += [self.decode_caption(row, model.config) for row in out.cpu()]
            refs += [[simple_tokenize(c)] for c in batch["captions"]]
            if len(hyps) >= self.caption_eval_images:
                break
        model.train(was_training)
        n = min(len(hyps), self.caption_eval_images)
        if n == 0:
            raise ValueError("the validation data has no usable samples")
        scores = caption_scores(hyps[:n], refs[:n])
        return {f"caption_{k}": v for k, v in scores.items()}

    def decode_caption(self, ids: torch.Tensor, config) -> str:
        """Generated ids (L,) -> tokenized caption text without [DEC], the prompt, [SEP] and padding."""
        t = config.text
        ids = ids.tolist()[1 + max(self.prompt_length - 1, 0):]  # drop [DEC] and the prompt's words
        if t.sep_token_id in ids:
            ids = ids[: ids.index(t.sep_token_id)]
        ids = [i for i in ids if i < self.tokenizer.vocab_size and i not in (t.pad_token_id, t.enc_token_id)]
        return simple_tokenize(self.tokenizer.decode(ids, skip_special_tokens=True))
