"""The text normalizers an HF ``tokenizer.json`` may name, as plain functions.

vlkit stores a normalizer as the HF JSON spec it came from (so a saved tokenizer round-trips) and
builds a ``str -> str`` function from it. Supported: NFC, NFD, NFKC, NFKD, Lowercase, StripAccents,
Strip, Replace (string or regex), Prepend and Sequence of those.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable

import regex

Normalizer = Callable[[str], str]

_MN = regex.compile(r"\p{Mn}+")


def lowercase(text: str) -> str:
    """Lowercase character by character (as Rust's ``char::to_lowercase``, which HF uses):
    Python's ``str.lower`` alone would turn a word-final capital sigma into the final form."""
    if "\u03a3" in text:
        text = text.replace("\u03a3", "\u03c3")
    return text.lower()


def strip_accents(text: str) -> str:
    """NFD, then drop the non-spacing marks (category Mn)."""
    return _MN.sub("", unicodedata.normalize("NFD", text))


def _pattern_of(spec: dict, where: str) -> regex.Pattern:
    pattern = spec.get("pattern") or {}
    if "Regex" in pattern:
        return regex.compile(pattern["Regex"])
    if "String" in pattern:
        return regex.compile(regex.escape(pattern["String"]))
    raise ValueError(f"{where}: pattern must be {{'Regex': ...}} or {{'String': ...}}, got {pattern!r}")


def build_normalizer(spec: dict | None, where: str = "tokenizer.json") -> Normalizer | None:
    """A function for the normalizer ``spec`` (HF JSON form), or None for no normalizer."""
    if spec is None:
        return None
    kind = spec.get("type")
    if kind in ("NFC", "NFD", "NFKC", "NFKD"):
        return lambda s, form=kind: unicodedata.normalize(form, s)
    if kind == "Lowercase":
        return lowercase
    if kind == "StripAccents":
        return strip_accents
    if kind == "Strip":
        left, right = spec.get("strip_left", True), spec.get("strip_right", True)
        return lambda s: (
            s.lstrip() if left and not right else s.rstrip() if right and not left else s.strip() if left else s
        )
    if kind == "Prepend":
        prepend = spec["prepend"]
        return lambda s: prepend + s if s else s
    if kind == "Replace":
        pat = _pattern_of(spec, where)
        content = spec.get("content", "")
        return lambda s: pat.sub(lambda m: content, s)
    if kind == "Sequence":
        steps = [build_normalizer(s, where) for s in spec.get("normalizers", [])]
        steps = [s for s in steps if s is not None]

        def run(s: str) -> str:
            for step in steps:
                s = step(s)
            return s

        return run
    raise ValueError(f"{where}: normalizer {kind!r} is not supported by vlkit")
