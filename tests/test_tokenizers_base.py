"""The common base: input checks, the batch call, special tokens, get_tokenizer sources and errors."""

import gzip
import json

import numpy as np
import pytest
import torch

import vlkit
from test_tokenizers_texts import TEXTS
from vlkit.tokenizers import (
    BPETokenizer,
    CharTokenizer,
    CLIPTokenizer,
    Tokenizer,
    WordPieceTokenizer,
    WordTokenizer,
    get_tokenizer,
    list_tokenizers,
)


@pytest.fixture(scope="module")
def clip():
    return get_tokenizer("clip")


@pytest.fixture(scope="module")
def bert():
    return get_tokenizer("bert-base-uncased")


@pytest.fixture(scope="module")
def small():
    return {
        "bpe": BPETokenizer.train(TEXTS, 300),
        "wordpiece": WordPieceTokenizer.train(TEXTS, 600),
        "word": WordTokenizer.train(TEXTS),
        "char": CharTokenizer.train(TEXTS),
    }


def test_registry_and_top_level_entry_point(clip, bert):
    assert {"clip", "bert-base-uncased"} <= set(list_tokenizers())
    assert isinstance(clip, CLIPTokenizer) and isinstance(bert, WordPieceTokenizer)
    assert isinstance(vlkit.get_tokenizer("clip"), CLIPTokenizer)
    assert get_tokenizer(clip) is clip
    assert get_tokenizer("clip", context_length=32)(["a cat"])["input_ids"].shape == (1, 32)


@pytest.mark.parametrize("name", ["clip", "bert-base-uncased", "bpe", "wordpiece", "word", "char"])
def test_bad_input(name, clip, bert, small):
    tok = {"clip": clip, "bert-base-uncased": bert, **small}[name]
    for bad in (None, 123, 4.5, ["a list"], object()):
        with pytest.raises(TypeError, match="str"):
            tok.encode(bad)
    with pytest.raises(ValueError, match="UTF-8"):
        tok.encode(b"caf\xe9")  # Latin-1 bytes
    with pytest.raises(ValueError, match="UTF-8"):
        tok([b"\xff\xfe"])
    with pytest.raises(TypeError):
        tok([None])
    with pytest.raises(TypeError):
        tok(42)
    assert tok.encode("café".encode()) == tok.encode("café")  # UTF-8 bytes are accepted
    with pytest.raises(TypeError):
        tok.decode("not ids")
    with pytest.raises(ValueError, match="out of range"):
        tok.decode([tok.vocab_size])
    with pytest.raises(ValueError, match="out of range"):
        tok.decode([-1])
    with pytest.raises(TypeError):
        tok.decode([1.5])
    with pytest.raises(ValueError, match="padding"):
        tok(["a"], padding="sideways")


def test_decode_accepts_tensors_and_arrays(clip):
    ids = clip.encode("a photo of a cat")
    assert clip.decode(torch.tensor(ids)) == clip.decode(np.array(ids)) == clip.decode(ids) == "a photo of a cat "
    batch = clip(["a photo of a cat", "a dog"])["input_ids"]
    assert clip.batch_decode(batch[:, :3], skip_special_tokens=True) == ["a photo ", "a dog "]
    with pytest.raises(ValueError, match="1-D"):
        clip.decode(batch)


def test_batch_padding_and_truncation(bert):
    texts = ["a cat", "a photo of a large dog"]
    ids = [bert.encode(t, add_special_tokens=True) for t in texts]
    out = bert(texts)  # default for WordPiece: pad to the longest with [PAD]
    assert out["input_ids"].shape == (2, len(ids[1]))
    assert out["input_ids"][0].tolist() == ids[0] + [bert.pad_token_id] * (len(ids[1]) - len(ids[0]))
    assert out["attention_mask"].tolist() == [[1] * len(ids[0]) + [0] * (len(ids[1]) - len(ids[0])), [1] * len(ids[1])]
    fixed = bert(texts, context_length=10, padding="max_length")
    assert fixed["input_ids"].shape == (2, 10)
    cut = bert(texts, context_length=4)
    assert cut["input_ids"].tolist() == [ids[0][:3] + [bert.sep_token_id], ids[1][:3] + [bert.sep_token_id]]
    plain = bert(texts, add_special_tokens=False)
    assert plain["input_ids"][1].tolist() == bert.encode(texts[1])
    with pytest.raises(ValueError, match="context_length"):
        bert(texts, context_length=3, padding="max_length", truncation=False)
    with pytest.raises(ValueError, match="no room"):
        bert(texts, context_length=1)
    with pytest.raises(ValueError, match="different lengths"):
        bert(texts, padding=False)
    assert bert(["a b", "c d"], padding=False)["input_ids"].shape == (2, 4)
    empty = bert([])
    assert empty["input_ids"].shape == (0, 0) and empty["input_ids"].dtype == torch.long


