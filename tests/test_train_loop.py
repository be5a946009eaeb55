"""The generic training loop: exact resume, summed task losses, logs, plots, skipped data reported."""

import json

import pytest
import torch
from PIL import Image

from helpers import TINY_CLIP
from vlkit.train import load_config, train
from vlkit.train.checkpoint import list_checkpoints, load_checkpoint

TINY = [
    *TINY_CLIP,
    "train.batch_size=8",
    "train.log_every=1",
    "train.progress=false",
    "train.plots=false",
    "train.threads=1",
    "optim.warmup_steps=3",
    "optim.lr=3e-3",
    "data.num_workers=0",
]


def tiny(tmp_path, *extra):
    return load_config(None, TINY + [f"train.output_dir={tmp_path}", *extra])


def train_losses(out):
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"]) for r in rows if r.get("split") == "train"]


def test_resume_gives_the_uninterrupted_loss_sequence(tmp_path):
    # 64 samples / batch 8 = 8 steps per epoch: the runs cross an epoch boundary; random crops
    # (data.augment) draw from the global RNG, so its saved state matters too
    common = ["data.train_size=64", "data.val_size=0", "train.max_steps=12", "data.augment=true"]
    full = train(tiny(tmp_path / "full", *common))
    assert full.step == 12 and not full.stopped_early
    expected = train_losses(tmp_path / "full")
    assert [s for s, _ in expected] == list(range(1, 13))

    # stopped mid-run (as if killed right after its checkpoint), then resumed
    part = train(tiny(tmp_path / "part", *common), stop_after=5)
    assert part.stopped_early and part.step == 5 and part.model_dir is None
    assert [s for s, _ in list_checkpoints(tmp_path / "part")] == [5]
    resumed = train(tiny(tmp_path / "part", *common), resume=True)
    assert resumed.step == 12
    assert train_losses(tmp_path / "part") == expected  # bit for bit

    # killed after the checkpoint of step 4 with metrics logged up to step 7: the resumed run drops
    # the orphaned records and still reproduces the sequence
    crash = tiny(tmp_path / "crash", *common, "train.checkpoint_every=4", "train.keep_checkpoints=0")
    train(crash, stop_after=7)
    (tmp_path / "crash" / "checkpoints" / "step-0000007.pt").unlink()
    train(crash, resume=True)
    assert train_losses(tmp_path / "crash") == expected
    state = load_checkpoint(tmp_path / "crash" / "checkpoints" / "step-0000012.pt")
    assert state["step"] == 12 and state["scheduler"]["last_epoch"] == 12


def test_output_dir_guard_and_missing_checkpoint(tmp_path):
    cfg = tiny(tmp_path, "data.train_size=16", "data.val_size=0", "train.max_steps=1")
    train(cfg)
    with pytest.raises(FileExistsError, match="--resume"):
        train(cfg)
    train(cfg, overwrite=True)
    assert len(train_losses(tmp_path)) == 1
    with pytest.raises(FileNotFoundError):
        train(cfg, resume=tmp_path / "nope.pt")


class TwoLossTask:
    """A stand-in task: a linear model, two named losses; checks the loop sums them."""

    name = "standin"
    tokenizer = None
    validation_loss = "loss"

    def __init__(self):
        self.seen = []

    def build_model(self):
        return torch.nn.Linear(3 * 4 * 4, 2)

    def image_size(self, model):
        return 8

    def transform(self, model, train=False):
        return lambda img: torch.from_numpy(
            __import__("numpy").asarray(img.resize((4, 4)), dtype="float32") / 255
        ).permute(2, 0, 1)

    def collate(self):
        from vlkit.data import ImageTextCollator

        return ImageTextCollator(
            lambda texts, padding: {
                "input_ids": torch.zeros(len(texts), 1, dtype=torch.long),
                "attention_mask": torch.ones(len(texts), 1, dtype=torch.long),
            }
        )

    def batch_size(self, batch):
        return len(batch["captions"])

    def losses(self, model, batch):
        out = model(batch["pixel_values"].flatten(1))  # (B, 2)
        a, b = (out[:, 0] - 1).pow(2).mean(), out[:, 1].pow(2).mean()
        self.seen.append((a.item(), b.item()))
        return {"a_loss": a, "b_loss": b}

    def log_values(self, model):
        return {"bias0": model.bias[0].item()}

    def summary(self, metrics, num_images=None):
        return [f"n {metrics['n']:.0f}"]

    def evaluate(self, model, dataset, **kw):
        from vlkit.train.recipes import EvalOutput

        return EvalOutput({"n": float(len(dataset))}, torch.eye(3), ["x", "y", "z"])


