"""WordPiece as BERT uses it, and its likelihood-based training.

Encoding: BERT's basic tokenization (``BertPreTokenizer``), then for each word the longest
vocabulary entry from the left, continuing with ``##`` pieces; a word with a part no entry
covers, or longer than 100 characters, becomes a single ``[UNK]``.

Training: start from the characters (``##``-prefixed when not word-initial) and repeatedly merge
the adjacent pair with the highest score count(ab) / (count(a) * count(b)): the merge that most
raises the likelihood of the corpus under a unigram model of the pieces.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from .base import Tokenizer, register_algorithm
from .bert_text import BertPreTokenizer
from .bpe_core import merge_pair
from .training import count_words, progress_bar
from .vocab_files import read_vocab_txt, write_vocab_txt

BERT_SPECIALS = {"pad": "[PAD]", "unk": "[UNK]", "cls": "[CLS]", "sep": "[SEP]", "mask": "[MASK]"}


@register_algorithm("wordpiece")
class WordPieceTokenizer(Tokenizer):
    """BERT's WordPiece. ``tokens``: the vocabulary in id order (a ``vocab.txt``); ``lowercase``
    for an uncased vocabulary (accents are then stripped too, unless ``strip_accents`` says
    otherwise). The batch call gives ``[CLS] ... [SEP]`` padded with ``[PAD]``."""

    data_files = ("vocab.txt",)

    def __init__(
        self,
        tokens: Sequence[str],
        special_tokens: dict[str, str] | None = None,
        *,
        lowercase: bool = True,
        strip_accents: bool | None = None,
        clean_text: bool = True,
        handle_chinese_chars: bool = True,
        continuing_prefix: str = "##",
        max_input_chars_per_word: int = 100,
        **kwargs,
    ):
        if special_tokens is None:
            vocab = set(tokens)
            special_tokens = {role: t for role, t in BERT_SPECIALS.items() if t in vocab}
        if "unk" not in special_tokens:
            raise ValueError("a WordPiece tokenizer needs an unk special token (e.g. [UNK]) in its vocabulary")
        if "cls" in special_tokens and "sep" in special_tokens:
            kwargs.setdefault("prefix", [special_tokens["cls"]])
            kwargs.setdefault("suffix", [special_tokens["sep"]])
        super().__init__(tokens, special_tokens, **kwargs)
        self.pre_tokenizer = BertPreTokenizer(lowercase, strip_accents, clean_text, handle_chinese_chars)
        self.continuing_prefix = continuing_prefix
        self.max_input_chars_per_word = max_input_chars_per_word
        self._unk = self._token_to_id[special_tokens["unk"]]
        plen = len(continuing_prefix)
        self._max_len = max(
            (len(t) - plen if t.startswith(continuing_prefix) else len(t) for t in self._id_to_token), default=1
        )
        self._cache: dict[str, list[int]] = {}

    @property
    def lowercase(self) -> bool:
        return self.pre_tokenizer.lowercase

    # ------------------------------------------------------------------ encoding
    def _word_ids(self, word: str) -> list[int]:
        """Greedy longest-match-first over ``word``; [UNK] for the whole word if a part fails."""
        n = len(word)
        if n > self.max_input_chars_per_word:
            return [self._unk]
        vocab = self._token_to_id
        prefix = self.continuing_prefix
        longest = self._max_len
        ids = []
        start = 0
        while start < n:
            end = min(n, start + longest)
            found = None
            while end > start:
                piece = word[start:end]
                found = vocab.get(prefix + piece if start else piece)
                if found is not None:
                    break
                end -= 1
            if found is None:
                return [self._unk]
            ids.append(found)
            start = end
        return ids

    def _chunk_ids(self, chunk: str) -> list[int]:
        ids: list[int] = []
        for word in self.pre_tokenizer.split_chunk(chunk):
            ids += self._word_ids(word)
        return ids

    def _encode_piece(self, text: str) -> list[int]:
        return self._cached_ids(self.pre_tokenizer.chunks(text), self._chunk_ids)

    # ------------------------------------------------------------------ decoding
    def _decode_tokens(self, tokens: list[str]) -> str:
        """HF's WordPiece decoder: '##' pieces join the previous token, others follow a space;
        then the usual clean-up of spaces before punctuation and contractions."""
        prefix = self.continuing_prefix
        parts = []
        for i, t in enumerate(tokens):
            if t.startswith(prefix):
                parts.append(t[len(prefix) :])
            else:
                parts.append(" " + t if i else t)
        text = "".join(parts)
        for a, b in _CLEANUP:
            text = text.replace(a, b)
        return text

    # ------------------------------------------------------------------ training
    @classmethod
    def train(
        cls,
        texts: Iterable[str],
        vocab_size: int,
        *,
        special_tokens: dict[str, str] | None = None,
        extra_special_tokens: Sequence[str] = (),
        lowercase: bool = True,
        strip_accents: bool | None = None,
        min_frequency: int = 0,
        limit_alphabet: int | None = None,
        continuing_prefix: str = "##",
        progress: bool | Callable[[int], None] = False,
    ) -> WordPieceTokenizer:
        """Learn a WordPiece vocabulary of (at most) ``vocab_size`` tokens from ``texts``.

        Vocabulary: the special tokens, then the alphabet (word-initial characters and their
        ``##`` forms, most frequent first when ``limit_alphabet`` caps it), then one token per
        merge. Each merge takes the pair with the highest count(ab) / (count(a) * count(b))
        among pairs seen at least ``min_frequency`` times (ties: the more frequent pair, then the
        pair of smaller ids); a merge whose string is already a token reuses it.
        """
        if special_tokens is None:
            special_tokens = dict(BERT_SPECIALS)
        pre = BertPreTokenizer(lowercase, strip_accents)
        specials = list(dict.fromkeys([*special_tokens.values(), *extra_special_tokens]))
        counter = count_words(texts, specials, pre)
        tokens, words, counts = _initial_alphabet(counter, specials, continuing_prefix, limit_alphabet)
        if vocab_size < len(tokens):
            raise ValueError(
                f"vocab_size {vocab_size} is below the {len(tokens)} special and alphabet tokens of this corpus; "
                "raise it or cap the alphabet with limit_alphabet"
            )
        num_merges = vocab_size - len(tokens)
        with progress_bar(progress, num_merges, "wordpiece merges") as step:
            _train_wordpiece(tokens, words, counts, vocab_size, continuing_prefix, min_frequency, step)
        return cls(
            tokens,
            special_tokens,
            lowercase=lowercase,
            strip_accents=strip_accents,
            continuing_prefix=continuing_prefix,
            extra_special_tokens=extra_special_tokens,
        )

    # ------------------------------------------------------------------ save/load
    def _config(self) -> dict:
        p = self.pre_tokenizer
        return {
            "lowercase": p.lowercase,
            "strip_accents": p.strip_accents_setting,
            "clean_text": p.clean_text,
            "handle_chinese_chars": p.handle_chinese_chars,
            "continuing_prefix": self.continuing_prefix,
            "max_input_chars_per_word": self.max_input_chars_per_word,
        }

    def _save_data(self, folder: Path) -> None:
        write_vocab_txt(folder / "vocab.txt", self._id_to_token)

    @classmethod
    def _from_folder(cls, folder: Path, config: dict) -> WordPieceTokenizer:
        return cls(
            read_vocab_txt(folder / "vocab.txt"),
            lowercase=config.get("lowercase", True),
            strip_accents=config.get("strip_accents"),
            clean_text=config.get("clean_text", True),
            handle_chinese_chars=config.get("handle_chinese_chars", True),
            continuing_prefix=config.get("continuing_prefix", "##"),
            max_input_chars_per_word=config.get("max_input_chars_per_word", 100),
            **cls._kwargs_from_config(config),
        )

    def to_hf_json(self) -> dict:
        from .hf import hf_document

        normalizer, pre = self.pre_tokenizer.to_hf_json()
        model = {
            "type": "WordPiece",
            "unk_token": self.special_tokens["unk"],
            "continuing_subword_prefix": self.continuing_prefix,
            "max_input_chars_per_word": self.max_input_chars_per_word,
            "vocab": self._token_to_id,
        }
        decoder = {"type": "WordPiece", "prefix": self.continuing_prefix, "cleanup": True}
        return hf_document(self, model, normalizer=normalizer, pre_tokenizer=pre, decoder=decoder)


_CLEANUP = [
    (" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" n't", "n't"), (" 'm", "'m"), (" 's", "'s"),
    (" 've", "'ve"), (" 're", "'re"),
]  # fmt: skip


def _initial_alphabet(
    counter: Counter, specials: list[str], prefix: str, limit: int | None
) -> tuple[list[str], list[list[int]], list[int]]:
    """Special tokens + character alphabet, and every word as a list of alphabet ids."""
    char_count: Counter[str] = Counter()
    for word, c in counter.items():
        for ch in word:
            char_count[ch] += c
    chars = sorted(char_count, key=lambda ch: (-char_count[ch], ch))
    if limit is not None:
        chars = chars[:limit]
    kept = set(chars)
    tokens = list(specials)
    for ch in sorted(kept):
        for t in (ch, prefix + ch):
            if t not in tokens:
                tokens.append(t)
    to_id = {t: i for i, t in enumerate(tokens)}
    words, counts = [], []
    for word, c in counter.items():
        if any(ch not in kept for ch in word):
            continue  # a word with a character outside the alphabet can only be [UNK]
        words.append([to_id[word[0]]] + [to_id[prefix + ch] for ch in word[1:]])
        counts.append(c)
    return tokens, words, counts


def _train_wordpiece(
    tokens: list[str],
    words: list[list[int]],
    counts: list[int],
    vocab_size: int,
    prefix: str,
    min_frequency: int,
    step: Callable[[int], None] | None,
) -> None:
    """Merge pairs by likelihood score until ``tokens`` holds ``vocab_size`` entries (in place).

    Pair counts, symbol counts and the pair -> words index are kept up to date incrementally
    (``merge_pair`` rewrites only the words holding the merged pair). Scores live in a max-heap
    with lazy deletion. A merge lowers count(a) and count(b), which raises the score of every
    other pair holding a or b: those pairs are re-pushed with their new score, so the heap top,
    once checked against the current counts, is the true best pair.
    """
    to_id = {t: i for i, t in enumerate(tokens)}
    sym_count: dict[int, int] = {}
    pair_count: dict[tuple[int, int], int] = {}
    where: dict[tuple[int, int], set[int]] = {}
    partners: dict[int, set[tuple[int, int]]] = {}  # symbol -> pairs it is part of
    for wi, (w, c) in enumerate(zip(words, counts)):
        for s in w:
            sym_count[s] = sym_count.get(s, 0) + c
        for p in zip(w, w[1:]):
            pair_count[p] = pair_count.get(p, 0) + c
            where.setdefault(p, set()).add(wi)
            partners.setdefault(p[0], set()).add(p)
            partners.setdefault(p[1], set()).add(p)
    floor = max(min_frequency, 1)

    def entry(p: tuple[int, int]) -> tuple[float, int, int, int]:
        c = pair_count[p]
        return (-c / (sym_count[p[0]] * sym_count[p[1]]), -c, p[0], p[1])

    heap = [entry(p) for p, c in pair_count.items() if c >= floor]
    heapq.heapify(heap)
    while heap and len(tokens) < vocab_size:
        item = heapq.heappop(heap)
        p = (item[2], item[3])
        if pair_count.get(p, 0) < floor:
            continue
        current = entry(p)
        if current != item:
            heapq.heappush(heap, current)
            continue
        a, b = p
        merged = tokens[a] + tokens[b][len(prefix) :]
        ab = to_id.get(merged)
        if ab is None:
            ab = len(tokens)
            tokens.append(merged)
            to_id[merged] = ab
            if step is not None:
                step(1)
        gained, n = merge_pair(words, counts, where, pair_count, a, b, ab)
        sym_count[a] -= n
        sym_count[b] -= n
        sym_count[ab] = sym_count.get(ab, 0) + n
        for q in gained:
            partners.setdefault(q[0], set()).add(q)
            partners.setdefault(q[1], set()).add(q)
        # Every pair whose score moved: the new ones and the partners of a, b and ab.
        touched = set(gained)
        for s in (a, b, ab):
            touched |= partners.get(s, set())
        for q in touched:
            c = pair_count.get(q, 0)
            if c <= 0:
                pair_count.pop(q, None)
                for s in q:
                    partners.get(s, set()).discard(q)
            elif c >= floor:
                heapq.heappush(heap, entry(q))
        if len(heap) > 4 * len(pair_count) + 1024:  # drop stale entries now and then
            heap = [entry(q) for q, c in pair_count.items() if c >= floor]
            heapq.heapify(heap)
