"""A user's image-caption folder: CSV/JSONL, bad samples skipped, counted and reported."""

import json

import pytest
import torch
from PIL import Image

from vlkit.data import ImageTextCollator, ImageTextFolder, SkipReport


def fake_tokenizer(texts, padding="longest"):
    ids = [[1] + [2 + len(w) for w in t.split()] + [99] for t in texts]
    width = max(map(len, ids))
    out = torch.zeros(len(ids), width, dtype=torch.long)
    mask = torch.zeros_like(out)
    for i, s in enumerate(ids):
        out[i, : len(s)] = torch.tensor(s)
        mask[i, : len(s)] = 1
    return {"input_ids": out, "attention_mask": mask}


def to_tensor(img):
    return torch.from_numpy(__import__("numpy").asarray(img).copy()).permute(2, 0, 1).float()


@pytest.fixture
def folder(tmp_path):
    """Three good images and every kind of bad sample."""
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for i, colour in enumerate(["red", "green", "blue"]):
        Image.new("RGB", (12, 10), colour).save(imgs / f"good{i}.png")
    Image.new("RGB", (64, 64), "white").save(imgs / "full.jpg", quality=95)
    data = (imgs / "full.jpg").read_bytes()
    (imgs / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (imgs / "empty.png").write_bytes(b"")
    (imgs / "notimage.png").write_text("this is not an image")
    rows = [
        ("imgs/good0.png", "a red image"),
        ("imgs/good1.png", "a green image"),
        ("imgs/truncated.jpg", "cut short"),
        ("imgs/empty.png", "zero bytes"),
        ("imgs/notimage.png", "text file"),
        ("imgs/missing.png", "no such file"),
        ("imgs/good2.png", "   "),
        ("imgs/good2.png", "a blue image"),
    ]
    return tmp_path, rows


def write_csv(path, rows, header=("image", "caption")):
    import csv

    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def test_csv_skips_bad_rows_at_load_and_bad_images_at_read(folder):
    root, rows = folder
    write_csv(root / "pairs.csv", rows)
    ds = ImageTextFolder(root / "pairs.csv", transform=to_tensor)
    assert ds.rows_read == 8
    reasons = sorted(s.reason for s in ds.skipped_at_load)
    assert reasons == ["empty caption", "missing file", "zero-size file"]
    assert len(ds) == 5  # 3 good + truncated + not-an-image (found only when decoded)
    items = [ds[i] for i in range(len(ds))]
    bad = [it["skipped"] for it in items if "skipped" in it]
    assert sorted(s.source for s in bad) == ["imgs/notimage.png", "imgs/truncated.jpg"]
    assert all(s.reason == "unreadable image" for s in bad)
    good = [it for it in items if "skipped" not in it]
    assert [it["caption"] for it in good] == ["a red image", "a green image", "a blue image"]
    assert good[0]["pixel_values"].shape == (3, 10, 12)
    assert good[0]["pixel_values"][:, 0, 0].tolist() == [255.0, 0.0, 0.0]

    batch = ImageTextCollator(fake_tokenizer)(items)
    assert batch["pixel_values"].shape[0] == 3 and batch["input_ids"].shape[0] == 3
    assert len(batch["skipped"]) == 2 and batch["captions"][2] == "a blue image"
    report = SkipReport(ds.skipped_at_load + batch["skipped"])
    text = report.summary(ds.rows_read)
    assert text.startswith("skipped 5 samples of 8")
    assert "(1 empty caption, 1 missing file, 2 unreadable images, 1 zero-size file)" in text


def test_jsonl_other_keys_and_root(folder, tmp_path):
    root, rows = folder
    ann = tmp_path / "meta" / "pairs.jsonl"
    ann.parent.mkdir()
    ann.write_text("".join(json.dumps({"file": p, "text": c}) + "\n" for p, c in rows[:2]) + "\n")
    ds = ImageTextFolder(ann, root=root)
    assert len(ds) == 2 and ds[1]["caption"] == "a green image" and ds[1]["image"].size == (12, 10)
    ds2 = ImageTextFolder(ann, root=root, image_key="file", caption_key="text")
    assert ds2.captions() == ["a red image", "a green image"]


def test_clear_errors(tmp_path, folder):
    root, rows = folder
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        ImageTextFolder(tmp_path / "nope.csv")
    write_csv(root / "bad.csv", rows, header=("picture", "words"))
    with pytest.raises(KeyError, match="no image column"):
        ImageTextFolder(root / "bad.csv")
    write_csv(root / "worse.csv", [("imgs/missing.png", "x"), ("imgs/good0.png", "")])
    with pytest.raises(ValueError, match="no usable image-caption pairs"):
        ImageTextFolder(root / "worse.csv")
    (root / "broken.jsonl").write_text('{"image": "a"}\nnot json\n')
    with pytest.raises(ValueError, match="broken.jsonl:2"):
        ImageTextFolder(root / "broken.jsonl")
    (root / "pairs.txt").write_text("x")
    with pytest.raises(ValueError, match=".csv, .tsv or .jsonl"):
        ImageTextFolder(root / "pairs.txt")


def test_collate_needs_pixel_values():
    with pytest.raises(TypeError, match="transform"):
        ImageTextCollator(fake_tokenizer)([{"caption": "x", "index": 0, "image": object()}])