def test_stand_in_task_losses_are_summed_logged_and_learned(tmp_path):
    task = TwoLossTask()
    cfg = tiny(
        tmp_path,
        "data.train_size=64",
        "data.val_size=8",
        "train.max_steps=30",
        "train.log_every=10",
        "train.eval_every=10",
        "train.plots=true",
        "optim.lr=5e-2",
        "optim.weight_decay=0",
    )
    result = train(cfg, recipe=task)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    logs = [r for r in rows if r.get("split") == "train"]
    assert [r["step"] for r in logs] == [10, 20, 30]
    first = logs[0]
    a = sum(x for x, _ in task.seen[:10]) / 10
    b = sum(y for _, y in task.seen[:10]) / 10
    assert first["a_loss"] == pytest.approx(a, rel=1e-5) and first["b_loss"] == pytest.approx(b, rel=1e-5)
    assert first["loss"] == pytest.approx(a + b, rel=1e-5)
    assert {"lr", "samples_per_s", "grad_norm", "bias0", "epoch"} <= set(first)
    assert logs[-1]["loss"] < 0.3 * logs[0]["loss"]  # it learns
    assert [r["step"] for r in rows if r.get("split") == "validation"] == [10, 20, 30]
    assert {p.name for p in result.plots} == {"loss.png", "similarity.png"}
    assert Image.open(tmp_path / "plots" / "loss.png").size[0] > 100
    assert (tmp_path / "config.yaml").is_file() and result.checkpoint.name == "step-0000030.pt"


def test_skipped_training_images_are_reported_at_epoch_end(tmp_path, capsys):
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    rows = ["image,caption"]
    for i in range(10):
        Image.new("RGB", (20, 20), (25 * i, 0, 0)).save(imgs / f"{i}.png")
        rows.append(f"imgs/{i}.png,a red square number {i}")
    (imgs / "bad.png").write_text("not an image")
    (imgs / "empty.png").write_bytes(b"")
    rows += ["imgs/bad.png,broken", "imgs/empty.png,empty", "imgs/0.png,"]
    (tmp_path / "train.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "run"
    cfg = tiny(
        out,
        "data.kind=folder",
        f"data.train_annotations={tmp_path / 'train.csv'}",
        "train.batch_size=11",
        "train.max_steps=3",
    )  # 11 readable files: every batch holds the unreadable one
    train(cfg)
    printed = capsys.readouterr().out
    assert "epoch 0: skipped 3 samples of 13" in printed  # empty caption, zero-size, unreadable
    events = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    events = [e for e in events if e.get("event") == "data_skipped"]
    assert events[0]["epoch"] == 0 and events[0]["count"] == 3
    assert events[0]["reasons"] == {"empty caption": 1, "zero-size file": 1, "unreadable image": 1}


def test_plots_are_skipped_with_a_warning_without_matplotlib(tmp_path, monkeypatch):
    import builtins

    from vlkit.train import plots

    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError("No module named 'matplotlib'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    monkeypatch.setattr(plots, "_warned", False)
    with pytest.warns(UserWarning, match="matplotlib is not installed"):
        assert plots.plot_loss([{"split": "train", "step": 1, "loss": 1.0}], tmp_path / "loss.png") is None
    assert plots.plot_similarity(torch.eye(2), tmp_path / "s.png") is None  # warned once only
    assert not (tmp_path / "loss.png").exists()
