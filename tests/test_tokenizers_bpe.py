"""Byte-level BPE (GPT-2): hand-worked merges, training and encoding parity with HF tokenizers,
lossless round trips."""

import json

import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from test_tokenizers_texts import TEXTS, training_corpus
from vlkit.tokenizers import BPETokenizer, bytes_to_unicode, get_tokenizer
from vlkit.tokenizers.bpe_core import BPEMerges, train_merges


def hf_byte_level_trainer(vocab_size):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    hf = Tokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    return hf, trainer


@pytest.fixture(scope="module")
def corpus():
    return training_corpus()


@pytest.fixture(scope="module")
def hf_trained(corpus, tmp_path_factory):
    """A byte-level BPE that HF tokenizers trained, saved as tokenizer.json."""
    hf, trainer = hf_byte_level_trainer(1200)
    hf.train_from_iterator(corpus, trainer=trainer)
    path = tmp_path_factory.mktemp("hf_bpe") / "tokenizer.json"
    hf.save(str(path))
    return hf, path


@pytest.fixture(scope="module")
def trained(corpus):
    return BPETokenizer.train(corpus, 1200)


def test_bytes_to_unicode_is_gpt2s_table():
    table = bytes_to_unicode()
    assert len(table) == 256 and len(set(table.values())) == 256
    assert table[ord("a")] == "a" and table[ord("!")] == "!"
    assert table[ord(" ")] == "Ġ" and table[ord("\n")] == "Ċ" and table[0] == "Ā"
    assert all(c.isprintable() and not c.isspace() for c in table.values())


def test_hand_worked_merges():
    # "aaabdaaabac" (one pre-token). Pair counts: aa 4, ab 2, others 1 -> merge (a, a) first;
    # then (a, b) and (aa, a) both occur twice: the tie goes to the smaller pair of ids, (a, b);
    # then (aa, ab) twice -> "aaab". Left to right, "aaa" becomes "aa a", never "a aa".
    tok = BPETokenizer.train(["aaabdaaabac"], vocab_size=256 + 1 + 3)
    assert tok.merges == [("a", "a"), ("a", "b"), ("aa", "ab")]
    assert tok.tokenize("aaabdaaabac") == ["aaab", "d", "aaab", "a", "c"]
    assert tok.tokenize("aaaa ab") == ["aa", "aa", "Ġ", "ab"]
    hf, trainer = hf_byte_level_trainer(256 + 1 + 3)
    hf.train_from_iterator(["aaabdaaabac"], trainer=trainer)
    assert [tuple(m) for m in json.loads(hf.to_str())["model"]["merges"]] == tok.merges


def test_merges_apply_by_rank_not_by_position():
    # ranks: (b, c) before (a, b): "abc" -> a + bc, even though (a, b) comes first in the word.
    merges = BPEMerges([(1, 2, 10), (0, 1, 11)])
    assert merges.apply([0, 1, 2]) == [0, 10]
    assert merges.apply([0, 1, 0, 1, 2]) == [11, 0, 10]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 3), max_size=200))
@example([0, 1, 2, 0, 1])  # -> [5, 4]: (0, 1) twice, then (4, 2); a mutated heap merge once passed without it
def test_heap_merge_equals_loop_merge(word):
    # Long words go through a heap; short ones through the plain loop: same result.
    merges = BPEMerges([(0, 1, 4), (4, 2, 5), (3, 3, 6), (5, 0, 7), (1, 1, 8), (6, 6, 9)])
    loop = list(word)
    while True:  # reference: the textbook loop, one lowest-rank pair at a time
        pairs = [(merges.ranks[p][0], i) for i, p in enumerate(zip(loop, loop[1:])) if p in merges.ranks]
        if not pairs:
            break
        rank = min(pairs)[0]
        a, b, ab = merges.merges[rank]
        out, i = [], 0
        while i < len(loop):
            if i + 1 < len(loop) and (loop[i], loop[i + 1]) == (a, b):
                out.append(ab)
                i += 2
            else:
                out.append(loop[i])
                i += 1
        loop = out
    assert merges._apply_heap(list(word)) == loop
    assert merges.apply(list(word)) == loop


def test_training_matches_hf_trainer(corpus, trained, hf_trained):
    hf, _ = hf_trained
    model = json.loads(hf.to_str())["model"]
    assert [tuple(m) for m in model["merges"]] == trained.merges
    assert model["vocab"] == trained.get_vocab()


def naive_train(words, counts, num_merges, first_new):
    """Textbook BPE training: recount every pair of every word before each merge."""
    words = [list(w) for w in words]
    merges = []
    for new in range(first_new, first_new + num_merges):
        pairs = {}
        for w, c in zip(words, counts):
            for p in zip(w, w[1:]):
                pairs[p] = pairs.get(p, 0) + c
        if not pairs:
            break
        (a, b), _ = min(pairs.items(), key=lambda kv: (-kv[1], kv[0]))
        merges.append((a, b, new))
        for k, w in enumerate(words):
            out, i = [], 0
            while i < len(w):
                if i + 1 < len(w) and (w[i], w[i + 1]) == (a, b):
                    out.append(new)
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            words[k] = out
    return merges


