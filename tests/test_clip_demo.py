"""A shorter run of the main job (`make clip-demo`): the demo config, through the command line,
learns: the loss falls clearly, zero-shot colour accuracy and retrieval on held-out images are far
above chance. (Shape is learnt later: it reaches 90% only in the full run, see docs/clip-training.md.)"""

import json
from pathlib import Path

import pytest

from vlkit.cli import main

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "clip-shapes.yaml"


@pytest.mark.slow
def test_clip_demo_learns(tmp_path, capsys):
    out = tmp_path / "run"
    argv = [
        "train",
        "--config",
        str(CONFIG),
        "--train.output_dir",
        str(out),
        "--train.max_steps",
        "160",
        "--train.batch_size",
        "64",
        "--optim.warmup_steps",
        "20",
        "--train.eval_every",
        "0",
        "--train.checkpoint_every",
        "0",
        "--data.val_size",
        "300",
        "--train.progress",
        "false",
    ]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train = [r["loss"] for r in rows if r.get("split") == "train"]
    val = [r for r in rows if r.get("split") == "validation"][-1]
    assert train[-1] < 0.75 * train[0], train  # from about ln(64) = 4.2
    # chance: 1/6 for colour; Recall@5 about 5 / (number of distinct captions, ~250) = 2%
    assert val["zeroshot_colour_top1"] >= 70, val
    assert val["i2t_R@5"] >= 20 and val["t2i_R@5"] >= 20, val
    assert "zero-shot top-1 accuracy on 300 held-out images: colour" in printed
    assert "retrieval Recall@1" in printed and "plot:" in printed and "checkpoint:" in printed
