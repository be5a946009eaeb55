"""BERT next-sentence-prediction pairs: half true continuations, half random sentences."""

from __future__ import annotations

import random
from collections.abc import Sequence

IS_NEXT, NOT_NEXT = 0, 1  # BERT's (and transformers') label convention


def make_nsp_pairs(
    documents: Sequence[Sequence[str]], rng: random.Random | None = None, next_probability: float = 0.5
) -> list[tuple[str, str, int]]:
    """Every adjacent sentence pair (A, B) of each document becomes one example: with
    ``next_probability`` B is kept (label IS_NEXT), otherwise B is replaced by a random sentence
    of another document (label NOT_NEXT)."""
    rng = rng or random.Random(0)
    docs = [list(d) for d in documents if len(d) > 0]
    if len(docs) < 2:
        raise ValueError("NSP pairs need at least two non-empty documents (random B comes from another document)")
    pairs = []
    for i, doc in enumerate(docs):
        for a, b in zip(doc, doc[1:]):
            if rng.random() < next_probability:
                pairs.append((a, b, IS_NEXT))
            else:
                j = rng.randrange(len(docs) - 1)
                other = docs[j if j < i else j + 1]
                pairs.append((a, rng.choice(other), NOT_NEXT))
    return pairs
