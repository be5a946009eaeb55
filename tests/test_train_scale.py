"""Scale-out under torchrun on 2 CPU processes (gloo): FSDP2 with activation checkpointing follows
DDP's losses, writes sharded checkpoints (torch.distributed.checkpoint) that survive a kill -9 and
resume exactly, load into another number of processes, and become a model folder."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import vlkit
from helpers import TINY_CLIP, as_flags, torchrun_train
from vlkit.cli import main
from vlkit.train import load_config, train

TINY = [
    *TINY_CLIP,
    "train.log_every=1",
    "train.progress=false",
    "train.plots=false",
    "train.threads=1",
    "optim.warmup_steps=2",
    "optim.lr=3e-3",
    "data.train_size=64",
    "data.val_size=16",
    "train.batch_size=4",
    "train.max_steps=20",
    "train.checkpoint_every=5",
    "train.eval_every=0",
    "train.device=cpu",
]
FSDP = ["train.strategy=fsdp", "train.activation_checkpointing=true"]


def losses(out: Path) -> list[float]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if r.get("split") == "train"]


def _launch(overrides: list[str], launcher: list[str] | None = None) -> subprocess.Popen:
    """``vlkit train`` under torchrun (default: one launcher, 2 processes), in its own process group."""
    vlkit_script = Path(sys.executable).parent / "vlkit"
    launcher = launcher or ["--standalone", "--nproc_per_node", "2"]
    cmd = [sys.executable, "-m", "torch.distributed.run", *launcher, "--no-python", str(vlkit_script), "train",
           *as_flags(overrides)]  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)


@pytest.fixture(scope="module")
def ddp(tmp_path_factory) -> Path:
    """The reference: one torchrun launcher, 2 processes, DDP."""
    out = tmp_path_factory.mktemp("ddp")
    proc = torchrun_train(as_flags([*TINY, f"train.output_dir={out}"]))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


@pytest.mark.slow
def test_two_launchers_rendezvous_like_two_nodes(ddp, tmp_path):
    """torchrun --nnodes 2 with c10d rendezvous on 127.0.0.1, one process per "node", trains the
    same steps as one launcher with two processes."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "nodes"
    rdzv = ["--nnodes", "2", "--nproc_per_node", "1", "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}",
            "--rdzv-id", "vlkit-test"]  # fmt: skip
    nodes = [_launch([*TINY, f"train.output_dir={out}", "train.max_steps=3"], rdzv) for _ in range(2)]
    for node in nodes:
        assert node.wait(timeout=300) == 0, node.stderr.read().decode()[-3000:]
    # the first 3 steps' learning rates (warmup) do not depend on max_steps
    assert losses(out) == pytest.approx(losses(ddp)[:3], rel=1e-6, abs=1e-6)


@pytest.mark.slow
def test_fsdp_follows_ddp_and_resumes_exactly_after_a_kill(ddp, tmp_path):
    fsdp = torchrun_train(as_flags([*TINY, *FSDP, f"train.output_dir={tmp_path / 'fsdp'}"]))
    assert fsdp.returncode == 0, fsdp.stderr[-3000:]
    expected = losses(tmp_path / "fsdp")
    assert len(expected) == 20
    assert expected == pytest.approx(losses(ddp), rel=1e-5, abs=1e-5)
    dcp = sorted(p.name for p in (tmp_path / "fsdp" / "checkpoints").iterdir())
    assert dcp == ["step-0000015.dcp", "step-0000020.dcp"]  # keep_checkpoints=2, folders
    assert {"__0_0.distcp", "__1_0.distcp", "meta.pt"} <= {
        p.name for p in (tmp_path / "fsdp" / "checkpoints" / dcp[-1]).iterdir()
    }
    ours = vlkit.from_pretrained(tmp_path / "fsdp" / "model")  # gathered whole at the end
    theirs = vlkit.from_pretrained(ddp / "model")
    assert all(
        torch.allclose(a, b, atol=1e-4) for a, b in zip(ours.state_dict().values(), theirs.state_dict().values())
    )

    # kill -9 every process once the step-10 checkpoint exists, then resume: the same losses
    out = tmp_path / "killed"
    proc = _launch([*TINY, *FSDP, f"train.output_dir={out}"])
    deadline = time.time() + 240
    while not (out / "checkpoints" / "step-0000010.dcp").is_dir() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode != 0, "the run ended before it could be killed"
    resumed = torchrun_train(as_flags([*TINY, *FSDP, f"train.output_dir={out}"]) + ["--resume"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert losses(out) == expected

    # the sharded checkpoint of 2 processes resumes in one, and converts to a model folder
    one = train(
        load_config(None, [*TINY, *FSDP, f"train.output_dir={tmp_path / 'fsdp'}", "train.max_steps=22"]), resume=True
    )
    assert one.step == 22 and losses(tmp_path / "fsdp")[:20] == expected
    folder = tmp_path / "converted"
    assert (
        main(["convert", str(tmp_path / "fsdp" / "checkpoints" / "step-0000020.dcp"), "--to", "vlkit", str(folder)])
        == 0
    )
    converted = vlkit.from_pretrained(folder)
    assert all(torch.equal(a, b) for a, b in zip(converted.state_dict().values(), ours.state_dict().values()))


def test_an_unknown_strategy_is_a_one_line_error(tmp_path, capsys):
    args = ["train", *as_flags([*TINY, f"train.output_dir={tmp_path}", "train.strategy=zero3"])]
    assert main(args) == 2
    assert "train.strategy must be one of ('ddp', 'fsdp'), got 'zero3'" in capsys.readouterr().err
    assert not (tmp_path / "checkpoints").exists()
