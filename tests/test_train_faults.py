"""`vlkit train` under faults a user meets: unreadable batches, --overwrite, a torn metrics log, a
changed model, a corrupt newest checkpoint, a full disk, bad values, resuming a finished run.
Each ends in the work done or one line `vlkit train: error: ...`, and loses nothing."""

import errno
import io
import json

import pytest
import torch
from PIL import Image

from helpers import TINY_CLIP, as_flags
from vlkit.cli import main
from vlkit.data import ResumableSampler
from vlkit.train import plots
from vlkit.train.checkpoint import list_checkpoints, load_checkpoint
from vlkit.train.progress import Progress

TINY = [
    *as_flags(TINY_CLIP),
    "--train.batch_size",
    "4",
    "--train.log_every=1",
    "--train.progress",
    "false",
    "--train.plots",
    "false",
    "--train.threads",
    "1",
    "--data.train_size",
    "16",
    "--data.val_size",
    "0",
    "--optim.warmup_steps",
    "1",
]


def records(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("vlkit train: error: "), err
    return err


def truncated_png(path):
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 10, 10)).save(buf, format="PNG")
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])


def test_a_batch_of_unreadable_samples_is_skipped_also_when_resumed_at_it(tmp_path, capsys):
    rows = ["image,caption"]
    for i in range(4):
        Image.new("RGB", (16, 16), (60 * i, 100, 0)).save(tmp_path / f"{i}.png")
        rows.append(f"{i}.png,a square of colour {i}")
    truncated_png(tmp_path / "cut.png")
    rows.append("cut.png,a truncated file")
    (tmp_path / "train.csv").write_text("\n".join(rows) + "\n")
    # batch 1: 5 steps per epoch, one of them is the truncated image (row 4)
    empty = [e * 5 + ResumableSampler(5, seed=0).indices(e).index(4) + 1 for e in range(2)]
    assert empty[1] > 1
    args = [
        *TINY,
        "--train.batch_size",
        "1",
        "--data.kind",
        "folder",
        "--data.train_annotations",
        str(tmp_path / "train.csv"),
        "--train.max_steps",
        "10",
        "--train.output_dir",
        str(tmp_path / "run"),
    ]
    # stopped right before the empty batch, then resumed at it
    assert main(["train", *args, "--stop-after", str(empty[1] - 1)]) == 0
    assert main(["train", *args, "--resume"]) == 0
    out = capsys.readouterr().out
    assert "1 unreadable image" in out and "done: step 10" in out
    rows = records(tmp_path / "run")
    train = [r for r in rows if r.get("split") == "train"]
    assert [r["step"] for r in train] == list(range(1, 11))
    assert [r["step"] for r in train if r.get("empty_batches")] == empty
    assert all("loss" not in r for r in train if r.get("empty_batches"))
    assert all("loss" in r for r in train if not r.get("empty_batches"))
    assert {e["reasons"]["unreadable image"] for e in rows if e.get("event") == "data_skipped"} == {1}


def test_an_epoch_without_a_readable_sample_is_an_error(tmp_path, capsys):
    truncated_png(tmp_path / "cut.png")
    (tmp_path / "train.csv").write_text("image,caption\ncut.png,a truncated file\n")
    assert (
        main(
            [
                "train",
                *TINY,
                "--train.batch_size",
                "1",
                "--data.kind",
                "folder",
                "--data.train_annotations",
                str(tmp_path / "train.csv"),
                "--train.max_steps",
                "3",
                "--train.output_dir",
                str(tmp_path / "r"),
            ]
        )
        == 2
    )
    assert "no sample of training epoch 0 could be read" in error_line(capsys)


def test_overwrite_removes_all_of_the_earlier_run_and_only_that(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *TINY, "--train.max_steps", "2", "--train.output_dir", str(out)]) == 0
    assert (out / "model" / "model.safetensors").is_file()
    (out / "notes.txt").write_text("mine")
    orphan = out / "checkpoints" / ".step-0000003.pt.tmp-4242"
    orphan.write_bytes(b"half a checkpoint")
    assert main(["train", *TINY, "--train.max_steps", "4", "--train.output_dir", str(out), "--stop-after", "1"]) == 2
    assert "--overwrite" in error_line(capsys)
    assert (
        main(
            [
                "train",
                *TINY,
                "--train.max_steps",
                "4",
                "--train.output_dir",
                str(out),
                "--stop-after",
                "1",
                "--overwrite",
            ]
        )
        == 0
    )
    assert not (out / "model").exists()  # `vlkit eval --model RUN` cannot meet the old model
    assert not orphan.exists() and (out / "notes.txt").read_text() == "mine"
    assert [s for s, _ in list_checkpoints(out)] == [1]
    assert [r["step"] for r in records(out)] == [1]
    # --resume cleans interrupted writes too
    orphan.write_bytes(b"half a checkpoint")
    assert main(["train", *TINY, "--train.max_steps", "2", "--train.output_dir", str(out), "--resume"]) == 0
    assert not orphan.exists() and f"removed {orphan}" in capsys.readouterr().out


