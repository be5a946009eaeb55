"""CLIP's text clean-up without ftfy.

open_clip cleans a caption with ``ftfy.fix_text``, two rounds of ``html.unescape``, whitespace
collapsing and lowercasing. ``clip_clean`` reproduces that: it runs ftfy's default fixers in ftfy's
order (HTML entities unless the line holds '<', C1 controls read as Windows-1252, Latin
ligatures, full/half-width forms, curly quotes, line breaks, surrogates, terminal escapes, control
characters, NFC), line by line and repeated until nothing changes, as ftfy does. The one ftfy
fixer left out is mojibake repair (``fix_encoding``: guessing that text was decoded with the wrong
codec and re-decoding it), a statistical heuristic that is a no-op on correctly decoded text.
Plain printable ASCII without '&' skips all of it (the common case for captions).
"""

from __future__ import annotations

import html
import html.entities
import itertools
import unicodedata

import regex

# Anything but printable ASCII and ordinary whitespace, or an '&': text without these needs no fixing.
_NEEDS_FIX = regex.compile(r"[^\t\n\x0c\x20-\x25\x27-\x7e]")


def _html_entities() -> dict[str, str]:
    """HTML5 entities ending in ';', plus all-caps forms of the lowercase ones (ftfy's table)."""
    out = {}
    for name, char in html.entities.html5.items():
        if name.endswith(";"):
            out["&" + name] = char
            if name == name.lower():
                upper = "&" + name.upper()
                if html.unescape(upper) == upper:
                    out[upper] = char.upper()
    return out


_ENTITIES = _html_entities()
_ENTITY_RE = regex.compile(r"&#?[0-9A-Za-z]{1,24};")


def _unescape_entity(m: regex.Match) -> str:
    text = m.group(0)
    if text in _ENTITIES:
        return _ENTITIES[text]
    if text.startswith("&#"):
        out = html.unescape(text)
        return text if ";" in out else out
    return text


def _c1_char(m: regex.Match) -> str:
    """A C1 control character read as the Windows-1252 character of the same byte; the five
    bytes Windows-1252 leaves undefined stay as they are."""
    try:
        return bytes([ord(m.group(0))]).decode("cp1252")
    except UnicodeDecodeError:
        return m.group(0)


_C1_RE = regex.compile(r"[\x80-\x9f]")
_LIGATURES = {
    ord(k): v
    for k, v in {
        "Ĳ": "IJ", "ĳ": "ij", "ŉ": "ʼn", "Ǳ": "DZ", "ǲ": "Dz", "ǳ": "dz", "Ǆ": "DŽ", "ǅ": "Dž", "ǆ": "dž",
        "Ǉ": "LJ", "ǈ": "Lj", "ǉ": "lj", "Ǌ": "NJ", "ǋ": "Nj", "ǌ": "nj",
        "ﬀ": "ff", "ﬁ": "fi", "ﬂ": "fl", "ﬃ": "ffi", "ﬄ": "ffl", "ﬅ": "ſt", "ﬆ": "st",
    }.items()
}  # fmt: skip


def _width_map() -> dict[int, str]:
    """Full- and half-width forms (U+FF01-U+FFEF) to their NFKC form; U+3000 to a space."""
    out = {0x3000: " "}
    for i in range(0xFF01, 0xFFF0):
        alt = unicodedata.normalize("NFKC", chr(i))
        if alt != chr(i):
            out[i] = alt
    return out


_WIDTH = _width_map()
_SINGLE_QUOTE = regex.compile("[\u02bc\u2018-\u201b]")
_DOUBLE_QUOTE = regex.compile("[\u201c-\u201f]")
_SURROGATE = regex.compile("[\ud800-\udfff]")
_SURROGATE_PAIR = regex.compile("[\ud800-\udbff][\udc00-\udfff]")
_ANSI = regex.compile("\x1b\\[((?:\\d|;)*)([a-zA-Z])")
_CONTROL = {
    i: None
    for i in itertools.chain(
        range(0x00, 0x09), [0x0B], range(0x0E, 0x20), [0x7F], range(0x206A, 0x2070), [0xFEFF], range(0xFFF9, 0xFFFD)
    )
}


def _pair_to_char(m: regex.Match) -> str:
    hi, lo = m.group(0)
    return chr(0x10000 + (ord(hi) - 0xD800) * 0x400 + (ord(lo) - 0xDC00))


def _fix_segment(text: str, unescape: bool) -> str:
    while True:
        orig = text
        if unescape and "&" in text:
            text = _ENTITY_RE.sub(_unescape_entity, text)
        text = _C1_RE.sub(_c1_char, text)
        text = text.translate(_LIGATURES).translate(_WIDTH)
        text = _SINGLE_QUOTE.sub("'", _DOUBLE_QUOTE.sub('"', text))
        text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\u2028", "\n").replace("\u2029", "\n")
        text = text.replace("\x85", "\n")
        if _SURROGATE.search(text):
            text = _SURROGATE.sub("\ufffd", _SURROGATE_PAIR.sub(_pair_to_char, text))
        if "\x1b" in text:
            text = _ANSI.sub("", text)
        text = unicodedata.normalize("NFC", text.translate(_CONTROL))
        if text == orig:
            return text


def fix_text(text: str) -> str:
    """ftfy's ``fix_text`` with its default settings, minus mojibake repair (see module doc)."""
    if _NEEDS_FIX.search(text) is None:
        return text
    out = []
    unescape = True
    pos = 0
    while pos < len(text):
        end = text.find("\n", pos) + 1 or len(text)
        segment = text[pos:end]
        if "<" in segment:  # ftfy's "auto" HTML mode: off from the first line that looks like markup
            unescape = False
        out.append(_fix_segment(segment, unescape))
        pos = end
    return "".join(out)


def clip_chunks(text: str) -> list[str]:
    """The whitespace-separated chunks of ``clip_clean(text)``, lowercased."""
    if _NEEDS_FIX.search(text) is not None:
        text = html.unescape(html.unescape(fix_text(text)))
    return text.lower().split()


def clip_clean(text: str) -> str:
    """open_clip's default ('lower') clean-up: fix the text, unescape HTML twice, collapse
    whitespace, lowercase."""
    return " ".join(clip_chunks(text))
