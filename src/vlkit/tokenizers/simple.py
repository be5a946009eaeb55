"""The two simple granularities: words and characters, each with a vocabulary counted from a
corpus and an unknown token for everything else."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import regex

from .base import Tokenizer, register_algorithm
from .normalizers import lowercase as _lowercase
from .training import check_corpus_text, progress_bar
from .vocab_files import read_vocab_json, write_vocab_json

SIMPLE_SPECIALS = {"pad": "[PAD]", "unk": "[UNK]", "bos": "[BOS]", "eos": "[EOS]"}
# A word is a run of characters that are neither whitespace nor punctuation/symbols; each
# punctuation or symbol character is a word of its own.
WORD_PATTERN = r"[^\s\p{P}\p{S}]+|[\p{P}\p{S}]"
CHAR_PATTERN = r"[\s\S]"


class _TableTokenizer(Tokenizer):
    """A tokenizer whose tokens are the matches of a regex, looked up in a table."""

    data_files = ("vocab.json",)

    pattern = ""
    unit = ""

    def __init__(
        self, tokens: Sequence[str], special_tokens: dict[str, str] | None = None, *, lowercase: bool = False, **kwargs
    ):
        if special_tokens is None:
            present = set(tokens)
            special_tokens = {role: t for role, t in SIMPLE_SPECIALS.items() if t in present}
        if "unk" not in special_tokens:
            raise ValueError(f"a {type(self).__name__} needs an unk special token in its vocabulary")
        super().__init__(tokens, special_tokens, **kwargs)
        self.lowercase = lowercase
        self._findall = regex.compile(self.pattern).findall
        self._unk = self._token_to_id[special_tokens["unk"]]

    def _split(self, text: str) -> list[str]:
        return self._findall(_lowercase(text) if self.lowercase else text)

    def _encode_piece(self, text: str) -> list[int]:
        get, unk = self._token_to_id.get, self._unk
        return [get(t, unk) for t in self._split(text)]

    @classmethod
    def train(
        cls,
        texts: Iterable[str],
        vocab_size: int | None = None,
        *,
        special_tokens: dict[str, str] | None = None,
        extra_special_tokens: Sequence[str] = (),
        lowercase: bool = False,
        min_frequency: int = 1,
        progress: bool | Callable[[int], None] = False,
    ):
        """The special tokens, then the most frequent units (ties: first seen) seen at least
        ``min_frequency`` times, up to ``vocab_size`` tokens in all (no cap when None)."""
        if special_tokens is None:
            special_tokens = dict(SIMPLE_SPECIALS)
        specials = list(dict.fromkeys([*special_tokens.values(), *extra_special_tokens]))
        findall = regex.compile(cls.pattern).findall
        counter: Counter[str] = Counter()
        with progress_bar(progress, None, f"counting {cls.unit}s", unit="text") as step:
            for text in texts:
                text = check_corpus_text(text)
                counter.update(findall(_lowercase(text) if lowercase else text))
                if step is not None:
                    step(1)
        room = None if vocab_size is None else vocab_size - len(specials)
        if room is not None and room < 0:
            raise ValueError(f"vocab_size {vocab_size} is below the {len(specials)} special tokens")
        kept = [t for t, c in counter.most_common(room) if c >= min_frequency and t not in specials]
        return cls(specials + kept, special_tokens, lowercase=lowercase, extra_special_tokens=extra_special_tokens)

    def _config(self) -> dict:
        return {"lowercase": self.lowercase}

    def _save_data(self, folder: Path) -> None:
        write_vocab_json(folder / "vocab.json", self._id_to_token)

    @classmethod
    def _from_folder(cls, folder: Path, config: dict):
        return cls(
            read_vocab_json(folder / "vocab.json"),
            lowercase=config.get("lowercase", False),
            **cls._kwargs_from_config(config),
        )

    def to_hf_json(self) -> dict:
        from .hf import hf_document

        model = {"type": "WordLevel", "vocab": self._token_to_id, "unk_token": self.special_tokens["unk"]}
        pre = {"type": "Split", "pattern": {"Regex": self.pattern}, "behavior": "Removed", "invert": True}
        normalizer = {"type": "Lowercase"} if self.lowercase else None
        return hf_document(self, model, normalizer=normalizer, pre_tokenizer=pre, decoder=self._hf_decoder())

    def _hf_decoder(self) -> dict | None:
        return None


@register_algorithm("word")
class WordTokenizer(_TableTokenizer):
    """Words split on whitespace and punctuation (each punctuation mark is a token of its own).
    ``decode`` joins the words with single spaces, so it is lossy about spacing."""

    pattern = WORD_PATTERN
    unit = "word"

    def _decode_tokens(self, tokens: list[str]) -> str:
        return " ".join(tokens)


@register_algorithm("char")
class CharTokenizer(_TableTokenizer):
    """One token per Unicode character (code point), whitespace included; ``decode`` joins
    them back, so ``decode(encode(s)) == s`` whenever every character is in the vocabulary."""

    pattern = CHAR_PATTERN
    unit = "char"

    def _decode_tokens(self, tokens: list[str]) -> str:
        return "".join(tokens)

    def _hf_decoder(self) -> dict | None:
        return {"type": "Fuse"}
