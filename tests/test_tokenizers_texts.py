"""Shared texts for the tokenizer tests (imported by the other test_tokenizers_* files), and the
checks that they cover what the parity tests claim to cover."""

import inspect
import json
import string
import textwrap

# Real text of several languages and kinds: English, Chinese, Japanese, Korean, accented Latin,
# Greek, Cyrillic, Arabic, Hindi, emoji (with modifiers and ZWJ sequences), code, numbers, odd
# whitespace and control characters, HTML entities, curly quotes and ligatures.
TEXTS = [
    "a photo of a cat",
    "A photo of a dog sitting on a red couch next to the window.",
    "Two people riding bicycles down a busy street in Amsterdam at sunset!",
    "It's a man's world, isn't it? We'll see; they'd've known. I'M SHOUTING.",
    "一只猫坐在沙发上，旁边有一只狗。",
    "東京タワーの夜景はとても綺麗です。",
    "서울의 밤거리는 매우 아름답습니다.",
    "Café naïve résumé Ångström Øresund Dvořák façade jalapeño Straße",
    "Ελληνικά κείμενα: ΟΔΟΣ, οδός, Σίσυφος.",
    "Привет, мир! Съешь же ещё этих мягких французских булок.",
    "مرحبا بالعالم، هذه صورة قطة.",
    "नमस्ते दुनिया, यह एक बिल्ली की तस्वीर है।",
    "🐱🚀 emoji 👍🏽 test 👨‍👩‍👧‍👦 family 🇫🇷 flag ❤️",
    "def f(x):\n    return x**2  # square\n\tif x != 0: print(f'{x=}')",
    "for (int i = 0; i < n; ++i) { sum += a[i] * b[i]; } // C++ & Rust: fn main() -> i32 {}",
    "Numbers: 3.14159, 1,000,000, 2024-06-01, 42nd, 0x1F, 1e-9, ½ ² ³",
    "odd\t\twhitespace\u00a0here\u3000and\u2028there\r\nand  double  spaces   ",
    "   leading and trailing spaces   ",
    "“Curly” ‘quotes’ — ﬁne ﬂour ＦＵＬＬＷＩＤＴＨ ｈａｌｆ ｶﾀｶﾅ",
    "&amp; &lt;b&gt;bold&lt;/b&gt; &quot;quoted&quot; &#39;apos&#39; &eacute;",
    "<b>markup</b> &amp; more",
    "control\x00chars\x07 and \x1b[31mred\x1b[0m and \x1c\x1d separators\x7f",
    "URL: https://example.com/path?q=1&r=2#frag, email: someone@example.org",
    "supercalifragilisticexpialidocious antidisestablishmentarianism",
    "x" * 120,
    "",
    "   ",
]

LANGUAGE_SAMPLES = {
    "english": TEXTS[1],
    "chinese": TEXTS[4],
    "accented": TEXTS[7],
    "emoji": TEXTS[12],
    "code": TEXTS[13],
    "odd_whitespace": TEXTS[16],
}


def training_corpus() -> list[str]:
    """A deterministic corpus of about 150 KB: source and docs of a few stdlib modules (English
    prose and code) plus the multilingual texts, as lines (line breaks kept)."""
    parts = [inspect.getsource(m) for m in (json.decoder, json.encoder, string, textwrap, inspect)]
    parts += [t + "\n" for t in TEXTS] * 3
    return "".join(parts).splitlines(keepends=True)


def test_texts_cover_the_claimed_kinds():
    joined = "".join(TEXTS)
    assert any("\u4e00" <= c <= "\u9fff" for c in joined)  # CJK ideographs
    assert any(ord(c) >= 0x1F300 for c in joined)  # emoji
    assert any(c in "\t\u00a0\u3000\u2028" for c in joined)  # odd whitespace
    assert any(ord(c) < 32 and c not in "\t\n\r" for c in joined)  # control characters
    assert 100_000 < sum(map(len, training_corpus())) < 400_000
