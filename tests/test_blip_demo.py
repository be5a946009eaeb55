"""A shorter run of the BLIP demo (`make blip-demo`): the demo config, through the command line,
trains the captioner and the VQA model together and both learn from the image: held-out captions,
answers and retrieval far above chance, the losses fall, and the run folder holds both models with
their tokenizer. (The full run's figures are in docs/blip-training.md.)"""

import json
from pathlib import Path

import pytest

import vlkit
from vlkit.cli import main

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "blip-shapes.yaml"


@pytest.mark.slow
def test_blip_demo_learns(tmp_path, capsys):
    out = tmp_path / "run"
    argv = [
        "train",
        "--config",
        str(CONFIG),
        "--train.output_dir",
        str(out),
        "--train.max_steps",
        "400",
        "--train.batch_size",
        "64",
        "--optim.warmup_steps",
        "20",
        "--train.eval_every",
        "0",
        "--train.checkpoint_every",
        "0",
        "--data.val_size",
        "200",
        "--train.progress",
        "false",
    ]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if r.get("split") == "train"]
    val = [r for r in rows if r.get("split") == "validation"][-1]
    for loss in ("itc_loss", "lm_loss", "vqa_loss"):
        assert train[-1][loss] < 0.6 * train[0][loss], (loss, train[0][loss], train[-1][loss])
    # Measured (2-core CPU, about 60 s): exact match 12%, CIDEr-D 4.6, VQA 62.5% (colour 96%, size
    # 95%), Recall@5 89% / 83%. Chance: a caption naming 4 random attributes right is 1 in 300
    # (0.3%), and a decoder that ignores the image writes fluent captions worth CIDEr-D about 2.3;
    # an answer of the right type is right 31% of the time (1/6 colour, 1/5 shape and position, 1/2
    # size and yes/no); Recall@5 over the ~140 distinct captions about 4%.
    assert val["caption_exact_match"] >= 5 and val["caption_cider"] >= 3.5, val
    assert val["vqa_accuracy"] >= 50 and val["vqa_accuracy_colour"] >= 80 and val["vqa_accuracy_size"] >= 80, val
    assert val["i2t_R@5"] >= 50 and val["t2i_R@5"] >= 50, val
    assert "itm_i2t_R@1" in val
    for line in (
        "captions of 200 held-out images",
        "VQA accuracy on 200 held-out questions",
        "re-ranked by ITM",
        "checkpoint:",
    ):
        assert line in printed, printed
    captioner, vqa = vlkit.from_pretrained(out / "model"), vlkit.from_pretrained(out / "model" / "vqa")
    assert captioner.config.decoder_context == "image" and vqa.config.decoder_context == "question"
    assert vlkit.get_tokenizer(out / "model").vocab_size == 48
