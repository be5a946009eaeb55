"""CLIP's BPE (OpenAI CLIP / open_clip).

Text is cleaned (``clip_clean``: ftfy-style fixes, HTML unescaping, whitespace collapsing,
lowercasing), split by CLIP's pattern, and each word's UTF-8 bytes are merged by rank with an
end-of-word ``</w>`` on the last symbol. A sequence is ``<start_of_text> ... <end_of_text>``,
padded with 0 to 77 tokens, truncated so that it still ends with the end token: the ids of
``open_clip.tokenize``.
"""

from __future__ import annotations

import gzip
import unicodedata
from collections.abc import Sequence
from pathlib import Path

import regex

from .base import CACHE_LIMIT, Tokenizer, register_algorithm, utf8_bytes
from .bpe_core import BPEMerges, bytes_to_unicode
from .clip_clean import clip_chunks
from .normalizers import lowercase
from .vocab_files import merges_to_ids, read_merges_txt, read_vocab_json, write_merges_txt, write_vocab_json

CLIP_WORD_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
END_OF_WORD = "</w>"
CLIP_CONTEXT_LENGTH = 77
_WHITESPACE = regex.compile(r"\s+")


def read_clip_bpe_file(path: str | Path) -> tuple[list[str], list[tuple[str, str]]]:
    """The vocabulary (without special tokens) and merges of CLIP's ``bpe_simple_vocab_16e6.txt.gz``.

    As CLIP builds it: the 256 byte symbols, the same with ``</w>``, then one token per merge
    for the first 48894 merges of the file (49152 - 256 - 2 tokens in all before the specials).
    """
    path = Path(path)
    try:
        with gzip.open(path) as f:
            lines = f.read().decode("utf-8").split("\n")
    except FileNotFoundError:
        raise FileNotFoundError(f"CLIP BPE file {path} does not exist") from None
    except (OSError, EOFError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not a gzip-compressed CLIP BPE merges file: {e}") from None
    merges = []
    for n, line in enumerate(lines[1 : 49152 - 256 - 2 + 1], 2):
        parts = line.split()
        if len(parts) != 2:
            raise ValueError(f"{path}:{n}: a merge line must hold two tokens, got {line!r}")
        merges.append((parts[0], parts[1]))
    byte_symbols = list(bytes_to_unicode().values())
    tokens = byte_symbols + [s + END_OF_WORD for s in byte_symbols] + [a + b for a, b in merges]
    return tokens, merges


@register_algorithm("clip")
class CLIPTokenizer(Tokenizer):
    """CLIP's BPE tokenizer. ``tokens``: the vocabulary in id order (special tokens included);
    ``merges``: ranked pairs of token strings. ``clean`` is "clip" (open_clip's clean-up) or
    "whitespace_lower" (the NFC + whitespace + lowercase of HF's CLIP tokenizer.json).

    The batch call gives open_clip's layout: context length 77, pad id 0 and the end token kept
    at the end of a truncated text.
    """

    data_files = ("vocab.json", "merges.txt")

    default_padding = "max_length"

    def __init__(
        self,
        tokens: Sequence[str],
        merges: Sequence[tuple[str, str]],
        special_tokens: dict[str, str] | None = None,
        *,
        clean: str = "clip",
        pad_id: int = 0,
        **kwargs,
    ):
        if special_tokens is None:
            special_tokens = {"bos": "<start_of_text>", "eos": "<end_of_text>"}
        for role in ("bos", "eos"):
            if role not in special_tokens:
                raise ValueError(f"a CLIP tokenizer needs a {role} special token")
        kwargs.setdefault("prefix", [special_tokens["bos"]])
        kwargs.setdefault("suffix", [special_tokens["eos"]])
        kwargs.setdefault("context_length", CLIP_CONTEXT_LENGTH)
        super().__init__(tokens, special_tokens, **kwargs)
        if clean not in ("clip", "whitespace_lower"):
            raise ValueError(f"clean must be 'clip' or 'whitespace_lower', got {clean!r}")
        self.clean = clean
        self.merges = [tuple(m) for m in merges]
        self.pad_id = pad_id
        self._bpe = BPEMerges(merges_to_ids(self.merges, self._token_to_id, "CLIP BPE merges"))
        byte_map = bytes_to_unicode()
        self._byte_ids = [self._token_to_id[byte_map[b]] for b in range(256)]
        self._byte_end_ids = [self._token_to_id[byte_map[b] + END_OF_WORD] for b in range(256)]
        self._untranslate = {ord(c): chr(b) for b, c in byte_map.items()}
        # Special tokens are part of CLIP's word pattern, matched after cleaning (as in open_clip).
        specials = "|".join(regex.escape(t) for t in self.all_special_tokens)
        self._findall = regex.compile(
            (specials + "|" if specials else "") + CLIP_WORD_PATTERN, regex.IGNORECASE
        ).findall
        self._word_cache: dict[str, list[int]] = {t: [self._token_to_id[t]] for t in self.all_special_tokens}
        self._cache: dict[str, list[int]] = {}

    @classmethod
    def from_bpe_file(cls, path: str | Path, **kwargs) -> CLIPTokenizer:
        """CLIP's tokenizer from the original ``bpe_simple_vocab_16e6.txt.gz``."""
        tokens, merges = read_clip_bpe_file(path)
        return cls(tokens + ["<start_of_text>", "<end_of_text>"], merges, **kwargs)

    @property
    def padding_id(self) -> int:
        return self.pad_id

    pad_token_id = property(lambda self: self.pad_id)

    # ------------------------------------------------------------------ encoding
    def _word_ids(self, word: str) -> list[int]:
        data = utf8_bytes(word)
        symbols = [self._byte_ids[b] for b in data[:-1]]
        symbols.append(self._byte_end_ids[data[-1]])
        return self._bpe.apply(symbols)

    def _chunk_ids(self, chunk: str) -> list[int]:
        ids: list[int] = []
        for word in self._findall(chunk):
            r = self._word_cache.get(word)
            if r is None:
                r = self._word_ids(word)
                if len(self._word_cache) >= CACHE_LIMIT:
                    self._word_cache.clear()
                    self._word_cache.update({t: [self._token_to_id[t]] for t in self.all_special_tokens})
                self._word_cache[word] = r
            ids += r
        return ids

    def _encode_text(self, text: str) -> list[int]:
        # No token of CLIP's pattern holds whitespace, so the cleaned text splits into
        # space-separated chunks that encode independently: the cache keys on whole chunks
        # ("park," -> ids of "park" and ","), so a caption costs one lookup per chunk.
        if self.clean == "clip":
            chunks = clip_chunks(text)
        else:
            chunks = lowercase(_WHITESPACE.sub(" ", unicodedata.normalize("NFC", text))).split(" ")
        return self._cached_ids(chunks, self._chunk_ids)

    # ------------------------------------------------------------------ decoding
    def _decode_tokens(self, tokens: list[str]) -> str:
        """open_clip's decode: bytes of the symbols, '</w>' read as a space."""
        text = "".join(tokens).translate(self._untranslate)
        try:
            data = text.encode("latin-1")
        except UnicodeEncodeError:
            data = b"".join(c.encode("latin-1") if ord(c) < 256 else c.encode("utf-8") for c in text)
        return data.decode("utf-8", errors="replace").replace(END_OF_WORD, " ")

    # ------------------------------------------------------------------ save/load
    def _config(self) -> dict:
        return {"clean": self.clean, "pad_id": self.pad_id}

    def _save_data(self, folder: Path) -> None:
        write_vocab_json(folder / "vocab.json", self._id_to_token)
        write_merges_txt(folder / "merges.txt", self.merges)

    @classmethod
    def _from_folder(cls, folder: Path, config: dict) -> CLIPTokenizer:
        return cls(
            read_vocab_json(folder / "vocab.json"),
            read_merges_txt(folder / "merges.txt"),
            clean=config.get("clean", "clip"),
            pad_id=config.get("pad_id", 0),
            **cls._kwargs_from_config(config),
        )

    def to_hf_json(self) -> dict:
        """HF's CLIP layout (as transformers' CLIPTokenizer builds it). HF tools clean text with
        NFC + whitespace + lowercase only, so ids can differ from open_clip's on text that ftfy
        or HTML unescaping would change."""
        from .hf import hf_document

        specials = "|".join(regex.escape(t) for t in self.all_special_tokens)
        normalizer = {
            "type": "Sequence",
            "normalizers": [
                {"type": "NFC"},
                {"type": "Replace", "pattern": {"Regex": r"\s+"}, "content": " "},
                {"type": "Lowercase"},
            ],
        }
        pre = {
            "type": "Sequence",
            "pretokenizers": [
                {
                    "type": "Split",
                    "pattern": {"Regex": (specials + "|" if specials else "") + CLIP_WORD_PATTERN},
                    "behavior": "Removed",
                    "invert": True,
                },
                {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False},
            ],
        }
        model = {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": "",
            "end_of_word_suffix": END_OF_WORD,
            "fuse_unk": False,
            "byte_fallback": False,
            "ignore_merges": False,
            "vocab": self._token_to_id,
            "merges": [list(m) for m in self.merges],
        }
        decoder = {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True}
        return hf_document(self, model, normalizer=normalizer, pre_tokenizer=pre, decoder=decoder)
