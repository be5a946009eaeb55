"""Reading and writing the standard vocabulary files: ``vocab.json``, ``merges.txt``, ``vocab.txt``."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path


def _read_text(path: Path) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(f"vocabulary file {path} does not exist") from None
    except UnicodeDecodeError as e:
        raise ValueError(f"{path} is not UTF-8 text: {e}") from None


def read_merges_txt(path: Path) -> list[tuple[str, str]]:
    """``merges.txt``: an optional ``#version`` line, then one ``a b`` merge per line, by rank."""
    merges = []
    for n, line in enumerate(_read_text(path).split("\n"), 1):
        if not line or (n == 1 and line.startswith("#version")):
            continue
        parts = line.split(" ")
        if len(parts) != 2:
            raise ValueError(f"{path}:{n}: a merge line must hold two tokens, got {line!r}")
        merges.append((parts[0], parts[1]))
    return merges


def write_merges_txt(path: Path, merges: Sequence[tuple[str, str]]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n")
        for a, b in merges:
            f.write(f"{a} {b}\n")


def merges_to_ids(
    merges: Sequence[tuple[str, str]], token_to_id: dict[str, int], where: str, strip_prefix: str = ""
) -> list[tuple[int, int, int]]:
    """Merges of token strings as (a, b, ab) id triples; the merged token must be in the vocabulary."""
    out = []
    for a, b in merges:
        merged = a + (b[len(strip_prefix) :] if strip_prefix and b.startswith(strip_prefix) else b)
        try:
            out.append((token_to_id[a], token_to_id[b], token_to_id[merged]))
        except KeyError as e:
            raise ValueError(
                f"{where}: merge ({a!r}, {b!r}) uses token {e.args[0]!r} missing from the vocabulary"
            ) from None
    return out


def tokens_in_id_order(vocab: dict[str, int], where: str) -> list[str]:
    """A token -> id map with ids 0..n-1 as the list of tokens in id order."""
    tokens: list[str | None] = [None] * len(vocab)
    for tok, i in vocab.items():
        if not isinstance(i, int) or not 0 <= i < len(vocab) or tokens[i] is not None:
            raise ValueError(f"{where}: token ids must be 0..{len(vocab) - 1}, each once (bad id {i!r} for {tok!r})")
        tokens[i] = tok
    return tokens  # type: ignore[return-value]


def read_vocab_json(path: Path) -> list[str]:
    """``vocab.json`` (token -> id) as the list of tokens in id order."""
    try:
        vocab = json.loads(_read_text(path))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(vocab, dict):
        raise ValueError(f"{path} must map tokens to ids")
    return tokens_in_id_order(vocab, str(path))


def write_vocab_json(path: Path, tokens: Sequence[str]) -> None:
    Path(path).write_text(json.dumps({t: i for i, t in enumerate(tokens)}, ensure_ascii=False), encoding="utf-8")


def read_vocab_txt(path: Path) -> list[str]:
    """BERT's ``vocab.txt``: one token per line, the line number is the id."""
    text = _read_text(path)
    if text.endswith("\n"):
        text = text[:-1]
    tokens = [t.rstrip("\r") for t in text.split("\n")] if text else []
    if not tokens:
        raise ValueError(f"{path} holds no tokens")
    return tokens


def write_vocab_txt(path: Path, tokens: Sequence[str]) -> None:
    bad = [t for t in tokens if "\n" in t or "\r" in t]
    if bad:
        raise ValueError(f"tokens with line breaks cannot be written to vocab.txt: {bad[:3]!r}")
    Path(path).write_text("".join(t + "\n" for t in tokens), encoding="utf-8")


# The files a tokenizer folder may hold: vlkit's own, HF's (transformers and tokenizers) and the
# vocabulary files both read.
TOKENIZER_FILES = (
    "vlkit_tokenizer.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "vocab.txt",
)


def tokenizer_files(folder: Path) -> list[Path]:
    """The tokenizer files in ``folder`` (empty when it holds no tokenizer)."""
    folder = Path(folder)
    found = [folder / name for name in TOKENIZER_FILES if (folder / name).is_file()]
    names = {p.name for p in found}
    complete = names & {"vlkit_tokenizer.json", "tokenizer.json", "vocab.txt"} or {"vocab.json", "merges.txt"} <= names
    return found if complete else []
