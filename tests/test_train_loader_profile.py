"""The data loader measured alone (vlkit train --profile-loader): batches/s without the model."""

import subprocess
import sys

from helpers import TINY_CLIP, as_flags
from vlkit.train import load_config
from vlkit.train.loader_profile import profile_loader


def test_profile_loader_reads_the_training_batches_without_training(tmp_path):
    cfg = load_config(None, [*TINY_CLIP, "train.batch_size=4", "data.train_size=40", f"train.output_dir={tmp_path}"])
    p = profile_loader(cfg, batches=3)
    assert (p.batches, p.samples, p.batch_size, p.device) == (3, 12, 4, "cpu")
    assert p.batches_per_s > 0 and abs(p.samples_per_s - 4 * p.batches_per_s) < 1e-6 * p.samples_per_s
    assert not (tmp_path / "metrics.jsonl").exists()


def test_cli_profile_loader_prints_batches_per_second(tmp_path):
    args = as_flags([*TINY_CLIP, "train.batch_size=4", "data.train_size=40", f"train.output_dir={tmp_path / 'run'}"])
    done = subprocess.run(
        [sys.executable, "-m", "vlkit", "train", "--profile-loader", "2", *args],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "batches/s" in done.stdout and "samples/s" in done.stdout
    assert not (tmp_path / "run").exists()  # nothing trained, nothing written
