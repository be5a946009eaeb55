"""Annotation files as users write them: Excel's UTF-8 CSV (with a byte-order mark), JSONL cells
that are not text, files in another encoding, and a skip report whose plurals are right."""

import json

import pytest
from PIL import Image

import vlkit
from vlkit.cli import main
from vlkit.data import ImageTextFolder, Skipped, SkipReport
from vlkit.data.annotations import read_annotations, read_utf8
from vlkit.data.vqa import VQAFolder


@pytest.fixture
def images(tmp_path):
    for name, colour in (("red", (220, 30, 30)), ("blue", (30, 30, 220)), ("green", (30, 200, 30))):
        Image.new("RGB", (8, 8), colour).save(tmp_path / f"{name}.png")
    return tmp_path


def test_csv_with_a_byte_order_mark(images):
    (images / "excel.csv").write_text(
        "image,caption\nred.png,a red square\nblue.png,a blue square\n", encoding="utf-8-sig"
    )
    assert (images / "excel.csv").read_bytes()[:3] == b"\xef\xbb\xbf"
    assert read_annotations(images / "excel.csv")[0] == {"image": "red.png", "caption": "a red square"}
    assert ImageTextFolder(images / "excel.csv").captions() == ["a red square", "a blue square"]
    (images / "excel.jsonl").write_text(json.dumps({"image": "red.png", "caption": "red"}) + "\n", encoding="utf-8-sig")
    assert ImageTextFolder(images / "excel.jsonl").captions() == ["red"]


def test_jsonl_cells_that_are_not_text_are_skipped_never_stringified(images):
    rows = [
        {"image": "red.png", "caption": ["a red square", "something red", " "]},  # a list: two captions
        {"image": "blue.png", "caption": {"en": "a blue square"}},
        {"image": "green.png", "caption": 7},
        {"image": "green.png", "caption": True},
        {"image": "green.png", "caption": ["ok", 3]},
        {"image": ["green.png"], "caption": "a green square"},
        {"image": "green.png", "caption": None},
        {"image": "green.png", "caption": "a green square"},
    ]
    (images / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    ds = ImageTextFolder(images / "pairs.jsonl")
    assert ds.captions() == ["a red square", "something red", "a green square"]
    assert [ds[i]["path"].rsplit("/", 1)[-1] for i in range(3)] == ["red.png", "red.png", "green.png"]
    reasons = [s.reason for s in ds.skipped_at_load]
    assert reasons == ["non-text caption"] * 4 + ["non-text image path", "empty caption"]
    assert ds.skipped_at_load[0] == Skipped("blue.png", "non-text caption", "a JSON dict")
    summary = SkipReport(ds.skipped_at_load).summary(ds.rows_read)
    assert summary.startswith("skipped 6 samples of 8 (1 empty caption, 4 non-text captions, 1 non-text image path)")

    qa = [
        {"image": "red.png", "question": "what colour?", "answers": ["red", "red", "pink"]},
        {"image": "red.png", "question": {"q": "colour?"}, "answer": "red"},
        {"image": "red.png", "question": "how many?", "answers": [2, "two"]},
        {"image": "red.png", "question": "how many?", "answer": 2},
        {"image": "red.png", "question": "size?", "answers": []},
    ]
    (images / "qa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in qa))
    vqa = VQAFolder(images / "qa.jsonl")
    assert vqa.answer_lists() == [["red", "red", "pink"]]
    assert [s.reason for s in vqa.skipped_at_load] == [
        "non-text question",
        "non-text answer",
        "non-text answer",
        "missing answer",
    ]


def test_files_not_in_utf8_name_the_file_offset_and_line(images):
    (images / "latin.csv").write_bytes("image,caption\nred.png,red\nblue.png,un carré bleu\n".encode("latin-1"))
    message = r"latin.csv: not UTF-8 text: byte 0xe9 at offset 42 \(line 3\); save the file as UTF-8"
    with pytest.raises(ValueError, match=message):
        ImageTextFolder(images / "latin.csv")
    with pytest.raises(ValueError, match=message):
        VQAFolder(images / "latin.csv")
    (images / "bom-latin.jsonl").write_bytes(b"\xef\xbb\xbf" + '{"image": "red.png", "caption": "é"}'.encode("cp1252"))
    with pytest.raises(ValueError, match=r"bom-latin.jsonl: not UTF-8 text: byte 0xe9 at offset 36 \(line 1\)"):
        read_utf8(images / "bom-latin.jsonl")
    (images / "lines.jsonl").write_text('{"image": "red.png", "caption": "a\u2028b"}\n')  # U+2028 is not a line break
    assert ImageTextFolder(images / "lines.jsonl").captions() == ["a\u2028b"]


def test_skip_report_plurals():
    one = SkipReport([Skipped("a.png", "unreadable image", "cannot decode the image")])
    assert one.summary() == "skipped 1 sample (1 unreadable image): a.png (unreadable image: cannot decode the image)"
    two = SkipReport(
        [
            Skipped("a.png", "unreadable image"),
            Skipped("b.png", "unreadable image"),
            Skipped("c.png", "missing file"),
            Skipped("d.png", "zero-size file"),
            Skipped("e.png", "zero-size file"),
        ]
    )
    assert two.summary(9, examples=4) == (
        "skipped 5 samples of 9 (1 missing file, 2 unreadable images, "
        "2 zero-size files): a.png (unreadable image); b.png (unreadable image); "
        "c.png (missing file); d.png (zero-size file); and 1 more"
    )


def test_cli_reads_excel_csv_and_caption_lists_and_names_a_bad_encoding(images, tmp_path, capsys):
    model = vlkit.create_model("clip-tiny")
    folder = str(model.save_pretrained(tmp_path / "clip"))
    (images / "excel.csv").write_text(
        "image,caption\nred.png,a red square\nblue.png,a blue square\n", encoding="utf-8-sig"
    )
    assert (
        main(
            [
                "eval",
                "retrieval",
                "--model",
                folder,
                "--annotations",
                str(images / "excel.csv"),
                "--device",
                "cpu",
                "--json",
                str(tmp_path / "r.json"),
            ]
        )
        == 0
    )
    assert json.loads((tmp_path / "r.json").read_text())["texts"] == 2
    rows = [
        {"image": "red.png", "caption": ["a red square", "something red"]},
        {"image": "blue.png", "caption": {"en": "a blue square"}},
        {"image": "green.png", "caption": "a green square"},
    ]
    (images / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    capsys.readouterr()
    assert (
        main(
            [
                "eval",
                "retrieval",
                "--model",
                folder,
                "--annotations",
                str(images / "pairs.jsonl"),
                "--device",
                "cpu",
                "--json",
                str(tmp_path / "r.json"),
            ]
        )
        == 0
    )
    result = json.loads((tmp_path / "r.json").read_text())
    assert (result["images"], result["texts"]) == (2, 3)  # red with its two captions, green; not the dict
    assert "skipped 1 sample (1 non-text caption): blue.png" in capsys.readouterr().out

    (images / "latin.csv").write_bytes("image,caption\nred.png,un carré rouge\n".encode("latin-1"))
    assert (
        main(
            [
                "train",
                "--data.kind",
                "folder",
                "--data.train_annotations",
                str(images / "latin.csv"),
                "--train.output_dir",
                str(tmp_path / "run"),
                "--train.max_steps",
                "1",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert (
        err.startswith("vlkit train: error: ") and "latin.csv: not UTF-8 text: byte 0xe9 at offset 29 (line 2)" in err
    )
