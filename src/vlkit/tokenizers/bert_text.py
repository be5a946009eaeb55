"""BERT's basic tokenization: clean-up, CJK splitting, accent stripping, lowercasing, and the
split on whitespace and punctuation that comes before WordPiece.

The steps and their order are those of HF ``tokenizers``' BertNormalizer and BertPreTokenizer
(the fast tokenizer of transformers' BertTokenizerFast): remove NUL, U+FFFD and "other"
characters (Cc, Cf, Co, Cn) but tab/newline/CR, map whitespace to a space, put spaces around
CJK ideographs, strip accents (NFD, drop Mn), lowercase character by character; then split on
whitespace and isolate each punctuation character (ASCII punctuation or Unicode P*).
"""

from __future__ import annotations

import unicodedata

import regex

from .normalizers import lowercase as _lowercase

_CONTROL = regex.compile(r"(?:(?![\t\n\r])[\x00\ufffd\p{Cc}\p{Cf}\p{Co}])+")
_WHITESPACE = regex.compile(r"[\t\n\r\p{White_Space}]")
_CJK = regex.compile(
    "([\u4e00-\u9fff\u3400-\u4dbf\U00020000-\U0002a6df\U0002a700-\U0002b73f"
    "\U0002b740-\U0002b81f\U0002b820-\U0002ceaf\uf900-\ufaff\U0002f800-\U0002fa1f])"
)
_MARKS = regex.compile(r"\p{Mn}+")
_PUNCT = r"!-/:-@\[-`{-~\p{P}"
# A word: a run of characters that are neither whitespace nor punctuation; or one punctuation mark.
_WORDS = regex.compile(rf"[^{_PUNCT}\p{{White_Space}}]+|[{_PUNCT}]")
# Printable ASCII needs none of the clean-up; only lowercasing and the split.
_ASCII_OK = regex.compile(r"[\x20-\x7e]*")
_ASCII_WS = regex.compile(r"[\t\n\r\x20-\x7e]*")


class BertPreTokenizer:
    """Normalizes text and splits it into words, as BERT's basic tokenizer does."""

    def __init__(
        self,
        lowercase: bool = True,
        strip_accents: bool | None = None,
        clean_text: bool = True,
        handle_chinese_chars: bool = True,
    ):
        self.lowercase = lowercase
        self.strip_accents = lowercase if strip_accents is None else strip_accents
        self.strip_accents_setting = strip_accents
        self.clean_text = clean_text
        self.handle_chinese_chars = handle_chinese_chars

    def normalize(self, text: str) -> str:
        if _ASCII_OK.fullmatch(text):
            return text.lower() if self.lowercase else text
        if self.clean_text:
            text = _WHITESPACE.sub(" ", _CONTROL.sub("", text))
        if self.handle_chinese_chars:
            text = _CJK.sub(r" \1 ", text)
        if self.strip_accents:
            text = _MARKS.sub("", unicodedata.normalize("NFD", text))
        if self.lowercase:
            text = _lowercase(text)
        return text

    def chunks(self, text: str) -> list[str]:
        """The normalized text split at spaces. No word holds whitespace, so the words of the
        text are the words of its chunks, and a chunk can be cached as a unit."""
        if _ASCII_WS.fullmatch(text):  # tab/CR/LF would become spaces: split at them directly
            return (text.lower() if self.lowercase else text).split()
        return self.normalize(text).split(" ")

    def __call__(self, text: str) -> list[str]:
        """The words of ``text``."""
        return [w for chunk in self.chunks(text) for w in _WORDS.findall(chunk)]

    @staticmethod
    def split_chunk(chunk: str) -> list[str]:
        return _WORDS.findall(chunk)

    def to_hf_json(self) -> tuple[dict, dict]:
        normalizer = {
            "type": "BertNormalizer",
            "clean_text": self.clean_text,
            "handle_chinese_chars": self.handle_chinese_chars,
            "strip_accents": self.strip_accents_setting,
            "lowercase": self.lowercase,
        }
        return normalizer, {"type": "BertPreTokenizer"}