def test_torn_metrics_line_is_dropped_and_a_damaged_one_named(tmp_path, capsys):
    out = tmp_path / "run"
    args = [*TINY, "--train.max_steps", "4", "--train.output_dir", str(out)]
    assert main(["train", *args, "--stop-after", "2"]) == 0
    with (out / "metrics.jsonl").open("a") as f:
        f.write('{"split": "train", "step": 3, "lo')  # killed mid-write
    assert main(["train", *args, "--stop-after", "3", "--resume"]) == 0
    assert f"dropped the torn last line of {out / 'metrics.jsonl'}" in capsys.readouterr().out
    assert [r["step"] for r in records(out)] == [1, 2, 3]
    lines = (out / "metrics.jsonl").read_text().splitlines()
    (out / "metrics.jsonl").write_text("\n".join([lines[0], "garbage", *lines[1:]]) + "\n")
    assert main(["train", *args, "--resume"]) == 2
    assert f"{out / 'metrics.jsonl'}, line 2: not a metrics record" in error_line(capsys)


def test_resume_with_a_changed_model_or_task_is_one_line(tmp_path, capsys):
    out = tmp_path / "run"
    args = [*TINY, "--train.max_steps", "3", "--train.output_dir", str(out)]
    assert main(["train", *args, "--stop-after", "1"]) == 0
    assert main(["train", *args, "--resume", "--set", "model.embed_dim=32", "--set", "model.text.width=64"]) == 2
    err = error_line(capsys)
    assert "model.embed_dim, model.text.width" in err and "cannot resume" in err
    assert main(["train", *args, "--resume", "--task", "albef"]) == 2
    assert "differs from the checkpoint's in task" in error_line(capsys)
    assert main(["train", *args, "--resume", "--stop-after", "2", "--set", "optim.min_lr=1e-5"]) == 0
    assert "note: the config differs from the checkpoint's in ['optim.min_lr']" in capsys.readouterr().out


def test_a_corrupt_newest_checkpoint_falls_back_to_the_one_before(tmp_path, capsys):
    out = tmp_path / "run"
    args = [*TINY, "--train.max_steps", "4", "--train.output_dir", str(out), "--train.checkpoint_every", "1"]
    assert main(["train", *args, "--stop-after", "2"]) == 0
    newest = out / "checkpoints" / "step-0000002.pt"
    newest.write_bytes(newest.read_bytes()[:1000])  # truncated
    assert main(["train", *args, "--resume", "--stop-after", "3"]) == 0
    printed = capsys.readouterr().out
    assert f"warning: checkpoint {newest} cannot be read" in printed
    assert f"resumed from {out / 'checkpoints' / 'step-0000001.pt'} at step 1" in printed
    for _, p in list_checkpoints(out):
        p.write_bytes(b"junk")
    assert main(["train", *args, "--resume"]) == 2
    err = error_line(capsys)
    assert "no usable checkpoint" in err and "step-0000003.pt" in err and "step-0000002.pt" in err


