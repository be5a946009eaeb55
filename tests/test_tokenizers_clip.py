"""CLIP BPE: same ids as open_clip's tokenizer on the real vocabulary."""

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from open_clip import tokenizer as open_clip_tokenizer

from test_tokenizers_texts import LANGUAGE_SAMPLES, TEXTS
from vlkit.tokenizers import CLIPTokenizer, get_tokenizer
from vlkit.tokenizers.clip_clean import clip_clean, fix_text


@pytest.fixture(scope="module")
def tok():
    return get_tokenizer("clip")


@pytest.fixture(scope="module")
def ref():
    return open_clip_tokenizer.SimpleTokenizer()


def test_known_ids(tok):
    # open_clip.tokenize("a photo of a cat")[0, :7]
    assert tok.encode("a photo of a cat") == [320, 1125, 539, 320, 2368]
    assert tok.tokenize("a photo of a cat") == ["a</w>", "photo</w>", "of</w>", "a</w>", "cat</w>"]
    assert tok.vocab_size == 49408
    assert (tok.bos_token_id, tok.eos_token_id, tok.sot_token_id, tok.eot_token_id) == (49406, 49407, 49406, 49407)
    assert tok.pad_token_id == 0 and tok.context_length == 77


@pytest.mark.parametrize("text", TEXTS, ids=range(len(TEXTS)))
def test_encode_matches_open_clip(tok, ref, text):
    assert tok.encode(text) == ref.encode(text)


@pytest.mark.parametrize("kind", sorted(LANGUAGE_SAMPLES))
def test_decode_matches_open_clip(tok, ref, kind):
    ids = ref.encode(LANGUAGE_SAMPLES[kind])
    assert tok.decode(ids) == ref.decode(ids)


def test_batch_matches_open_clip_tokenize(tok, ref):
    long_text = " ".join(["a very long caption about many things"] * 30)
    texts = TEXTS + [long_text]
    batch = tok(texts)
    expected = ref(texts)  # open_clip: (B, 77), zero padded, truncated text ends with the end token
    assert batch["input_ids"].dtype == torch.long and batch["attention_mask"].dtype == torch.long
    assert torch.equal(batch["input_ids"], expected)
    lengths = [min(len(ref.encode(t)) + 2, 77) for t in texts]
    assert batch["attention_mask"].sum(1).tolist() == lengths
    assert batch["input_ids"][-1, -1].item() == tok.eot_token_id  # truncation kept the end token
    assert torch.equal(tok(texts, context_length=16)["input_ids"], ref(texts, context_length=16))


def test_single_string_and_padding_longest(tok, ref):
    assert torch.equal(tok("a photo of a cat")["input_ids"], ref("a photo of a cat"))
    out = tok(["a cat", "a photo of a dog"], padding="longest")
    assert torch.equal(out["input_ids"], ref(["a cat", "a photo of a dog"])[:, :7])
    assert out["attention_mask"].tolist() == [[1, 1, 1, 1, 0, 0, 0], [1] * 7]


def test_special_token_text_is_kept_whole(tok, ref):
    text = "<start_of_text>Hello <END_OF_TEXT> world"
    assert tok.encode(text) == ref.encode(text)
    assert tok.encode(text)[0] == tok.sot_token_id


def test_clean_up_without_ftfy():
    # What ftfy + html.unescape + whitespace collapsing + lowercasing give (checked in the parity tests).
    assert clip_clean("  “Curly”\t‘quotes’  ﬁne ＦＵＬＬ &amp;amp; ") == "\"curly\" 'quotes' fine full &"
    assert clip_clean("<b>x</b> &amp;amp;") == "<b>x</b> &"  # '<' turns ftfy's own unescaping off
    assert fix_text("a\x1cb\x1b[31mc\r\nd\x85e") == "abc\nd…e"  # control chars, ANSI, CRLF, C1 as cp1252


def test_does_not_import_open_clip_or_ftfy():
    # Static check of every module of vlkit.tokenizers: the references are test-only.
    import ast
    import pathlib

    import vlkit.tokenizers

    folder = pathlib.Path(vlkit.tokenizers.__file__).parent
    imported = set()
    for path in folder.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                imported |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                imported.add(node.module.split(".")[0])
    assert imported <= {
        "__future__",
        "collections",
        "contextlib",
        "dataclasses",
        "functools",
        "gzip",
        "heapq",
        "html",
        "itertools",
        "json",
        "numpy",
        "os",
        "pathlib",
        "regex",
        "torch",
        "tqdm",
        "typing",
        "unicodedata",
    }, imported
    assert (folder / "data" / "bpe_simple_vocab_16e6.txt.gz").is_file()
    assert (folder / "data" / "bert-base-uncased-vocab.txt").is_file()


def test_from_bpe_file_and_registered_name_agree(tok, ref):
    import open_clip.tokenizer as oct

    other = get_tokenizer(oct.default_bpe())
    assert isinstance(other, CLIPTokenizer)
    assert other.get_vocab() == tok.get_vocab() == ref.encoder


def _ftfy_finds_no_mojibake(text: str) -> bool:
    import ftfy

    fixed = fix_text(text)
    return ftfy.fix_encoding(text) == text and ftfy.fix_encoding(fixed) == fixed


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=60))
def test_fix_text_matches_ftfy(text):
    import ftfy

    # vlkit leaves out ftfy's mojibake repair (a guess that text was decoded with the wrong
    # codec); every other fixer must agree with ftfy wherever ftfy finds no mojibake.
    assume(_ftfy_finds_no_mojibake(text))
    assert fix_text(text) == ftfy.fix_text(text)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=60))
def test_matches_open_clip_on_arbitrary_text(tok, ref, text):
    assume(_ftfy_finds_no_mojibake(text))
    assert tok.encode(text) == ref.encode(text)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.sampled_from(["cat", "photo", "a", "the", ",", "!", "Café", "猫", "🐱", "it's", " ", "12"]), max_size=50
    )
)
def test_truncation_keeps_end_token(tok, ref, words):
    text = " ".join(words)
    for length in (5, 77):
        assert torch.equal(tok([text], context_length=length)["input_ids"], ref([text], context_length=length))