def counter(start):
    state = {"next": start}

    def new_token(a, b):
        state["next"] += 1
        return state["next"] - 1

    return new_token


def test_incremental_training_known_answer():
    # Pair counts: (0,0) 15, (0,1) 7, (1,2) 7, (1,0) 3, (2,1) 2, (2,0) 1. Merge (0,0); then the
    # tie (0,1)/(1,2) goes to (0,1); "0 0 0 0" became "3 3", so (3,3) 5 comes next; then (1,2) 4,
    # then the tie (4,2)/(4,4) at 3 goes to (4,2), leaving (4,7) 3.
    words = [[0, 1, 0, 1, 2], [1, 2, 1, 2], [0, 0, 0, 0], [2, 0, 1]]
    counts = [3, 2, 5, 1]
    expected = [(0, 0, 3), (0, 1, 4), (3, 3, 5), (1, 2, 6), (4, 2, 7), (4, 7, 8)]
    assert train_merges(words, counts, 6, counter(3)) == expected
    assert naive_train(words, counts, 6, 3) == expected


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.lists(st.integers(0, 3), min_size=1, max_size=12), min_size=1, max_size=12),
    st.data(),
)
def test_incremental_training_equals_full_recount(words, data):
    counts = data.draw(st.lists(st.integers(1, 5), min_size=len(words), max_size=len(words)))
    assert train_merges(words, counts, 10, counter(4)) == naive_train(words, counts, 10, 4)


@pytest.mark.parametrize("text", TEXTS, ids=range(len(TEXTS)))
def test_encode_matches_hf_on_hf_trained_tokenizer(hf_trained, text):
    hf, path = hf_trained
    tok = get_tokenizer(path)
    assert tok.encode(text) == hf.encode(text).ids
    assert tok.decode(tok.encode(text)) == text == hf.decode(hf.encode(text).ids)


def test_special_token_in_text(hf_trained):
    hf, path = hf_trained
    tok = get_tokenizer(path)
    text = "end<|endoftext|>start <|endoftext|>"
    assert tok.encode(text) == hf.encode(text).ids
    assert tok.encode(text).count(tok.eos_token_id) == 2
    assert tok.decode(tok.encode(text)) == text
    assert tok.decode(tok.encode(text), skip_special_tokens=True) == "endstart "


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text())
def test_roundtrip_arbitrary_unicode(trained, text):
    # st.text() draws from all of Unicode (emoji, control characters, combining marks, ...).
    assert trained.decode(trained.encode(text)) == text


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=40) | st.sampled_from(TEXTS))
def test_encode_matches_hf_on_arbitrary_text(hf_trained, text):
    hf, path = hf_trained
    assert get_tokenizer(path).encode(text) == hf.encode(text).ids


def test_trained_tokenizer_is_readable_by_hf(trained, tmp_path):
    from tokenizers import Tokenizer

    trained.save(tmp_path)
    hf = Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    for text in TEXTS:
        assert hf.encode(text).ids == trained.encode(text)
        assert hf.decode(trained.encode(text)) == text
    again = get_tokenizer(tmp_path)
    assert isinstance(again, BPETokenizer) and again.merges == trained.merges
    assert again.encode(TEXTS[4]) == trained.encode(TEXTS[4])


def test_vocab_json_and_merges_txt(trained, tmp_path):
    trained.save(tmp_path)
    (tmp_path / "vlkit_tokenizer.json").unlink()
    (tmp_path / "tokenizer.json").unlink()
    tok = get_tokenizer(tmp_path)  # GPT-2's layout: vocab.json + merges.txt
    assert tok.encode(TEXTS[2]) == trained.encode(TEXTS[2])
    assert get_tokenizer(tmp_path / "vocab.json").merges == trained.merges


def test_batch_call_pads_with_end_token_when_no_pad(trained):
    out = trained(["hello world", "hi"])
    assert trained.pad_token_id is None and trained.eos_token_id == 0
    assert out["input_ids"][1, -1].item() == trained.eos_token_id
    assert out["attention_mask"].tolist()[1] == [1] * len(trained.encode("hi")) + [0] * (
        len(trained.encode("hello world")) - len(trained.encode("hi"))
    )
    assert torch.equal(out["input_ids"][0], torch.tensor(trained.encode("hello world")))


def test_lone_surrogate_is_a_value_error(trained):
    with pytest.raises(ValueError, match="surrogate"):
        trained.encode("abc\ud800")


def test_roles_of_an_hf_gpt2_style_file(hf_trained, trained):
    _, path = hf_trained
    tok = get_tokenizer(path)
    assert tok.bos_token_id == tok.eos_token_id == 0 and tok.pad_token_id is None
    assert tok.special_tokens == trained.special_tokens
