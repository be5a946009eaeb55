"""The BLIP task: image-text contrast (ITC), matching with hard negatives (ITM) and captioning
with the image-grounded decoder (LM), BLIP's three pre-training objectives.

``losses(model, batch)`` gives whichever of ``{"itc_loss", "itm_loss", "lm_loss"}`` the model
has parts for (retrieval heads: ITC and ITM; a decoder: LM):

- ITC: the symmetric contrastive loss of the projected [CLS] features, gathered over all
  processes (:func:`vlkit.losses.contrastive.clip_loss`), temperature clamped to [0.001, 0.5];
- ITM: the caption's first token becomes [ENC]; per image one text and per text one image are
  sampled among all ranks' samples in proportion to the softmaxed ITC similarity (equal
  captions excluded) and the matching head classifies B positive and 2B negative pairs;
- LM: the caption's first token becomes [DEC]; next-token cross-entropy with label smoothing
  0.1, padding and an optional prompt (``prompt="a picture of "`` as in BLIP's captioning
  fine-tuning) ignored.

BLIP's own pre-training adds momentum encoders with queues to ITC; this task uses in-batch
(all-rank) negatives instead, as BLIP's models in transformers have no momentum copy.
"""
from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

import torch
from torch import nn

from .albef import ITCView, caption_ids
from .clip import CLIPTask, EvalOutput


def _autocast(device: torch.device, precision: str):
    if precision == "bf16" or (precision == "auto" and device.type == "cuda"):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext()


def _blip_scale(model) -> Callable[[], torch.Tensor]:
    return lambda: 1.0 / model.temp.clamp(0.001, 0.5)


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


class BLIPTask(CLIPTask):
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

    # ------------------------------------------------------------------ training
    def losses(self, model: nn.Module, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        from ..losses.contrastive import clip_loss
        from ..losses.itm import hard_negatives, itm_loss, itm_pairs
        from ..losses.lm import lm_labels, lm_loss
        from ..train.distributed import unwrap

        blip = unwrap(model)
        c = blip.config
        pixels, ids, mask = batch["pixel_values"], batch["input_ids"], batch["attention_mask"]
        dec_ids = batch.get("decoder_input_ids", ids).clone()
        dec_mask = batch.get("decoder_attention_mask", mask)
        dec_ids[:, 0] = c.text.bos_token_id  # [CLS] -> [DEC]
        out = model(pixels, ids, mask, decoder_input_ids=dec_ids if c.text_decoder else None,
                    decoder_attention_mask=dec_mask if c.text_decoder else None)  # through DDP
        losses: dict[str, torch.Tensor] = {}
        if c.retrieval_heads:
            scale = _blip_scale(blip)()
            image_f = torch.nn.functional.normalize(out["image_features"], dim=-1)
            text_f = torch.nn.functional.normalize(out["text_features"], dim=-1)
            losses["itc_loss"] = clip_loss(image_f, text_f, scale)["contrastive_loss"]
            enc_ids = ids.clone()
            enc_ids[:, 0] = c.text.enc_token_id  # [CLS] -> [ENC], as BLIP's own code does
            text_side = {"input_ids": enc_ids, "attention_mask": mask}
            pads = {"input_ids": c.text.pad_token_id, "attention_mask": 0}
            pair_ids = caption_ids(batch["captions"], ids.device) if self.same_caption_is_positive else None
            if self.negatives_all_ranks:
                neg_images, neg_texts = hard_negatives(image_f, text_f, scale, out["image_embeds"], text_side, pads,
                                                       ids=pair_ids)
            else:
                from ..losses.itm import sample_itm_negatives

                with torch.no_grad():
                    sim = scale.detach() * image_f.detach() @ text_f.detach().t()  # (B, B)
                    t_idx, i_idx = sample_itm_negatives(sim, sim.t(), 0, pair_ids, pair_ids)
                neg_images, neg_texts = out["image_embeds"][i_idx], {k: v[t_idx] for k, v in text_side.items()}
            images, texts = itm_pairs(out["image_embeds"], text_side, neg_images, neg_texts, pads)  # 3B pairs
            fused = blip.fused_hidden(texts["input_ids"], texts["attention_mask"], images)  # (3B, T, H)
            losses["itm_loss"] = itm_loss(blip.match_logits(fused))
        if c.text_decoder:
            labels = lm_labels(dec_ids, dec_mask, self.prompt_length)
            losses["lm_loss"] = lm_loss(out["lm_logits"], labels, label_smoothing=self.label_smoothing)
        return losses

    def log_values(self, model: nn.Module) -> dict[str, float]:
        from ..train.distributed import unwrap

        blip = unwrap(model)
        return {"logit_scale": _blip_scale(blip)().item()} if blip.config.retrieval_heads else {}

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def evaluate(self, model: nn.Module, dataset, **kwargs) -> EvalOutput:
        """ITC retrieval metrics (with retrieval heads) and caption BLEU-1..4 / CIDEr-D of greedy
        captions of the first ``caption_eval_images`` images (with a decoder), their own caption
        the reference (lower-cased, punctuation dropped)."""
        if model.config.retrieval_heads:
            result = super().evaluate(ITCView(model, _blip_scale(model)), dataset, **kwargs)
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
        from ..data.loader import eval_loader
        from ..eval.caption_metrics import caption_scores, simple_tokenize

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
        from ..eval.caption_metrics import simple_tokenize

        t = config.text
        ids = ids.tolist()[1 + max(self.prompt_length - 1, 0):]  # drop [DEC] and the prompt's words
        if t.sep_token_id in ids:
            ids = ids[: ids.index(t.sep_token_id)]
        ids = [i for i in ids if i < self.tokenizer.vocab_size and i not in (t.pad_token_id, t.enc_token_id)]
        return simple_tokenize(self.tokenizer.decode(ids, skip_special_tokens=True))
