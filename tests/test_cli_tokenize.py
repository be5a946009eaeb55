"""``vlkit tokenize`` and ``vlkit tokenizer train`` end to end."""

import json

import pytest

from test_tokenizers_texts import training_corpus
from vlkit.cli import main
from vlkit.tokenizers import get_tokenizer


def test_tokenize_prints_tokens_and_ids(capsys):
    assert main(["tokenize", "--tokenizer", "clip", "a photo of a cat"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "text:   a photo of a cat"
    assert out[1] == "tokens: 'a</w>' 'photo</w>' 'of</w>' 'a</w>' 'cat</w>'"
    assert out[2] == "ids:    320 1125 539 320 2368"
    assert main(["tokenize", "--tokenizer", "bert-base-uncased", "--special", "--json", "Hello, world", "x"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert rows[0] == {
        "text": "Hello, world",
        "tokens": ["[CLS]", "hello", ",", "world", "[SEP]"],
        "ids": [101, 7592, 1010, 2088, 102],
    }
    assert rows[1]["ids"] == [101, 1060, 102]


def test_tokenize_bad_source_is_a_clean_error(capsys):
    assert main(["tokenize", "--tokenizer", "no/such/folder", "x"]) == 2
    assert "no/such/folder" in capsys.readouterr().err


@pytest.mark.parametrize("algorithm,size", [("bpe", 400), ("wordpiece", 400), ("word", 50), ("char", 40)])
def test_train_then_tokenize(tmp_path, capsys, algorithm, size):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("".join(training_corpus()[:1500]), encoding="utf-8")
    out = tmp_path / "tok"
    argv = ["tokenizer", "train", "--algorithm", algorithm, "--vocab-size", str(size), str(corpus), "--out", str(out)]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert f"trained {algorithm} tokenizer: {size} tokens" in captured.out
    assert "/s]" in captured.err  # the tqdm progress bar (merges, or texts counted)
    tok = get_tokenizer(out)
    assert tok.vocab_size == size and (out / "tokenizer.json").is_file()
    assert main(["tokenize", "--tokenizer", str(out), "--json", "def encode(self, o):"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert row["ids"] == tok.encode("def encode(self, o):") and len(row["tokens"]) == len(row["ids"])


@pytest.mark.parametrize("flag", ["--lowercase", "--no-lowercase"])
def test_train_bpe_takes_both_lowercase_flags(tmp_path, capsys, flag):
    from tokenizers import Tokenizer

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("".join(training_corpus()[:300]), encoding="utf-8")
    out = tmp_path / "tok"
    argv = ["tokenizer", "train", "--algorithm", "bpe", "--vocab-size", "300", str(corpus), "--out", str(out), flag]
    assert main(argv + ["--no-progress"]) == 0, capsys.readouterr().err
    tok = get_tokenizer(out)
    text = "Hello World, THE End"
    assert (tok.encode(text) == tok.encode(text.lower())) == (flag == "--lowercase")
    assert tok.decode(tok.encode(text)) == (text.lower() if flag == "--lowercase" else text)
    # the saved tokenizer.json carries the same normalisation for HF tokenizers
    assert Tokenizer.from_file(str(out / "tokenizer.json")).encode(text).ids == tok.encode(text)


def test_train_errors(tmp_path, capsys):
    assert (
        main(
            [
                "tokenizer",
                "train",
                "--algorithm",
                "bpe",
                "--vocab-size",
                "300",
                str(tmp_path / "missing.txt"),
                "--out",
                str(tmp_path / "o"),
            ]
        )
        == 2
    )
    assert "missing.txt" in capsys.readouterr().err
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("café\n".encode("latin-1"))
    assert (
        main(
            [
                "tokenizer",
                "train",
                "--algorithm",
                "char",
                "--vocab-size",
                "30",
                str(latin1),
                "--out",
                str(tmp_path / "o"),
            ]
        )
        == 2
    )
    assert "latin1.txt" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["tokenizer", "train", "--algorithm", "sentencepiece", "--vocab-size", "30", str(latin1), "--out", "o"])


def _folders(tmp_path):
    from vlkit.tokenizers import WordPieceTokenizer, WordTokenizer

    texts = ["hello world this is a test", "another line of text here"] * 5
    WordPieceTokenizer.train(texts, 60).save(tmp_path / "wp")
    WordTokenizer.train(texts).save(tmp_path / "word")
    hf = tmp_path / "hf"
    hf.mkdir()
    (hf / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\nhello\n", encoding="utf-8")
    (hf / "special_tokens_map.json").write_text('{"unk_token": "[UNK]"}', encoding="utf-8")
    return tmp_path


@pytest.mark.parametrize(
    "folder, name, data",
    [
        ("wp", "vlkit_tokenizer.json", "café".encode("latin-1")),  # not UTF-8
        ("wp", "vlkit_tokenizer.json", b"[1, 2]"),  # JSON, but not an object
        ("wp", "vocab.txt", b"just\nwords\n"),  # no [UNK] / [PAD]: the vocabulary does not fit the config
        ("word", "vocab.json", bytes(range(256))),  # binary garbage
        ("hf", "special_tokens_map.json", b'"[UNK]"'),  # JSON, but not an object
        ("hf", "tokenizer_config.json", b'{"do_lower_case": tru'),  # not JSON
        ("hf", "vocab.txt", b"only\nwords\n"),  # no [UNK]
    ],
)
def test_unreadable_tokenizer_file_is_named(tmp_path, capsys, folder, name, data):
    root = _folders(tmp_path)
    (root / folder / name).write_bytes(data)
    for source in (root / folder, root / folder / name):
        if (
            source.name in ("special_tokens_map.json", "tokenizer_config.json", "vlkit_tokenizer.json")
            and source.is_file()
        ):
            source = source.parent  # read as part of the folder
        assert main(["tokenize", "--tokenizer", str(source), "x"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("vlkit tokenize: error: ") and str(root / folder / name) in err, err
        assert "Traceback" not in err
