"""Caption metrics: BLEU-1..4 and CIDEr-D, numerically as the COCO caption evaluation
(pycocoevalcap) computes them on the same tokenized captions.

Captions are pre-tokenized strings (tokens separated by whitespace). The COCO toolkit tokenizes
with Stanford's PTB tokenizer (Java) first; :func:`simple_tokenize` is a dependency-free
approximation of it (lower-case, punctuation split off and dropped) for when that is good enough.

Inputs are either parallel sequences (``hypotheses[i]`` is scored against ``references[i]``) or
mappings from an image id to its captions, as pycocoevalcap takes them (``{id: [hyp]}`` and
``{id: [ref, ref, ...]}``).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Mapping, Sequence

Ngram = tuple[str, ...]

# tokens pycocoevalcap's PTB tokenizer wrapper drops after tokenizing
_PTB_PUNCTUATION = {
    "''",
    "'",
    "``",
    "`",
    "-LRB-",
    "-RRB-",
    "-LCB-",
    "-RCB-",
    ".",
    "?",
    "!",
    ",",
    ":",
    "-",
    "--",
    "...",
    ";",
}
_TOKEN = re.compile(r"\.\.\.|--|``|''|[A-Za-z0-9]+(?:'[A-Za-z]+)?|[^\sA-Za-z0-9]")


def simple_tokenize(caption: str) -> str:
    """Lower-case, split punctuation off words and drop it: ``"A dog, running."`` -> ``"a dog running"``.

    An approximation of the PTB tokenization the COCO toolkit runs; it keeps clitics such as
    ``dog's`` as one token where PTB splits ``dog 's``.
    """
    tokens = _TOKEN.findall(caption.lower().replace("\n", " "))
    return " ".join(t for t in tokens if t not in _PTB_PUNCTUATION)


def _pairs(hypotheses, references) -> list[tuple[str, list[str]]]:
    """Normalise the two input layouts to [(hypothesis, [references])]."""
    if isinstance(hypotheses, Mapping) != isinstance(references, Mapping):
        raise TypeError("hypotheses and references must both be mappings (image id -> captions) or both sequences")
    if isinstance(hypotheses, Mapping):
        if set(hypotheses) != set(references):
            missing, extra = set(references) - set(hypotheses), set(hypotheses) - set(references)
            raise ValueError(
                f"hypotheses and references must have the same image ids; "
                f"without a hypothesis: {sorted(map(str, missing))[:5]}, "
                f"without references: {sorted(map(str, extra))[:5]}"
            )
        keys = list(references)
        hyps = []
        for k in keys:
            h = hypotheses[k]
            if not isinstance(h, str):
                if len(h) != 1:
                    raise ValueError(f"image {k!r}: expected exactly one hypothesis, got {len(h)}")
                h = h[0]
            hyps.append(h)
        refs = [references[k] for k in keys]
    else:
        hyps, refs = list(hypotheses), list(references)
        if len(hyps) != len(refs):
            raise ValueError(f"got {len(hyps)} hypotheses but {len(refs)} reference lists")
    out = []
    for i, (h, r) in enumerate(zip(hyps, refs)):
        if not isinstance(h, str):
            raise TypeError(f"hypothesis {i} must be a string, got {type(h).__name__}")
        if isinstance(r, str) or len(r) == 0:
            raise ValueError(f"references of item {i} must be a non-empty list of strings")
        out.append((h, list(r)))
    if not out:
        raise ValueError("no captions to score")
    return out


def ngram_counts(tokens: Sequence[str], max_n: int) -> Counter[Ngram]:
    """Counts of every 1..max_n-gram of a token list."""
    counts: Counter[Ngram] = Counter()
    for k in range(1, max_n + 1):
        for i in range(len(tokens) - k + 1):
            counts[tuple(tokens[i : i + k])] += 1
    return counts


# ---------------------------------------------------------------------------------------------
# BLEU
# ---------------------------------------------------------------------------------------------

_SMALL, _TINY = 1e-9, 1e-15  # the COCO scorer's smoothing: (correct + tiny) / (guess + small)


def _bleu_stats(hyp: str, refs: list[str], max_n: int) -> tuple[int, int, list[int], list[int]]:
    """(hypothesis length, closest reference length, clipped matches per n, hypothesis n-grams per n)."""
    tokens = hyp.split()
    counts = ngram_counts(tokens, max_n)
    max_ref: dict[Ngram, int] = {}
    ref_lens = []
    for ref in refs:
        r = ref.split()
        ref_lens.append(len(r))
        for g, c in ngram_counts(r, max_n).items():
            if c > max_ref.get(g, 0):
                max_ref[g] = c
    hyp_len = len(tokens)
    # "closest": the reference length nearest the hypothesis length, the shorter one on ties
    ref_len = min((abs(length - hyp_len), length) for length in ref_lens)[1]
    correct = [0] * max_n
    for g, c in counts.items():
        correct[len(g) - 1] += min(max_ref.get(g, 0), c)
    guess = [max(0, hyp_len - k + 1) for k in range(1, max_n + 1)]
    return hyp_len, ref_len, correct, guess


def _bleu_from_stats(hyp_len: float, ref_len: float, correct: list[float], guess: list[float]) -> list[float]:
    """BLEU-1..n: geometric means of the n-gram precisions up to n, times the brevity penalty."""
    scores, product = [], 1.0
    for k in range(len(correct)):
        product *= (float(correct[k]) + _TINY) / (float(guess[k]) + _SMALL)
        scores.append(product ** (1.0 / (k + 1)))
    ratio = (hyp_len + _TINY) / (ref_len + _SMALL)
    if ratio < 1:
        scores = [s * math.exp(1 - 1 / ratio) for s in scores]
    return scores


def bleu(hypotheses, references, max_n: int = 4) -> tuple[list[float], list[list[float]]]:
    """Corpus BLEU-1..max_n and per-caption BLEU, as pycocoevalcap's ``Bleu(n).compute_score``.

    Returns ``(corpus, per_caption)``: ``corpus[k]`` is BLEU-(k+1) over the whole set (n-gram
    matches and lengths summed over captions before the precision is taken), and
    ``per_caption[k][i]`` the same for caption i alone. The reference length of each caption is
    the one closest to its hypothesis length (COCO's "closest" rule).
    """
    if max_n < 1:
        raise ValueError(f"max_n must be at least 1, got {max_n}")
    pairs = _pairs(hypotheses, references)
    total_hyp, total_ref = 0, 0
    total_correct, total_guess = [0] * max_n, [0] * max_n
    per_caption: list[list[float]] = [[] for _ in range(max_n)]
    for hyp, refs in pairs:
        hyp_len, ref_len, correct, guess = _bleu_stats(hyp, refs, max_n)
        total_hyp += hyp_len
        total_ref += ref_len
        for k in range(max_n):
            total_correct[k] += correct[k]
            total_guess[k] += guess[k]
        for k, s in enumerate(_bleu_from_stats(hyp_len, ref_len, correct, guess)):
            per_caption[k].append(s)
    return _bleu_from_stats(total_hyp, total_ref, total_correct, total_guess), per_caption


# ---------------------------------------------------------------------------------------------
# CIDEr-D
# ---------------------------------------------------------------------------------------------


def _tfidf(counts: Counter[Ngram], doc_freq: Counter[Ngram], log_num_images: float, n: int):
    """tf-idf vectors per n-gram order, their norms, and the caption's length as COCO counts it."""
    vec: list[dict[Ngram, float]] = [{} for _ in range(n)]
    sq = [0.0] * n
    length = 0
    for g, tf in counts.items():
        k = len(g) - 1
        w = float(tf) * (log_num_images - math.log(max(1.0, doc_freq[g])))
        vec[k][g] = w
        sq[k] += w * w
        if k == 1:
            # pycocoevalcap counts the bigrams here (its ``n == 1`` is the bigram slot), so the
            # "length" in the Gaussian penalty is the number of bigrams; kept for equal scores
            length += tf
    return vec, [math.sqrt(s) for s in sq], length


def cider_d(hypotheses, references, n: int = 4, sigma: float = 6.0) -> tuple[float, list[float]]:
    """CIDEr-D as pycocoevalcap's ``Cider().compute_score``: ``(corpus mean, per-caption scores)``.

    For each n = 1..4: tf-idf vectors with document frequencies counted over the reference sets
    of the evaluated images (idf = log(#images) - log(max(1, df))); the hypothesis weight of each
    n-gram is clipped at the reference's (``min(h, r) * r``), the cosine is multiplied by the
    length penalty ``exp(-delta^2 / (2 sigma^2))``; scores are averaged over n and over the
    references and multiplied by 10.
    """
    pairs = _pairs(hypotheses, references)
    hyp_counts = [ngram_counts(h.split(), n) for h, _ in pairs]
    ref_counts = [[ngram_counts(r.split(), n) for r in refs] for _, refs in pairs]
    doc_freq: Counter[Ngram] = Counter()
    for refs in ref_counts:
        doc_freq.update(set().union(*refs))
    log_num_images = math.log(float(len(pairs)))
    penalty_denominator = 2 * sigma**2

    scores = []
    for hyp, refs in zip(hyp_counts, ref_counts):
        vec_h, norm_h, len_h = _tfidf(hyp, doc_freq, log_num_images, n)
        total = [0.0] * n
        for ref in refs:
            vec_r, norm_r, len_r = _tfidf(ref, doc_freq, log_num_images, n)
            penalty = math.exp(-(float(len_h - len_r) ** 2) / penalty_denominator)
            for k in range(n):
                val = sum(min(w, vec_r[k].get(g, 0.0)) * vec_r[k].get(g, 0.0) for g, w in vec_h[k].items())
                if norm_h[k] != 0 and norm_r[k] != 0:
                    val /= norm_h[k] * norm_r[k]
                total[k] += val * penalty
        scores.append(sum(total) / n / len(refs) * 10.0)
    return sum(scores) / len(scores), scores


def caption_scores(hypotheses, references) -> dict[str, float]:
    """Corpus BLEU-1..4 and CIDEr-D: ``{"bleu_1", "bleu_2", "bleu_3", "bleu_4", "cider"}``."""
    corpus_bleu, _ = bleu(hypotheses, references, 4)
    cider, _ = cider_d(hypotheses, references)
    out = {f"bleu_{k + 1}": s for k, s in enumerate(corpus_bleu)}
    out["cider"] = cider
    return out
