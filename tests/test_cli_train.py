"""End to end through the command line: train, resume, eval zeroshot/retrieval, embed."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

import vlkit
from helpers import TINY_CLIP, as_flags
from vlkit.cli import main

TINY = [
    *as_flags(TINY_CLIP),
    "--train.batch_size",
    "8",
    "--train.log_every=2",
    "--train.progress",
    "false",
    "--train.plots",
    "false",
    "--train.threads",
    "1",
    "--data.train_size",
    "64",
    "--data.val_size",
    "24",
    "--optim.warmup_steps",
    "2",
]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    assert main(["train", *TINY, "--train.max_steps", "6", "--train.output_dir", str(out), "--stop-after", "3"]) == 0
    assert main(["train", "--resume", *TINY, "--train.max_steps", "6", "--train.output_dir", str(out)]) == 0
    return out


def test_train_writes_what_it_promises(run, capsys):
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r.get("split") == "train"] == [2, 3, 4, 6]  # 3: the stop; then resumed
    val = [r for r in rows if r.get("split") == "validation"]
    assert len(val) == 1 and {"zeroshot_shape_top1", "zeroshot_colour_top1", "i2t_R@1", "t2i_R@10"} <= set(val[0])
    assert (run / "model" / "config.json").is_file() and (run / "config.yaml").is_file()
    model = vlkit.from_pretrained(run / "model")
    assert model.config.vision.image_size == 16 and model.config.embed_dim == 16


def test_train_refuses_to_clobber_and_reports_bad_config(run, capsys, tmp_path):
    assert main(["train", *TINY, "--train.max_steps", "1", "--train.output_dir", str(run)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["train", "--set", "optim.lr=fast", "--train.output_dir", str(tmp_path)]) == 2
    assert "optim.lr: expected float" in capsys.readouterr().err


def test_eval_zeroshot_and_retrieval_on_shapes(run, capsys, tmp_path):
    assert main(["eval", "zeroshot", "--model", str(run), "--size", "40", "--json", str(tmp_path / "zs.json")]) == 0
    zs = json.loads((tmp_path / "zs.json").read_text())
    assert zs["images"] == 40 and zs["shape_classes"] == 5 and zs["colour_classes"] == 6
    assert 0 <= zs["shape_top1"] <= 100 and zs["shape_top5"] == 100.0
    # a training checkpoint works as --model too, and gives the same model
    ckpt = run / "checkpoints" / "step-0000006.pt"
    assert main(["eval", "retrieval", "--model", str(ckpt), "--size", "30", "--json", str(tmp_path / "r.json")]) == 0
    r = json.loads((tmp_path / "r.json").read_text())
    assert r["images"] == 30 and 0 < r["texts"] <= 30 and set(r) >= {"i2t_R@1", "i2t_R@5", "t2i_R@10"}
    assert r["i2t_R@10"] >= r["i2t_R@5"] >= r["i2t_R@1"]
    out = capsys.readouterr().out
    assert "zero-shot accuracy" in out and "retrieval Recall@K" in out


def photo_folder(tmp_path):
    imgs = tmp_path / "photos"
    imgs.mkdir()
    colours = {"red": (220, 30, 30), "blue": (30, 30, 220), "green": (30, 200, 30)}
    for name, rgb in colours.items():
        Image.new("RGB", (24, 20), rgb).save(imgs / f"{name}.png")
    (imgs / "broken.png").write_text("not a png")
    return imgs, colours


def test_eval_on_your_own_folder(run, tmp_path, capsys):
    imgs, colours = photo_folder(tmp_path)
    labels = tmp_path / "labels.csv"
    labels.write_text("image,label\n" + "".join(f"photos/{c}.png,{c}\n" for c in colours) + "photos/broken.png,red\n")
    assert (
        main(
            [
                "eval",
                "zeroshot",
                "--model",
                str(run / "model"),
                "--annotations",
                str(labels),
                "--templates",
                "a {} shape.",
                "--json",
                str(tmp_path / "zs.json"),
            ]
        )
        == 0
    )
    zs = json.loads((tmp_path / "zs.json").read_text())
    assert zs["images"] == 3 and zs["label_classes"] == 3
    assert "skipped 1 sample (1 unreadable image)" in capsys.readouterr().out

    pairs = tmp_path / "pairs.jsonl"  # two captions for the red image
    rows = [
        ("photos/red.png", "a red square"),
        ("photos/red.png", "something red"),
        ("photos/blue.png", "a blue square"),
        ("photos/green.png", "a green square"),
    ]
    pairs.write_text("".join(json.dumps({"image": i, "caption": c}) + "\n" for i, c in rows))
    assert (
        main(
            ["eval", "retrieval", "--model", str(run), "--annotations", str(pairs), "--json", str(tmp_path / "r.json")]
        )
        == 0
    )
    r = json.loads((tmp_path / "r.json").read_text())
    assert r["images"] == 3 and r["texts"] == 4 and r["i2t_R@5"] == 100.0  # 4 candidates: all within 5


def test_embed_images_and_texts(run, tmp_path, capsys):
    imgs, colours = photo_folder(tmp_path)
    texts = tmp_path / "texts.txt"
    texts.write_text("a red circle\n\na blue star\n")
    out = tmp_path / "emb"
    assert (
        main(
            [
                "embed",
                "--model",
                str(run),
                "--images",
                str(imgs),
                "--texts",
                str(texts),
                "--text",
                "a cross",
                "--out",
                str(out),
                "--batch-size",
                "2",
            ]
        )
        == 0
    )
    img = np.load(out / "image_embeddings.npy")
    txt = np.load(out / "text_embeddings.npy")
    files = (out / "image_files.txt").read_text().splitlines()
    assert img.shape == (3, 16) and txt.shape == (3, 16) and img.dtype == np.float32
    assert [f.split("/")[-1] for f in files] == ["blue.png", "green.png", "red.png"]  # sorted, broken one skipped
    assert (out / "texts.txt").read_text().splitlines() == ["a cross", "a red circle", "a blue star"]
    assert np.allclose(np.linalg.norm(img, axis=1), 1, atol=1e-5)
    assert "skipped 1 sample of 4 (1 unreadable image)" in capsys.readouterr().out
    # the same numbers as the Python API
    model = vlkit.from_pretrained(run / "model").eval()
    tok = vlkit.get_tokenizer("clip")
    with torch.no_grad():
        ref = model.encode_text(**tok(["a cross"], padding="longest"), normalize=True)
    assert np.allclose(txt[0], ref[0].numpy(), atol=1e-5)
    assert main(["embed", "--model", str(run), "--out", str(out)]) == 2
    assert "nothing to embed" in capsys.readouterr().err


def test_eval_a_run_stopped_before_its_end(tmp_path, capsys):
    out = tmp_path / "stopped"
    assert main(["train", *TINY, "--train.max_steps", "6", "--train.output_dir", str(out), "--stop-after", "2"]) == 0
    assert not (out / "model").exists()
    assert main(["eval", "zeroshot", "--model", str(out), "--size", "10", "--json", str(tmp_path / "z.json")]) == 0
    assert json.loads((tmp_path / "z.json").read_text())["images"] == 10
