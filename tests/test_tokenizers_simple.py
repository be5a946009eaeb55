"""Word and character tokenizers: vocabularies counted from a corpus, an unknown token."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from test_tokenizers_texts import TEXTS
from vlkit.tokenizers import CharTokenizer, WordTokenizer

CORPUS = ["the cat sat on the mat.", "The dog sat, the cat ran!", "a cat"]


def test_word_vocabulary_by_frequency():
    # counts: the 3 (+1 'The'), cat 3, sat 2, then once each in order of first appearance
    tok = WordTokenizer.train(CORPUS, vocab_size=4 + 4)
    assert [tok.id_to_token(i) for i in range(8)] == ["[PAD]", "[UNK]", "[BOS]", "[EOS]", "the", "cat", "sat", "on"]
    assert tok.tokenize("the cat sat on a log.") == ["the", "cat", "sat", "on", "[UNK]", "[UNK]", "[UNK]"]
    assert tok.encode("The cat") == [tok.unk_token_id, 5]  # case kept by default


def test_word_split_on_whitespace_and_punctuation():
    tok = WordTokenizer.train(CORPUS, lowercase=True)
    assert tok.lowercase and tok.token_to_id("The") is None
    assert tok.tokenize("The cat,sat!!") == ["the", "cat", ",", "sat", "!", "!"]
    assert tok._split("l'été à Paris: 3€ + 4$") == ["l", "'", "été", "à", "paris", ":", "3", "€", "+", "4", "$"]
    assert tok.decode(tok.encode("the cat, sat")) == "the cat , sat"
    assert WordTokenizer.train(CORPUS, min_frequency=2).get_vocab().keys() == {
        "[PAD]",
        "[UNK]",
        "[BOS]",
        "[EOS]",
        "the",
        "cat",
        "sat",
    }


def test_char_vocabulary_and_roundtrip():
    tok = CharTokenizer.train(["aab", "ba c"], vocab_size=4 + 3)
    # a 3, b 2, ' ' 1 (first seen before c)
    assert [tok.id_to_token(i) for i in range(4, 7)] == ["a", "b", " "]
    assert tok.tokenize("abc\n") == ["a", "b", "[UNK]", "[UNK]"]
    full = CharTokenizer.train(TEXTS)
    for text in TEXTS:
        assert full.decode(full.encode(text)) == text
    assert full.encode("👨‍👩‍👧") == [full.token_to_id(c) for c in "👨‍👩‍👧"]  # code points, not graphemes


@settings(max_examples=100, deadline=None)
@given(st.text(alphabet="abc \n\t🐱é", max_size=50))
def test_char_roundtrip_property(text):
    tok = CharTokenizer.train(["abc \n\t🐱é"])
    assert tok.decode(tok.encode(text)) == text


@pytest.mark.parametrize("cls", [WordTokenizer, CharTokenizer])
def test_hf_reads_what_vlkit_trained(cls, tmp_path):
    from tokenizers import Tokenizer

    tok = cls.train(TEXTS[:10], vocab_size=120, lowercase=cls is WordTokenizer)
    tok.save(tmp_path)
    hf = Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    for text in TEXTS:
        assert hf.encode(text).ids == tok.encode(text)
    from vlkit.tokenizers import get_tokenizer, tokenizer_from_hf_json

    again = tokenizer_from_hf_json(tmp_path / "tokenizer.json")
    assert type(again) is cls and again.get_vocab() == tok.get_vocab()
    assert get_tokenizer(tmp_path).encode(TEXTS[0]) == tok.encode(TEXTS[0])
