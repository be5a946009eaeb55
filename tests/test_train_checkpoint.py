"""Checkpoints: atomic writes, RNG round trips, pruning, clear errors."""

import os
import random

import numpy as np
import pytest
import torch

from vlkit.train import checkpoint as ck


def test_rng_state_round_trip_through_a_file(tmp_path):
    torch.manual_seed(1)
    state = ck.rng_state()
    expected = (random.random(), float(np.random.rand()), torch.rand(3).tolist())
    ck.atomic_save({"format": "vlkit-train-checkpoint", "rng": [state]}, tmp_path / "c.pt")
    torch.manual_seed(99)
    random.random()
    np.random.rand()
    ck.set_rng_state(ck.load_checkpoint(tmp_path / "c.pt")["rng"][0])  # loads with weights_only=True
    assert (random.random(), float(np.random.rand()), torch.rand(3).tolist()) == expected


def test_atomic_save_keeps_the_old_file_when_writing_fails(tmp_path, monkeypatch):
    path = tmp_path / "checkpoints" / "step-0000001.pt"
    ck.atomic_save({"format": "vlkit-train-checkpoint", "step": 1}, path)

    def broken_save(obj, f):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        ck.atomic_save({"format": "vlkit-train-checkpoint", "step": 2}, path)
    monkeypatch.undo()
    assert ck.load_checkpoint(path)["step"] == 1  # untouched
    assert os.listdir(path.parent) == ["step-0000001.pt"]  # no temporary file left behind


def test_list_prune_latest(tmp_path):
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.AdamW(model.parameters())
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    for step in (5, 10, 15):
        ck.save_checkpoint(
            tmp_path,
            step=step,
            model=model,
            optimizer=opt,
            scheduler=sched,
            config={"a": 1},
            rng_states=[ck.rng_state()],
            keep=2,
        )
    (tmp_path / "checkpoints" / ".step-0000020.pt.tmp-1").write_bytes(b"half")  # a crashed write: ignored
    assert [s for s, _ in ck.list_checkpoints(tmp_path)] == [10, 15]
    assert ck.latest_checkpoint(tmp_path).name == "step-0000015.pt"
    state = ck.load_checkpoint(ck.latest_checkpoint(tmp_path))
    assert state["step"] == 15 and state["config"] == {"a": 1} and set(state["model"]) == {"weight", "bias"}
    assert ck.latest_checkpoint(tmp_path / "nothing") is None


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        ck.load_checkpoint(tmp_path / "none.pt")
    torch.save({"weights": 1}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a vlkit training checkpoint"):
        ck.load_checkpoint(tmp_path / "other.pt")
    (tmp_path / "junk.pt").write_bytes(b"\x00\x01junk")
    with pytest.raises(ValueError, match="cannot be read"):
        ck.load_checkpoint(tmp_path / "junk.pt")
