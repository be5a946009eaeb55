"""``get_tokenizer(source)``: a registered name, a vlkit or HF folder, or a standard file."""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

from ..files import read_json_object
from ..registration import register_in
from .base import CONFIG_FILE, Tokenizer, files_named_in_errors
from .bpe import BPETokenizer
from .clip import END_OF_WORD, CLIPTokenizer, read_clip_bpe_file
from .hf import _roles_from_files, tokenizer_from_hf_json
from .vocab_files import read_merges_txt, read_vocab_json, read_vocab_txt
from .wordpiece import WordPieceTokenizer

DATA = Path(__file__).parent / "data"
CLIP_BPE_FILE = DATA / "bpe_simple_vocab_16e6.txt.gz"
BERT_UNCASED_VOCAB = DATA / "bert-base-uncased-vocab.txt"
SENTENCEPIECE_FILE = "spiece.model"  # SigLIP's and T5's tokenizer, which vlkit does not read

_REGISTRY: dict[str, Callable[..., Tokenizer]] = {}


def register_tokenizer(name: str) -> Callable:
    """Register ``factory(**kwargs) -> Tokenizer`` under ``name`` for ``get_tokenizer``."""
    return register_in(_REGISTRY, name, "tokenizer name")


def list_tokenizers() -> list[str]:
    return sorted(_REGISTRY)


@lru_cache(maxsize=4)
def _clip_data(path: str) -> tuple[tuple[str, ...], tuple[tuple[str, str], ...]]:
    tokens, merges = read_clip_bpe_file(path)
    return tuple(tokens), tuple(merges)


@lru_cache(maxsize=4)
def _vocab_txt(path: str) -> tuple[str, ...]:
    return tuple(read_vocab_txt(Path(path)))


def _clip_from_bpe_file(path: Path, **kwargs) -> CLIPTokenizer:
    tokens, merges = _clip_data(str(path))
    return CLIPTokenizer([*tokens, "<start_of_text>", "<end_of_text>"], merges, **kwargs)


@register_tokenizer("clip")
def _clip(**kwargs) -> CLIPTokenizer:
    """OpenAI CLIP's BPE (49408 tokens, context length 77), ids as ``open_clip.tokenize``."""
    return _clip_from_bpe_file(CLIP_BPE_FILE, **kwargs)


@register_tokenizer("bert-base-uncased")
def _bert_base_uncased(**kwargs) -> WordPieceTokenizer:
    """bert-base-uncased's WordPiece (30522 tokens, lowercased, accents stripped, at most 512)."""
    kwargs.setdefault("context_length", 512)
    return WordPieceTokenizer(_vocab_txt(str(BERT_UNCASED_VOCAB)), lowercase=True, **kwargs)


def _hf_config(folder: Path) -> dict:
    path = folder / "tokenizer_config.json"
    return read_json_object(path, "an HF tokenizer config") if path.is_file() else {}


def _max_length(config: dict) -> int | None:
    n = config.get("model_max_length")
    return n if isinstance(n, int) and 0 < n < 1_000_000 else None


def _wordpiece_from_vocab_txt(path: Path, **kwargs) -> WordPieceTokenizer:
    config = _hf_config(path.parent)
    roles = _roles_from_files(path.parent) or None
    kwargs.setdefault("context_length", _max_length(config))
    with files_named_in_errors(path):
        return _wordpiece(path, config, roles, **kwargs)


def _wordpiece(path: Path, config: dict, roles: dict | None, **kwargs) -> WordPieceTokenizer:
    return WordPieceTokenizer(
        read_vocab_txt(path),
        roles,
        lowercase=config.get("do_lower_case", True),
        strip_accents=config.get("strip_accents"),
        handle_chinese_chars=config.get("tokenize_chinese_chars", True),
        **kwargs,
    )


def _bpe_from_vocab_merges(vocab_path: Path, merges_path: Path, **kwargs) -> Tokenizer:
    with files_named_in_errors(vocab_path, merges_path):
        return _bpe(vocab_path, merges_path, **kwargs)


