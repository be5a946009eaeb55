"""Byte-level BPE as GPT-2 uses it.

Text is split by GPT-2's pattern into pre-tokens; each pre-token's UTF-8 bytes are mapped to
printable characters (``bytes_to_unicode``) and merged by rank. Every string encodes (there are
no unknown bytes) and ``decode(encode(s)) == s``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import regex

from .base import Tokenizer, register_algorithm, utf8_bytes
from .bpe_core import BPEMerges, bytes_to_unicode, train_merges
from .normalizers import build_normalizer
from .training import count_words, progress_bar
from .vocab_files import merges_to_ids, read_merges_txt, read_vocab_json, write_merges_txt, write_vocab_json

GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
DIGIT = regex.compile(r"\p{N}")  # Rust's char::is_numeric, what HF's Digits pre-tokenizer splits on


@register_algorithm("bpe")
class BPETokenizer(Tokenizer):
    """Byte-level BPE (GPT-2). ``tokens`` is the vocabulary in id order; ``merges`` the ranked
    pairs of token strings. ``pattern`` is the pre-tokenization regex (GPT-2's by default);
    ``individual_digits`` first makes every digit a piece of its own (HF's ``Digits`` pre-tokenizer,
    as StarCoder's and SmolLM's tokenizers have it)."""

    data_files = ("vocab.json", "merges.txt")

    def __init__(
        self,
        tokens: Sequence[str],
        merges: Sequence[tuple[str, str]],
        special_tokens: dict[str, str] | None = None,
        *,
        pattern: str = GPT2_PATTERN,
        add_prefix_space: bool = False,
        normalizer: dict | None = None,
        ignore_merges: bool = False,
        individual_digits: bool = False,
        **kwargs,
    ):
        super().__init__(tokens, special_tokens, **kwargs)
        self.merges = [tuple(m) for m in merges]
        self.pattern = pattern
        self.add_prefix_space = add_prefix_space
        self.normalizer = normalizer
        self.ignore_merges = ignore_merges
        self._normalize = build_normalizer(normalizer)
        compiled = regex.compile(pattern)
        # GPT-2's pattern matches every character; another pattern's gaps are pieces too (HF "Isolated").
        self._findall = compiled.findall if pattern == GPT2_PATTERN else _isolated_split(compiled)
        self.individual_digits = individual_digits
        if individual_digits:
            self._findall = _digits_first(self._findall)
        self._bpe = BPEMerges(merges_to_ids(self.merges, self._token_to_id, "BPE merges"))
        byte_map = bytes_to_unicode()
        self._byte_ids = [self._token_to_id.get(byte_map[b]) for b in range(256)]
        self._translate = {b: c for b, c in byte_map.items()}
        self._untranslate = {ord(c): chr(b) for b, c in byte_map.items()}
        self._cache: dict[str, list[int]] = {}

    def __getstate__(self) -> dict:  # the normalizer function is rebuilt from its spec
        state = dict(self.__dict__)
        state["_normalize"] = None
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._normalize = build_normalizer(self.normalizer)

    # ------------------------------------------------------------------ encoding
    def _word_ids(self, word: str) -> list[int]:
        data = utf8_bytes(word)
        if self.ignore_merges:
            whole = self._token_to_id.get(data.decode("latin-1").translate(self._translate))
            if whole is not None:
                return [whole]
        byte_ids = self._byte_ids
        symbols = [byte_ids[b] for b in data]
        if None in symbols:  # a vocabulary trained without the full byte alphabet
            unk = self.unk_token_id
            symbols = [unk if s is None else s for s in symbols]
            symbols = [s for s in symbols if s is not None]
        return self._bpe.apply(symbols)

    def _encode_piece(self, text: str) -> list[int]:
        if self._normalize is not None:
            text = self._normalize(text)
        if self.add_prefix_space and text and not text.startswith(" "):
            text = " " + text
        return self._cached_ids(self._findall(text), self._word_ids)

    # ------------------------------------------------------------------ decoding
    def _decode_tokens(self, tokens: list[str]) -> str:
        specials = self._special_id_set
        to_id = self._token_to_id
        out = bytearray()
        run: list[str] = []
        for t in tokens:
            if to_id[t] in specials:
                if run:
                    out += self._token_bytes("".join(run))
                    run = []
                out += t.encode("utf-8")
            else:
                run.append(t)
        if run:
            out += self._token_bytes("".join(run))
        return out.decode("utf-8", errors="replace")

    def _token_bytes(self, text: str) -> bytes:
        mapped = text.translate(self._untranslate)
        try:
            return mapped.encode("latin-1")
        except UnicodeEncodeError:  # characters outside the byte alphabet: keep their UTF-8
            return b"".join(c.encode("latin-1") if ord(c) < 256 else c.encode("utf-8") for c in mapped)

    # ------------------------------------------------------------------ training
    @classmethod
    def train(
        cls,
        texts: Iterable[str],
        vocab_size: int,
        *,
        special_tokens: dict[str, str] | None = None,
        extra_special_tokens: Sequence[str] = (),
        min_frequency: int = 0,
        pattern: str = GPT2_PATTERN,
        lowercase: bool = False,
        progress: bool | Callable[[int], None] = False,
    ) -> BPETokenizer:
        """Learn a byte-level BPE vocabulary of ``vocab_size`` tokens from ``texts``.

        Ids: the special tokens first, then the 256 byte symbols, then one token per merge (the
        layout HF ``tokenizers``' BpeTrainer gives, so both learn the same merges on a corpus).
        ``lowercase`` lowercases the text outside special tokens, in training and in encoding
        (HF's ``Lowercase`` normalizer, saved in the tokenizer's config and its tokenizer.json).
        """
        normalizer = {"type": "Lowercase"} if lowercase else None
        normalize = build_normalizer(normalizer)
        if special_tokens is None:
            special_tokens = {"bos": "<|endoftext|>", "eos": "<|endoftext|>"}
        specials = list(dict.fromkeys([*special_tokens.values(), *extra_special_tokens]))
        alphabet = list(bytes_to_unicode().values())
        if vocab_size < len(specials) + len(alphabet):
            raise ValueError(f"vocab_size {vocab_size} is below the {len(specials) + 256} special and byte tokens")
        findall = regex.compile(pattern).findall
        counter = count_words(
            texts, specials, lambda piece: findall(normalize(piece) if normalize is not None else piece)
        )
        tokens = specials + alphabet
        to_id = {t: i for i, t in enumerate(tokens)}
        trans = bytes_to_unicode()
        words, counts = [], []
        for word, c in counter.items():
            words.append([to_id[trans[b]] for b in utf8_bytes(word)])
            counts.append(c)

        def new_token(a: int, b: int) -> int:
            tokens.append(tokens[a] + tokens[b])
            return len(tokens) - 1

        num_merges = vocab_size - len(tokens)
        with progress_bar(progress, num_merges, "bpe merges") as step:
            merges = train_merges(words, counts, num_merges, new_token, min_frequency, step)
        merge_strs = [(tokens[a], tokens[b]) for a, b, _ in merges]
        return cls(
            tokens,
            merge_strs,
            special_tokens,
            extra_special_tokens=extra_special_tokens,
            pattern=pattern,
            normalizer=normalizer,
        )

    # ------------------------------------------------------------------ save/load
    def _config(self) -> dict:
        return {
            "pattern": self.pattern,
            "add_prefix_space": self.add_prefix_space,
            "normalizer": self.normalizer,
            "ignore_merges": self.ignore_merges,
            "individual_digits": self.individual_digits,
        }

    def _save_data(self, folder: Path) -> None:
        write_vocab_json(folder / "vocab.json", self._id_to_token)
        write_merges_txt(folder / "merges.txt", self.merges)

    @classmethod
    def _from_folder(cls, folder: Path, config: dict) -> BPETokenizer:
        tokens = read_vocab_json(folder / "vocab.json")
        merges = read_merges_txt(folder / "merges.txt")
        return cls(
            tokens,
            merges,
            pattern=config.get("pattern", GPT2_PATTERN),
            add_prefix_space=config.get("add_prefix_space", False),
            normalizer=config.get("normalizer"),
            ignore_merges=config.get("ignore_merges", False),
            individual_digits=config.get("individual_digits", False),
            **cls._kwargs_from_config(config),
        )

    def to_hf_json(self) -> dict:
        from .hf import hf_document

        gpt2 = self.pattern == GPT2_PATTERN
        pres = [{"type": "Digits", "individual_digits": True}] if self.individual_digits else []
        if not gpt2:
            pres.append({"type": "Split", "pattern": {"Regex": self.pattern}, "behavior": "Isolated", "invert": False})
        pres.append(
            {"type": "ByteLevel", "add_prefix_space": self.add_prefix_space, "trim_offsets": True, "use_regex": gpt2}
        )
        pre = pres[0] if len(pres) == 1 else {"type": "Sequence", "pretokenizers": pres}
        model = {
            "type": "BPE",
            "dropout": None,
            "unk_token": self.special_tokens.get("unk"),
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": False,
            "byte_fallback": False,
            "ignore_merges": self.ignore_merges,
            "vocab": self._token_to_id,
            "merges": [list(m) for m in self.merges],
        }
        decoder = {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True}
        return hf_document(self, model, normalizer=self.normalizer, pre_tokenizer=pre, decoder=decoder)


def _isolated_split(pattern: regex.Pattern) -> Callable[[str], list[str]]:
    """Split on ``pattern`` keeping both the matches and the text between them."""

    def split(text: str) -> list[str]:
        out, pos = [], 0
        for m in pattern.finditer(text):
            if m.start() > pos:
                out.append(text[pos : m.start()])
            if m.end() > m.start():
                out.append(m.group())
            pos = m.end()
        if pos < len(text):
            out.append(text[pos:])
        return out

    return split


def _digits_first(findall: Callable[[str], list[str]]) -> Callable[[str], list[str]]:
    """Every digit a piece of its own, the text between digits split by ``findall``."""
    digits = _isolated_split(DIGIT)

    def split(text: str) -> list[str]:
        if DIGIT.search(text) is None:
            return findall(text)
        return [p for piece in digits(text) for p in ([piece] if DIGIT.fullmatch(piece) else findall(piece))]

    return split
