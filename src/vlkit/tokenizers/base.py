"""The common base of vlkit's tokenizers: input checks, special tokens, batching, save/load.

A subclass implements one algorithm. It fills ``self._id_to_token`` (a dense list: id -> token
string) and ``self._token_to_id`` and implements ``_encode_piece(text) -> list[int]`` for a piece
of text that holds no special token, ``_decode_tokens(tokens) -> str`` and the save hooks.
Everything else (``encode``, ``decode``, ``tokenize``, the batch call, ``save``/``load``) lives here.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import regex
import torch

ROLES = ("pad", "unk", "bos", "eos", "cls", "sep", "mask")
CONFIG_FILE = "vlkit_tokenizer.json"
FORMAT_VERSION = 1

# algorithm name -> Tokenizer subclass; filled by ``register_algorithm``.
ALGORITHMS: dict[str, type[Tokenizer]] = {}


@contextmanager
def files_named_in_errors(*paths: str | os.PathLike):
    """Re-raise a ValueError/KeyError/TypeError/AttributeError met while reading ``paths`` as one
    ValueError that names them (unless its message already names one of them)."""
    try:
        yield
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        text = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
        names = [os.fspath(p) for p in paths]
        if any(name in text for name in names):
            raise
        raise ValueError(f"{' + '.join(names)}: {text}") from e


def register_algorithm(name: str):
    def wrap(cls):
        cls.algorithm = name
        ALGORITHMS[name] = cls
        return cls

    return wrap


def check_text(text: Any) -> str:
    """``text`` as a str: str passes, UTF-8 bytes are decoded, anything else is refused."""
    if isinstance(text, str):
        return text
    if isinstance(text, (bytes, bytearray)):
        try:
            return bytes(text).decode("utf-8")
        except UnicodeDecodeError as e:
            raise ValueError(f"text bytes are not valid UTF-8 ({e}); decode them to str first") from None
    raise TypeError(f"text must be a str (or UTF-8 bytes), got {type(text).__name__}")


def utf8_bytes(text: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ValueError(f"text holds a lone surrogate that UTF-8 cannot encode ({e})") from None


CACHE_LIMIT = 100_000  # distinct pre-tokenized chunks kept per tokenizer


class Tokenizer:
    """Maps text to token ids and back.

    ``special_tokens`` maps roles (pad, unk, bos, eos, cls, sep, mask) to token strings; ``prefix``
    and ``suffix`` are the tokens the batch call (and ``encode(add_special_tokens=True)``) puts
    around every text, e.g. ``[CLS]`` ... ``[SEP]``. ``extra_special_tokens`` are further tokens
    that are matched whole in the raw text and never split.
    """

    algorithm = "base"
    data_files: tuple[str, ...] = ()  # the files ``save`` writes beside the config (named in load errors)
    default_padding = "longest"

    def __init__(
        self,
        tokens: Sequence[str],
        special_tokens: dict[str, str] | None = None,
        *,
        prefix: Sequence[str] = (),
        suffix: Sequence[str] = (),
        extra_special_tokens: Sequence[str] = (),
        context_length: int | None = None,
    ):
        self._id_to_token = list(tokens)
        self._token_to_id = {t: i for i, t in enumerate(self._id_to_token)}
        if len(self._token_to_id) != len(self._id_to_token):
            seen = set()
            dups = [t for t in self._id_to_token if t in seen or seen.add(t)]
            raise ValueError(f"vocabulary holds duplicate tokens: {dups[:5]!r}")
        special_tokens = dict(special_tokens or {})
        for role, tok in special_tokens.items():
            if role not in ROLES:
                raise ValueError(f"unknown special-token role {role!r}; expected one of {ROLES}")
            if tok not in self._token_to_id:
                raise ValueError(f"special token {tok!r} ({role}) is not in the vocabulary")
        self.special_tokens = special_tokens
        self.extra_special_tokens = [t for t in extra_special_tokens if t not in special_tokens.values()]
        for tok in self.extra_special_tokens:
            if tok not in self._token_to_id:
                raise ValueError(f"special token {tok!r} is not in the vocabulary")
        self.prefix = list(prefix)
        self.suffix = list(suffix)
        self._prefix_ids = [self._require_id(t) for t in self.prefix]
        self._suffix_ids = [self._require_id(t) for t in self.suffix]
        self.context_length = context_length
        specials = sorted(set(special_tokens.values()) | set(self.extra_special_tokens), key=lambda t: (-len(t), t))
        self.all_special_tokens = specials
        self.all_special_ids = sorted(self._token_to_id[t] for t in specials)
        self._special_id_set = frozenset(self.all_special_ids)
        self._special_re = regex.compile("|".join(regex.escape(t) for t in specials)) if specials else None

    # ----------------------------------------------------------------- vocabulary
    def _require_id(self, token: str) -> int:
        try:
            return self._token_to_id[token]
        except KeyError:
            raise ValueError(f"token {token!r} is not in the vocabulary") from None

    @property
    def vocab_size(self) -> int:
        return len(self._id_to_token)

    def __len__(self) -> int:
        return len(self._id_to_token)

    def get_vocab(self) -> dict[str, int]:
        return dict(self._token_to_id)

    def token_to_id(self, token: str) -> int | None:
        return self._token_to_id.get(token)

    def id_to_token(self, index: int) -> str:
        if not 0 <= index < len(self._id_to_token):
            raise ValueError(f"token id {index} is out of range for a vocabulary of {len(self._id_to_token)}")
        return self._id_to_token[index]

    def _role_id(self, role: str) -> int | None:
        tok = self.special_tokens.get(role)
        return None if tok is None else self._token_to_id[tok]

    pad_token_id = property(lambda self: self._role_id("pad"))
    unk_token_id = property(lambda self: self._role_id("unk"))
    bos_token_id = property(lambda self: self._role_id("bos"))
    eos_token_id = property(lambda self: self._role_id("eos"))
    cls_token_id = property(lambda self: self._role_id("cls"))
    sep_token_id = property(lambda self: self._role_id("sep"))
    mask_token_id = property(lambda self: self._role_id("mask"))
    eot_token_id = eos_token_id
    sot_token_id = bos_token_id

    # ------------------------------------------------------------------ encoding
    def _cached_ids(self, chunks: Iterable[str], chunk_ids) -> list[int]:
        """Ids of pre-tokenized chunks; each distinct chunk is encoded once by ``chunk_ids`` and
        kept in ``self._cache`` (cleared when it reaches ``CACHE_LIMIT`` entries)."""
        cache = self._cache
        ids: list[int] = []
        for chunk in chunks:
            r = cache.get(chunk)
            if r is None:
                r = chunk_ids(chunk)
                if len(cache) >= CACHE_LIMIT:
                    cache.clear()
                cache[chunk] = r
            ids += r
        return ids

    def _encode_piece(self, text: str) -> list[int]:
        raise NotImplementedError

    def _encode_text(self, text: str) -> list[int]:
        """Ids of ``text``: special tokens written in it are kept whole, the rest is encoded."""
        if self._special_re is None:
            return self._encode_piece(text)
        ids: list[int] = []
        start = 0
        for m in self._special_re.finditer(text):
            if m.start() > start:
                ids += self._encode_piece(text[start : m.start()])
            ids.append(self._token_to_id[m.group()])
            start = m.end()
        if start == 0:
            return self._encode_piece(text)
        if start < len(text):
            ids += self._encode_piece(text[start:])
        return ids

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        """Token ids of ``text``; with ``add_special_tokens`` the prefix/suffix tokens around it."""
        ids = self._encode_text(check_text(text))
        if add_special_tokens:
            return self._prefix_ids + ids + self._suffix_ids
        return ids

    def encode_batch(self, texts: Iterable[str], add_special_tokens: bool = False) -> list[list[int]]:
        return [self.encode(t, add_special_tokens) for t in texts]

    def tokenize(self, text: str) -> list[str]:
        """The token strings of ``encode(text)``."""
        itos = self._id_to_token
        return [itos[i] for i in self.encode(text)]

    # ------------------------------------------------------------------ decoding
    def _decode_tokens(self, tokens: list[str]) -> str:
        raise NotImplementedError

    def _check_ids(self, ids: Any) -> list[int]:
        if isinstance(ids, torch.Tensor):
            if ids.dim() != 1:
                raise ValueError(f"decode takes a 1-D sequence of ids, got a tensor of shape {tuple(ids.shape)}")
            ids = ids.tolist()
        elif isinstance(ids, np.ndarray):
            if ids.ndim != 1:
                raise ValueError(f"decode takes a 1-D sequence of ids, got an array of shape {ids.shape}")
            ids = ids.tolist()
        elif isinstance(ids, (str, bytes)) or not isinstance(ids, Iterable):
            raise TypeError(f"ids must be a sequence of ints, got {type(ids).__name__}")
        out = []
        n = len(self._id_to_token)
        for i in ids:
            if isinstance(i, (bool, float)) or not isinstance(i, (int, np.integer)):
                raise TypeError(f"token ids must be ints, got {type(i).__name__} ({i!r})")
            if not 0 <= i < n:
                raise ValueError(f"token id {i} is out of range for a vocabulary of {n}")
            out.append(int(i))
        return out

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = False) -> str:
        """The text of ``ids`` (a list, 1-D tensor or array)."""
        ids = self._check_ids(ids)
        if skip_special_tokens:
            ids = [i for i in ids if i not in self._special_id_set]
        itos = self._id_to_token
        return self._decode_tokens([itos[i] for i in ids])

    def batch_decode(self, batch, skip_special_tokens: bool = False) -> list[str]:
        if isinstance(batch, torch.Tensor):
            batch = batch.tolist()
        return [self.decode(ids, skip_special_tokens) for ids in batch]

    # ---------------------------------------------------------------- batch call
    def __call__(
        self,
        texts: str | Sequence[str],
        context_length: int | None = None,
        padding: bool | str | None = None,
        truncation: bool | None = None,
        add_special_tokens: bool = True,
    ) -> dict[str, torch.Tensor]:
        """Encode a batch into ``input_ids`` and ``attention_mask`` LongTensors of shape (B, T).

        ``context_length`` defaults to the tokenizer's (77 for CLIP, none for the others).
        ``padding``: "longest" (or True) pads to the longest sequence, "max_length" to
        ``context_length``, False requires equal lengths. ``truncation`` (default: on whenever a
        context length is known) cuts the text, never the prefix/suffix special tokens, so a
        truncated CLIP sequence still ends with its end token.
        """
        if isinstance(texts, (str, bytes, bytearray)):
            texts = [texts]
        elif not isinstance(texts, (list, tuple)):
            raise TypeError(f"texts must be a str or a list of str, got {type(texts).__name__}")
        length = context_length if context_length is not None else self.context_length
        padding = self.default_padding if padding is None else padding
        if padding is True:
            padding = "longest"
        if padding not in ("longest", "max_length", False, "do_not_pad"):
            raise ValueError(f"padding must be 'longest', 'max_length', True or False, got {padding!r}")
        truncation = (length is not None) if truncation is None else truncation
        if length is not None and length < 1:
            raise ValueError(f"context_length must be positive, got {length}")
        pre, suf = (self._prefix_ids, self._suffix_ids) if add_special_tokens else ([], [])
        seqs = [self._encode_text(check_text(t)) for t in texts]
        if truncation and length is not None:
            room = length - len(pre) - len(suf)
            if room < 0:
                raise ValueError(f"context_length {length} leaves no room for the {len(pre) + len(suf)} special tokens")
            seqs = [s[:room] if len(s) > room else s for s in seqs]
        seqs = [pre + s + suf for s in seqs] if (pre or suf) else seqs
        lengths = [len(s) for s in seqs]
        longest = max(lengths, default=0)
        if padding == "max_length":
            if length is None:
                raise ValueError("padding='max_length' needs a context_length")
            if longest > length:
                i = lengths.index(longest)
                raise ValueError(
                    f"text {i} has {longest} tokens, more than context_length {length}; pass truncation=True"
                )
            width = length
        elif padding == "longest":
            width = longest
        else:
            if len(set(lengths)) > 1:
                raise ValueError("texts encode to different lengths; pass padding='longest' or 'max_length'")
            width = longest
        pad = self.padding_id
        ids = np.full((len(seqs), width), pad, dtype=np.int64)
        mask = np.zeros((len(seqs), width), dtype=np.int64)
        for i, s in enumerate(seqs):
            n = len(s)
            ids[i, :n] = s
            mask[i, :n] = 1
        return {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask)}

    @property
    def padding_id(self) -> int:
        """The id written into padded positions: the pad token, else the end token, else 0."""
        for role in ("pad", "eos"):
            i = self._role_id(role)
            if i is not None:
                return i
        return 0

    # ------------------------------------------------------------------ save/load
    def _config(self) -> dict:
        """Algorithm-specific settings stored in ``vlkit_tokenizer.json``."""
        return {}

    def _save_data(self, folder: Path) -> None:
        raise NotImplementedError

    def to_hf_json(self) -> dict:
        """This tokenizer as an HF ``tokenizer.json`` document."""
        raise NotImplementedError

    @classmethod
    def _from_folder(cls, folder: Path, config: dict) -> Tokenizer:
        raise NotImplementedError

    def save(self, folder: str | os.PathLike) -> Path:
        """Write ``vlkit_tokenizer.json`` + vocabulary files, and ``tokenizer.json`` for HF tools."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        config = {
            "format": "vlkit-tokenizer",
            "version": FORMAT_VERSION,
            "algorithm": self.algorithm,
            "special_tokens": self.special_tokens,
            "extra_special_tokens": self.extra_special_tokens,
            "prefix": self.prefix,
            "suffix": self.suffix,
            "context_length": self.context_length,
            **self._config(),
        }
        self._save_data(folder)
        (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        (folder / "tokenizer.json").write_text(json.dumps(self.to_hf_json(), ensure_ascii=False), encoding="utf-8")
        return folder

    @staticmethod
    def load(folder: str | os.PathLike) -> Tokenizer:
        """Load a folder written by ``save``."""
        folder = Path(folder)
        path = folder / CONFIG_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{folder} is not a vlkit tokenizer folder (no {CONFIG_FILE})")
        try:
            config = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"{path} is not valid UTF-8 JSON: {e}") from None
        if not isinstance(config, dict) or config.get("format") != "vlkit-tokenizer":
            found = config.get("format") if isinstance(config, dict) else type(config).__name__
            raise ValueError(f"{path} is not a vlkit tokenizer config (format={found!r})")
        algorithm = config.get("algorithm")
        if algorithm not in ALGORITHMS:
            raise ValueError(f"{path}: unknown tokenizer algorithm {algorithm!r}; expected one of {sorted(ALGORITHMS)}")
        cls = ALGORITHMS[algorithm]
        with files_named_in_errors(path, *(folder / name for name in cls.data_files)):
            return cls._from_folder(folder, config)

    def _common_kwargs(self) -> dict:
        return dict(
            special_tokens=self.special_tokens,
            prefix=self.prefix,
            suffix=self.suffix,
            extra_special_tokens=self.extra_special_tokens,
            context_length=self.context_length,
        )

    @staticmethod
    def _kwargs_from_config(config: dict) -> dict:
        return dict(
            special_tokens=config.get("special_tokens") or {},
            prefix=config.get("prefix") or [],
            suffix=config.get("suffix") or [],
            extra_special_tokens=config.get("extra_special_tokens") or [],
            context_length=config.get("context_length"),
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(vocab_size={self.vocab_size}, special_tokens={self.special_tokens})"
