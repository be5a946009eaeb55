"""SentencePiece-style BPE as HF ``tokenizer.json`` holds it for Llama 2, TinyLlama and Mistral.

Spaces become ``▁`` and one ``▁`` starts the text (the legacy ``Prepend`` + ``Replace`` normalizer,
or the ``Metaspace`` pre-tokenizer without splitting); the whole text is then one word merged
character by character by rank; a character outside the vocabulary becomes the ``<0xXX>`` tokens of
its UTF-8 bytes (``byte_fallback``), or the unknown token. Decoding turns ``▁`` back into spaces,
byte tokens into bytes, and drops the one space the encoder put first.
"""

from __future__ import annotations

from pathlib import Path

from .base import register_algorithm
from .bpe import BPETokenizer

SPACE = "\u2581"  # ▁


def _byte_token(b: int) -> str:
    return f"<0x{b:02X}>"


@register_algorithm("sp_bpe")
class SentencePieceBPETokenizer(BPETokenizer):
    """``normalizer`` (HF JSON spec) runs first; ``metaspace`` is the HF ``Metaspace``
    pre-tokenizer spec (``split`` false) or None. ``byte_fallback``: unknown characters as byte
    tokens (else the unknown token, consecutive ones fused when ``fuse_unk``)."""

    def __init__(
        self,
        tokens,
        merges,
        special_tokens: dict[str, str] | None = None,
        *,
        normalizer: dict | None = None,
        metaspace: dict | None = None,
        byte_fallback: bool = True,
        fuse_unk: bool = True,
        **kwargs,
    ):
        super().__init__(tokens, merges, special_tokens, normalizer=normalizer, **kwargs)
        if metaspace is not None and (metaspace.get("split") or metaspace.get("replacement", SPACE) != SPACE):
            raise ValueError(f"Metaspace pre-tokenizer {metaspace} is not supported (split=false and ▁ only)")
        self.metaspace, self.byte_fallback, self.fuse_unk = metaspace, byte_fallback, fuse_unk
        self._fallback = [self._token_to_id.get(_byte_token(b)) for b in range(256)]
        self._from_byte_token = {self._token_to_id[_byte_token(b)]: b for b in range(256) if _byte_token(b) in self}

    def __contains__(self, token: str) -> bool:
        return token in self._token_to_id

    # ------------------------------------------------------------------ encoding
    def _encode_text(self, text: str) -> list[int]:
        """Special tokens kept whole; the text between them encoded (HF: only the segment at the
        start of the text gets Metaspace's ``prepend_scheme="first"`` space)."""
        ids: list[int] = []
        start = 0
        for m in self._special_re.finditer(text) if self._special_re is not None else ():
            if m.start() > start:
                ids += self._encode_segment(text[start : m.start()], first=start == 0)
            ids.append(self._token_to_id[m.group()])
            start = m.end()
        if start < len(text):
            ids += self._encode_segment(text[start:], first=start == 0)
        return ids

    def _encode_segment(self, text: str, *, first: bool) -> list[int]:
        if self._normalize is not None:
            text = self._normalize(text)
        if self.metaspace is not None and text:
            text = text.replace(" ", SPACE)
            scheme = self.metaspace.get("prepend_scheme", "always")
            if (scheme == "always" or (scheme == "first" and first)) and not text.startswith(SPACE):
                text = SPACE + text
        return self._word_ids(text) if text else []

    def _word_ids(self, word: str) -> list[int]:
        to_id, unk = self._token_to_id, self.unk_token_id
        symbols: list[int] = []
        for ch in word:
            i = to_id.get(ch)
            if i is not None:
                symbols.append(i)
            elif self.byte_fallback and all(self._fallback[b] is not None for b in ch.encode("utf-8")):
                symbols += [self._fallback[b] for b in ch.encode("utf-8")]  # type: ignore[misc]
            elif unk is None:
                raise ValueError(f"character {ch!r} is not in the vocabulary and there is no unknown token")
            elif not (self.fuse_unk and symbols and symbols[-1] == unk):
                symbols.append(unk)
        return self._bpe.apply(symbols)

    # ------------------------------------------------------------------ decoding
    def _decode_tokens(self, tokens: list[str]) -> str:
        out = bytearray()
        for t in tokens:
            i = self._token_to_id[t]
            if i in self._from_byte_token:
                out.append(self._from_byte_token[i])
            else:
                out += (t if i in self._special_id_set else t.replace(SPACE, " ")).encode("utf-8")
        text = out.decode("utf-8", errors="replace")
        return text[1:] if text.startswith(" ") else text

    # ------------------------------------------------------------------ save/load
    def _config(self) -> dict:
        return {
            "normalizer": self.normalizer,
            "metaspace": self.metaspace,
            "byte_fallback": self.byte_fallback,
            "fuse_unk": self.fuse_unk,
        }

    @classmethod
    def _from_folder(cls, folder: Path, config: dict) -> SentencePieceBPETokenizer:
        from .vocab_files import read_merges_txt, read_vocab_json

        return cls(
            read_vocab_json(folder / "vocab.json"),
            read_merges_txt(folder / "merges.txt"),
            normalizer=config.get("normalizer"),
            metaspace=config.get("metaspace"),
            byte_fallback=config.get("byte_fallback", True),
            fuse_unk=config.get("fuse_unk", True),
            **cls._kwargs_from_config(config),
        )

    def to_hf_json(self) -> dict:
        from .hf import hf_document

        model = {
            "type": "BPE",
            "dropout": None,
            "unk_token": self.special_tokens.get("unk"),
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": self.fuse_unk,
            "byte_fallback": self.byte_fallback,
            "ignore_merges": False,
            "vocab": self._token_to_id,
            "merges": [list(m) for m in self.merges],
        }
        decoder = {
            "type": "Sequence",
            "decoders": [
                {"type": "Replace", "pattern": {"String": SPACE}, "content": " "},
                {"type": "ByteFallback"},
                {"type": "Fuse"},
                {"type": "Strip", "content": " ", "start": 1, "stop": 0},
            ],
        }
        return hf_document(self, model, normalizer=self.normalizer, pre_tokenizer=self.metaspace, decoder=decoder)