def _bpe(vocab_path: Path, merges_path: Path, **kwargs) -> Tokenizer:
    tokens = read_vocab_json(vocab_path)
    merges = read_merges_txt(merges_path)
    folder = vocab_path.parent
    roles = _roles_from_files(folder)
    if any(t.endswith(END_OF_WORD) for t in tokens[:1024]):  # CLIP's layout (HF's CLIP folders)
        bos = roles.get("bos", "<|startoftext|>")
        eos = roles.get("eos", "<|endoftext|>")
        pad = roles.get("pad")
        return CLIPTokenizer(
            tokens,
            merges,
            {"bos": bos, "eos": eos},
            clean="whitespace_lower",
            pad_id=tokens.index(pad) if pad in tokens else 0,
            **kwargs,
        )
    if not roles and "<|endoftext|>" in tokens:
        roles = {"bos": "<|endoftext|>", "eos": "<|endoftext|>"}
    roles = {r: t for r, t in roles.items() if t in tokens}
    kwargs.setdefault("context_length", _max_length(_hf_config(folder)))
    return BPETokenizer(
        tokens, merges, roles, add_prefix_space=bool(_hf_config(folder).get("add_prefix_space")), **kwargs
    )


def _from_folder(folder: Path, **kwargs) -> Tokenizer:
    if (folder / CONFIG_FILE).is_file():
        tok = Tokenizer.load(folder)
        if kwargs.get("context_length") is not None:
            tok.context_length = kwargs["context_length"]
        return tok
    if (folder / "tokenizer.json").is_file():
        kwargs.setdefault("context_length", _max_length(_hf_config(folder)))
        return tokenizer_from_hf_json(folder / "tokenizer.json", **kwargs)
    if (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file():
        return _bpe_from_vocab_merges(folder / "vocab.json", folder / "merges.txt", **kwargs)
    if (folder / "vocab.txt").is_file():
        return _wordpiece_from_vocab_txt(folder / "vocab.txt", **kwargs)
    gz = sorted(folder.glob("bpe_simple_vocab*.txt.gz"))
    if gz:
        return _clip_from_bpe_file(gz[0], **kwargs)
    if (folder / SENTENCEPIECE_FILE).is_file():
        raise ValueError(
            f"{folder / SENTENCEPIECE_FILE} is a SentencePiece tokenizer (SigLIP, T5, Gemma), which vlkit cannot "
            "read; tokenize with transformers (SiglipTokenizer, which needs the sentencepiece package) and pass "
            "the input_ids, padded to the model's context length"
        )
    raise ValueError(
        f"{folder} holds no tokenizer: expected {CONFIG_FILE}, tokenizer.json, vocab.json + merges.txt, "
        "vocab.txt or bpe_simple_vocab_16e6.txt.gz"
    )


def _from_file(path: Path, **kwargs) -> Tokenizer:
    name = path.name
    if name == CONFIG_FILE:
        return _from_folder(path.parent, **kwargs)
    if name.endswith(".txt.gz"):
        return _clip_from_bpe_file(path, **kwargs)
    if name == "vocab.json" or (
        name.endswith(".json") and (path.parent / "merges.txt").is_file() and name != "tokenizer.json"
    ):
        merges = path.parent / "merges.txt"
        if not merges.is_file():
            raise FileNotFoundError(f"{path} needs merges.txt beside it ({merges} does not exist)")
        return _bpe_from_vocab_merges(path, merges, **kwargs)
    if name.endswith(".json"):
        return tokenizer_from_hf_json(path, **kwargs)
    if name.endswith(".txt") and name != "merges.txt":
        return _wordpiece_from_vocab_txt(path, **kwargs)
    raise ValueError(
        f"{path} is not a tokenizer file vlkit reads: expected tokenizer.json, vocab.txt, vocab.json "
        "(with merges.txt) or bpe_simple_vocab_16e6.txt.gz"
    )


def get_tokenizer(source: str | os.PathLike | Tokenizer, **kwargs) -> Tokenizer:
    """The tokenizer for ``source``: a registered name (see ``list_tokenizers()``: "clip",
    "bert-base-uncased"), a folder (vlkit's, or HF's with tokenizer.json, vocab.json + merges.txt
    or vocab.txt) or one file (tokenizer.json, vocab.txt, bpe_simple_vocab_16e6.txt.gz, vocab.json).
    ``kwargs`` (e.g. ``context_length``) go to the tokenizer."""
    if isinstance(source, Tokenizer):
        return source
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"tokenizer source must be a name or a path, got {type(source).__name__}")
    name = os.fspath(source)
    if name in _REGISTRY:
        return _REGISTRY[name](**kwargs)
    path = Path(name).expanduser()
    if path.is_dir():
        return _from_folder(path, **kwargs)
    if path.is_file():
        return _from_file(path, **kwargs)
    raise FileNotFoundError(
        f"no tokenizer {name!r}: it is neither a registered name ({', '.join(list_tokenizers())}) "
        "nor an existing file or folder"
    )
