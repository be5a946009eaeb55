"""`vlkit train` under torchrun: 2 CPU processes (gloo, DDP, gathered contrastive loss) follow the
same losses as one process on the global batch."""

import json

import pytest

from helpers import TINY_CLIP, as_flags, torchrun_train
from vlkit.train import load_config, train

TINY = [
    *TINY_CLIP,
    "train.log_every=1",
    "train.progress=false",
    "train.plots=false",
    "train.threads=1",
    "optim.warmup_steps=2",
    "optim.lr=3e-3",
    "data.num_workers=0",
    "data.train_size=64",
    "data.val_size=16",
    "train.max_steps=4",
    "train.device=cpu",
]


def losses(out):
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if r.get("split") == "train"]


@pytest.mark.slow
def test_two_processes_match_one_process_on_the_global_batch(tmp_path):
    proc = torchrun_train(as_flags(TINY + ["train.batch_size=4", f"train.output_dir={tmp_path / 'ddp'}"]))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "batch 4 x 2 process(es)" in proc.stdout
    ddp = losses(tmp_path / "ddp")

    single = train(load_config(None, TINY + ["train.batch_size=8", f"train.output_dir={tmp_path / 'one'}"]))
    one = losses(tmp_path / "one")
    assert len(ddp) == len(one) == 4
    # same samples per global batch, gradients averaged over ranks = the one-process gradient
    assert ddp == pytest.approx(one, rel=1e-4, abs=1e-5)
    assert one[-1] < one[0]
    # one checkpoint and one final model, written by rank 0
    assert [p.name for p in (tmp_path / "ddp" / "checkpoints").iterdir()] == ["step-0000004.pt"]
    assert (tmp_path / "ddp" / "model" / "model.safetensors").is_file()
    assert "zeroshot_shape_top1" in (tmp_path / "ddp" / "metrics.jsonl").read_text()
    assert single.step == 4


@pytest.mark.slow
def test_unreadable_image_under_torchrun_trims_every_batch_to_the_shortest(tmp_path):
    from PIL import Image

    rows = ["image,caption"]
    for i in range(8):
        Image.new("RGB", (16, 16), (30 * i, 100, 0)).save(tmp_path / f"{i}.png")
        rows.append(f"{i}.png,a square of colour {i}")
    (tmp_path / "broken.png").write_text("not an image")
    rows.append("broken.png,a broken file")
    (tmp_path / "train.csv").write_text("\n".join(rows) + "\n")
    # 9 files / 2 processes: 4 per process and epoch, one batch each; the broken file shortens one of them
    overrides = TINY + [
        "train.batch_size=4",
        "train.max_steps=3",
        "data.kind=folder",
        "data.val_size=0",
        f"data.train_annotations={tmp_path / 'train.csv'}",
        f"train.output_dir={tmp_path / 'run'}",
    ]
    proc = torchrun_train(as_flags(overrides))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "1 unreadable image" in proc.stdout
    assert len(losses(tmp_path / "run")) == 3


@pytest.mark.slow
def test_a_batch_empty_on_one_process_is_skipped_by_every_process(tmp_path):
    from PIL import Image

    rows = ["image,caption"]
    for i in range(3):
        Image.new("RGB", (16, 16), (60 * i, 100, 0)).save(tmp_path / f"{i}.png")
        rows.append(f"{i}.png,a square of colour {i}")
    (tmp_path / "broken.png").write_text("not an image")
    rows.append("broken.png,a broken file")
    (tmp_path / "train.csv").write_text("\n".join(rows) + "\n")
    # 4 files / 2 processes, batch 1: 2 steps per epoch, one of which finds the broken file on one process
    overrides = TINY + [
        "train.batch_size=1",
        "train.max_steps=4",
        "data.kind=folder",
        "data.val_size=0",
        f"data.train_annotations={tmp_path / 'train.csv'}",
        f"train.output_dir={tmp_path / 'run'}",
    ]
    proc = torchrun_train(as_flags(overrides))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if r.get("split") == "train"]
    assert [r["step"] for r in train_rows] == [1, 2, 3, 4]
    assert sum(r.get("empty_batches", 0) for r in train_rows) == 2  # one per epoch, on every process alike
    assert sum("loss" in r for r in train_rows) == 2


@pytest.mark.slow
def test_a_user_error_under_torchrun_is_one_line_once(tmp_path):
    args = TINY + ["train.batch_size=4", "train.max_steps=1", "data.val_size=0", f"train.output_dir={tmp_path}"]
    train(load_config(None, args))
    proc = torchrun_train(as_flags(args))  # the folder holds that run
    assert proc.returncode != 0
    both = proc.stdout + proc.stderr
    assert both.count("vlkit train: error:") == 1, both[-3000:]
    assert f"vlkit train: error: {tmp_path} holds an earlier run" in proc.stderr
    assert "FileExistsError" not in both
