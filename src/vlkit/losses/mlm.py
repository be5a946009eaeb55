"""BERT's masked-language-model corruption: choose 15% of the real tokens; of those, 80% become
[MASK], 10% a random token, 10% stay; labels are -100 everywhere else. With whole-word masking
(``continuation``: which ids continue the word before them, WordPiece's ``##`` pieces) the choice
is made per word and covers all of its pieces, as BERT's whole-word-masking models and ViLT do."""

from __future__ import annotations

from collections.abc import Iterable

import torch

IGNORE_INDEX = -100


def mask_tokens(
    input_ids: torch.Tensor,
    vocab_size: int,
    mask_token_id: int,
    special_ids: Iterable[int],
    mlm_probability: float = 0.15,
    generator: torch.Generator | None = None,
    *,
    mask_fraction: float = 0.8,
    random_fraction: float = 0.1,
    continuation: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """input_ids (B, T) -> (corrupted ids, labels), both (B, T).

    Tokens in ``special_ids`` ([CLS], [SEP], [PAD], ...) are never chosen. Of the chosen tokens
    ``mask_fraction`` become ``mask_token_id``, ``random_fraction`` a uniformly random token,
    and the rest are kept as they are (but still predicted). ``continuation`` (V,) bool, True for
    the ids that continue a word: words are chosen with ``mlm_probability``, each with all its pieces.
    """
    if not 0.0 <= mlm_probability <= 1.0:
        raise ValueError(f"mlm_probability must be in [0, 1], got {mlm_probability}")
    if mask_fraction + random_fraction > 1.0:
        raise ValueError("mask_fraction + random_fraction must not exceed 1")
    device = input_ids.device
    special = torch.tensor(sorted(set(special_ids)), dtype=input_ids.dtype, device=device)
    eligible = ~torch.isin(input_ids, special)

    def draw(p: float) -> torch.Tensor:
        return torch.rand(input_ids.shape, generator=generator, device=device) < p

    chosen = draw(mlm_probability)
    if continuation is not None:
        chosen = chosen.gather(1, word_starts(input_ids, continuation))  # each piece takes its word's draw
    chosen = chosen & eligible
    labels = torch.where(chosen, input_ids, torch.full_like(input_ids, IGNORE_INDEX))
    to_mask = chosen & draw(mask_fraction)
    # of the rest, random_fraction / (1 - mask_fraction) become random tokens
    rest = 1.0 - mask_fraction
    to_random = chosen & ~to_mask & draw(random_fraction / rest if rest > 0 else 0.0)
    random_ids = torch.randint(vocab_size, input_ids.shape, generator=generator, device=device, dtype=input_ids.dtype)
    out = torch.where(to_mask, torch.full_like(input_ids, mask_token_id), input_ids)
    out = torch.where(to_random, random_ids, out)
    return out, labels


def word_starts(input_ids: torch.Tensor, continuation: torch.Tensor) -> torch.Tensor:
    """(B, T) position of the first piece of the word each token belongs to; ``continuation`` (V,)
    bool marks the ids that continue the word before them (a row's first token always starts one)."""
    if continuation.dim() != 1 or int(input_ids.max()) >= continuation.shape[0]:
        raise ValueError(f"continuation must be a (V,) flag per id covering the ids, got {tuple(continuation.shape)}")
    T = input_ids.shape[1]
    starts = ~continuation.to(input_ids.device)[input_ids]  # (B, T)
    starts[:, 0] = True
    pos = torch.arange(T, device=input_ids.device).expand_as(input_ids)
    return torch.where(starts, pos, torch.zeros_like(pos)).cummax(dim=1).values  # (B, T)


class MLMCollator:
    """Batch collator for masked-LM pretraining on top of a tokenizer's batch output.

    ``collator({"input_ids": ..., "attention_mask": ...})`` adds ``labels`` and corrupts
    ``input_ids``; the special ids come from the tokenizer (cls/sep/pad/mask/...).
    """

    def __init__(
        self,
        vocab_size: int,
        mask_token_id: int,
        special_ids: Iterable[int],
        mlm_probability: float = 0.15,
        generator: torch.Generator | None = None,
    ):
        self.vocab_size = vocab_size
        self.mask_token_id = mask_token_id
        self.special_ids = sorted(set(special_ids))
        self.mlm_probability = mlm_probability
        self.generator = generator

    def __call__(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        ids, labels = mask_tokens(
            batch["input_ids"],
            self.vocab_size,
            self.mask_token_id,
            self.special_ids,
            self.mlm_probability,
            self.generator,
        )
        if "attention_mask" in batch:  # padding is never a target, even if pad is not listed as special
            labels = labels.masked_fill(batch["attention_mask"] == 0, IGNORE_INDEX)
        return {**batch, "input_ids": ids, "labels": labels}