def test_registered_bert_truncates_at_512(bert):
    out = bert(["word " * 600])
    assert out["input_ids"].shape == (1, 512) and out["input_ids"][0, -1].item() == bert.sep_token_id


@pytest.mark.parametrize("algorithm", ["bpe", "wordpiece", "word", "char"])
def test_save_load_roundtrip(small, algorithm, tmp_path):
    tok = small[algorithm]
    tok.save(tmp_path)
    assert (tmp_path / "vlkit_tokenizer.json").is_file() and (tmp_path / "tokenizer.json").is_file()
    again = Tokenizer.load(tmp_path)
    assert type(again) is type(tok)
    assert again.get_vocab() == tok.get_vocab() and again.special_tokens == tok.special_tokens
    for text in TEXTS:
        assert again.encode(text) == tok.encode(text)
    assert torch.equal(get_tokenizer(tmp_path)(TEXTS)["input_ids"], tok(TEXTS)["input_ids"])


def test_clip_save_load_roundtrip(clip, tmp_path):
    clip.save(tmp_path)
    again = get_tokenizer(tmp_path)
    assert isinstance(again, CLIPTokenizer) and again.context_length == 77
    assert torch.equal(again(TEXTS)["input_ids"], clip(TEXTS)["input_ids"])


def test_clip_tokenizer_json_is_readable_by_hf(clip, tmp_path):
    from tokenizers import Tokenizer as HFTokenizer

    clip.save(tmp_path)
    hf = HFTokenizer.from_file(str(tmp_path / "tokenizer.json"))
    # HF's CLIP clean-up is NFC + whitespace + lowercase (no ftfy/HTML), identical on plain text.
    for text in ["a photo of a cat", "Two dogs, one ball!", "一只猫 🐱"]:
        assert hf.encode(text).ids == clip.encode(text, add_special_tokens=True)


def test_errors_name_the_source(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(FileNotFoundError, match="nope"):
        get_tokenizer(str(missing))
    with pytest.raises(FileNotFoundError, match="not-a-registered-name"):
        get_tokenizer("not-a-registered-name")
    with pytest.raises(TypeError):
        get_tokenizer(42)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="empty"):
        get_tokenizer(empty)
    bad_json = tmp_path / "tokenizer.json"
    bad_json.write_text("{not json")
    with pytest.raises(ValueError, match="tokenizer.json"):
        get_tokenizer(bad_json)
    unigram = tmp_path / "uni" / "tokenizer.json"
    unigram.parent.mkdir()
    unigram.write_text(json.dumps({"model": {"type": "Unigram", "vocab": []}}))
    with pytest.raises(ValueError, match="Unigram"):
        get_tokenizer(unigram)
    bad_gz = tmp_path / "bpe_simple_vocab_16e6.txt.gz"
    bad_gz.write_bytes(b"not gzip")
    with pytest.raises(ValueError, match="bpe_simple_vocab"):
        get_tokenizer(bad_gz)
    short_gz = tmp_path / "g" / "bpe_simple_vocab_16e6.txt.gz"
    short_gz.parent.mkdir()
    short_gz.write_bytes(gzip.compress(b"#version\na b c\n"))
    with pytest.raises(ValueError, match="merge line"):
        get_tokenizer(short_gz.parent)
    other = tmp_path / "weights.bin"
    other.write_bytes(b"\0")
    with pytest.raises(ValueError, match="weights.bin"):
        get_tokenizer(other)
    lonely = tmp_path / "lonely" / "vocab.json"
    lonely.parent.mkdir()
    lonely.write_text("{}")
    with pytest.raises(FileNotFoundError, match="merges.txt"):
        get_tokenizer(lonely)


def test_vocabulary_checks():
    with pytest.raises(ValueError, match="duplicate"):
        WordTokenizer(["[UNK]", "a", "a"])
    with pytest.raises(ValueError, match="unk"):
        WordTokenizer(["a", "b"])
    with pytest.raises(ValueError, match="not in the vocabulary"):
        WordTokenizer(["[UNK]", "a"], {"unk": "[UNK]", "pad": "[PAD]"})
    with pytest.raises(ValueError, match="missing from the vocabulary"):
        BPETokenizer([chr(c) for c in range(33, 40)], [("!", '"')])


def test_tokenizers_pickle(clip, bert, small):
    # DataLoader workers started with "spawn" receive the tokenizer pickled.
    import pickle

    normalized = BPETokenizer(small["bpe"]._id_to_token, small["bpe"].merges, normalizer={"type": "NFKC"})
    for tok in (clip, bert, normalized, *small.values()):
        again = pickle.loads(pickle.dumps(tok))
        for text in TEXTS:
            assert again.encode(text) == tok.encode(text)
    assert normalized.encode("ﬁ") == normalized.encode("fi")  # NFKC applied
