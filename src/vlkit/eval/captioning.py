"""Captioning evaluation: caption images with a BLIP or a BLIP-2 (or any model with BLIP's
``generate``) and score the captions against references with BLEU-1..4, CIDEr-D and exact match.

    captions = generate_captions(model, tokenizer, pixel_batches, num_beams=3, min_length=5)
    captions = generate_captions(model, tokenizer, pixel_batches, generation_config=GenerationConfig(num_beams=3))
    captioning_scores(captions, references)   # {"bleu_1".."bleu_4", "cider", "exact_match"}

Captions and references are compared after :func:`vlkit.eval.caption_metrics.simple_tokenize`
(lower-cased, punctuation dropped). ``exact_match`` is the percentage of images whose caption
equals one of their references.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from tqdm.auto import tqdm

from ..models.blip2 import Blip2
from ..models.generation_config import GenerationConfig
from ..runtime import autocast, eval_mode
from .caption_metrics import caption_scores, simple_tokenize


def decode_generated(tokenizer, ids: torch.Tensor | Sequence[int], text_config, skip: int = 1) -> str:
    """Generated ids (L,) -> text: the first ``skip`` tokens ([DEC], and the prompt's words when
    there is a prompt) are dropped, the text ends at the first [SEP], and padding, [DEC], [ENC]
    and ids beyond the tokenizer's vocabulary are left out."""
    t = text_config
    ids = ids.tolist() if isinstance(ids, torch.Tensor) else list(ids)
    ids = ids[skip:]
    if t.sep_token_id in ids:
        ids = ids[: ids.index(t.sep_token_id)]
    drop = {t.pad_token_id, t.bos_token_id, t.enc_token_id}
    return tokenizer.decode(
        [i for i in ids if i not in drop and i < tokenizer.vocab_size], skip_special_tokens=True
    ).strip()


def prompt_ids(tokenizer, prompt: str | None) -> torch.Tensor | None:
    """A caption prompt as ``Blip.generate`` takes it: (1, T) ids, [CLS] prompt [SEP]."""
    if not prompt:
        return None
    return tokenizer([prompt])["input_ids"]


def llm_prompt_ids(tokenizer, llm_config, text: str) -> torch.Tensor:
    """A prompt as a BLIP-2's language model reads it: (1, T) ids, BOS (when the LLM has one) then
    ``text`` (no image placeholders: the model puts its queries in front)."""
    bos = llm_config.bos_token_id
    ids = ([] if bos is None else [bos]) + tokenizer.encode(text)
    if not ids:
        raise ValueError("the prompt is empty and the language model has no BOS token to start from")
    return torch.tensor([ids], dtype=torch.long)


def decode_llm(tokenizer, ids: torch.Tensor | Sequence[int], llm_config, skip: int = 0) -> str:
    """A BLIP-2's generated ids (L,) -> text: the first ``skip`` tokens dropped, the text ends at the
    LLM's end token; BOS, padding and ids beyond the tokenizer's vocabulary are left out."""
    ids = ids.tolist() if isinstance(ids, torch.Tensor) else list(ids)
    ids = ids[skip:]
    eos = llm_config.eos_token_id
    if eos in ids:
        ids = ids[: ids.index(eos)]
    drop = {llm_config.bos_token_id, getattr(llm_config, "pad_token_id", None)}
    return tokenizer.decode(
        [i for i in ids if i not in drop and i < tokenizer.vocab_size], skip_special_tokens=True
    ).strip()


@torch.no_grad()
def generate_captions(
    model,
    tokenizer,
    batches: Iterable[torch.Tensor],
    *,
    prompt: str | None = None,
    device: torch.device | str = "cpu",
    precision: str = "auto",
    progress: bool = False,
    total: int | None = None,
    generation_config: GenerationConfig | None = None,
    **overrides,
) -> list[str]:
    """One caption per image of ``batches`` (pixel values (B, 3, H, W)), without the prompt.

    ``generation_config`` and the keyword ``overrides`` (``num_beams``, ``max_new_tokens``,
    ``min_length``, ...) go to ``model.generate``; greedy by default. A BLIP-2 is prompted through
    its language model (BOS, then the prompt).
    """
    device = torch.device(device)
    blip2 = isinstance(model, Blip2)
    if blip2:
        prompt_t: torch.Tensor | None = llm_prompt_ids(tokenizer, model.config.llm, prompt or "")
        skip = prompt_t.shape[1]  # BOS + the prompt
    else:
        prompt_t = prompt_ids(tokenizer, prompt)
        skip = 1 if prompt_t is None else prompt_t.shape[1] - 1  # [DEC] + the prompt's words (its [SEP] is dropped)
    if prompt_t is not None:
        prompt_t = prompt_t.to(device)
    captions: list[str] = []
    with eval_mode(model):
        for pixels in tqdm(batches, desc="captions", total=total, disable=not progress, leave=False):
            with autocast(device, precision):
                out = model.generate(
                    pixels.to(device), prompt_t, generation_config=generation_config, **overrides
                )  # (B, L)
            if blip2:
                captions += [decode_llm(tokenizer, row, model.config.llm, skip) for row in out.cpu()]
            else:
                captions += [decode_generated(tokenizer, row, model.config.text, skip) for row in out.cpu()]
    return captions


def captioning_scores(captions: Sequence[str], references: Sequence[Sequence[str]]) -> dict[str, float]:
    """BLEU-1..4 and CIDEr-D (as pycocoevalcap computes them) and ``exact_match`` (percent) of
    one caption per image against that image's reference captions."""
    if len(captions) != len(references):
        raise ValueError(f"got {len(captions)} captions but {len(references)} reference lists")
    if not captions:
        raise ValueError("no captions to score")
    hyps = [simple_tokenize(c) for c in captions]
    refs = [[simple_tokenize(r) for r in rs] for rs in references]
    scores = caption_scores(hyps, refs)
    scores["exact_match"] = 100.0 * sum(h in rs for h, rs in zip(hyps, refs)) / len(hyps)
    return scores