def test_disk_full_while_checkpointing_keeps_the_earlier_checkpoints(tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    real_save = torch.save

    def disk_full_at_step_2(obj, f, *a, **kw):
        if isinstance(obj, dict) and obj.get("step") == 2:
            f.write(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *a, **kw)

    monkeypatch.setattr(torch, "save", disk_full_at_step_2)
    assert (
        main(
            ["train", *TINY, "--train.max_steps", "3", "--train.output_dir", str(out), "--train.checkpoint_every", "1"]
        )
        == 2
    )
    err = error_line(capsys)
    assert "No space left on device" in err and "step-0000002.pt" in err and "earlier checkpoints are kept" in err
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-0000001.pt"]
    assert load_checkpoint(out / "checkpoints" / "step-0000001.pt")["step"] == 1


@pytest.mark.parametrize(
    "setting, message",
    [
        (["--optim.lr", "inf"], "optim.lr must be a positive finite number, got inf"),
        (["--optim.lr", "nan"], "optim.lr must be a positive finite number, got nan"),
        (["--optim.lr", "0"], "optim.lr must be a positive finite number, got 0.0"),
        (["--train.threads", "-1"], "train.threads must be 0 (torch's default) or positive, got -1"),
        (["--optim.warmup_steps", "-5"], "optim.warmup_steps must be 0 or positive, got -5"),
        (["--stop-after", "0"], "--stop-after must be at least 1, got 0"),
    ],
)
def test_bad_values_are_one_line_errors(tmp_path, capsys, setting, message):
    assert main(["train", *TINY, "--train.output_dir", str(tmp_path / "r"), *setting]) == 2
    assert error_line(capsys) == f"vlkit train: error: {message}"
    assert not (tmp_path / "r").exists()


def test_resuming_a_finished_run_adds_no_record(tmp_path, capsys):
    out = tmp_path / "run"
    args = [*TINY, "--data.val_size", "8", "--train.max_steps", "2", "--train.output_dir", str(out)]
    assert main(["train", *args]) == 0
    before = (out / "metrics.jsonl").read_text()
    assert sum(r.get("split") == "validation" for r in records(out)) == 1
    capsys.readouterr()
    assert main(["train", *args, "--resume"]) == 0
    assert (out / "metrics.jsonl").read_text() == before
    printed = capsys.readouterr().out
    assert "done: step 2" in printed and "zero-shot top-1 accuracy" in printed  # the summary from the log


def test_progress_prints_plain_lines_when_not_a_terminal(tmp_path, capsys):
    assert (
        main(
            [
                "train",
                *TINY,
                "--train.progress",
                "true",
                "--train.max_steps",
                "20",
                "--train.log_every",
                "2",
                "--train.output_dir",
                str(tmp_path / "r"),
            ]
        )
        == 0
    )
    err = capsys.readouterr().err
    assert "\r" not in err
    lines = [line for line in err.splitlines() if line.startswith("step ")]
    assert [line.split(":")[0] for line in lines] == [f"step {s}/20" for s in range(2, 21, 2)]
    assert "loss " in lines[-1] and "lr " in lines[-1]


def test_progress_lines_are_about_twenty_a_run():
    stream = io.StringIO()
    progress = Progress(total=1000, initial=0, enabled=True, stream=stream)
    for step in range(1, 1001):
        progress.update()
        if step % 10 == 0:
            progress.show(step, {"loss": "1.0"})
    progress.close()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 20 and lines[0] == "step 50/1000: loss 1.0" and lines[-1].startswith("step 1000/1000")


def test_loss_plot_labels_each_curve_for_what_it_is():
    from vlkit.train.recipes import BLIPRecipe, CLIPRecipe

    blip = [
        {"split": "train", "step": 10, "loss": 6.0, "itc_loss": 1.0, "itm_loss": 2.0, "lm_loss": 3.0},
        {"split": "validation", "step": 10, "loss": 0.9, "i2t_R@1": 50.0},
        {"event": "data_skipped", "step": 10, "count": 1},
    ]
    curves = plots.loss_curves(blip, validation_loss=BLIPRecipe.validation_loss)
    assert curves == {
        "train: total (sum of the losses)": [(10, 6.0)],
        "train: itc_loss": [(10, 1.0)],
        "train: itm_loss": [(10, 2.0)],
        "train: lm_loss": [(10, 3.0)],
        "validation: itc_loss": [(10, 0.9)],
    }
    clip = [
        {"split": "train", "step": 1, "loss": 2.0, "contrastive_loss": 2.0},
        {"split": "validation", "step": 1, "loss": 2.5},
    ]
    assert plots.loss_curves(clip, validation_loss=CLIPRecipe.validation_loss) == {
        "train: contrastive_loss": [(1, 2.0)],
        "validation: contrastive_loss": [(1, 2.5)],
    }


def test_remove_run_keeps_what_vlkit_did_not_write(tmp_path):
    from vlkit.train.run_folder import holds_run, remove_run

    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "weights.bin").write_bytes(b"a user's own model")  # not a vlkit model folder
    (tmp_path / "plots").mkdir()
    (tmp_path / "plots" / "mine.png").write_bytes(b"png")
    (tmp_path / "plots" / "loss.png").write_bytes(b"png")
    (tmp_path / "metrics.jsonl").write_text("{}\n")
    assert holds_run(tmp_path)
    assert sorted(p.name for p in remove_run(tmp_path)) == ["loss.png", "metrics.jsonl"]
    assert (tmp_path / "model" / "weights.bin").exists() and (tmp_path / "plots" / "mine.png").exists()
    assert not holds_run(tmp_path)
