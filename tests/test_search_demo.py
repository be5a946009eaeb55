"""`make search-demo` in short: a briefly trained CLIP demo model indexes held-out shapes, and text
queries find images of the colour they name far above chance (1/6)."""

from __future__ import annotations

from pathlib import Path

import pytest

from vlkit.cli import main
from vlkit.search import Searcher
from vlkit.search.demo import EXAMPLE_QUERIES, precision_at_k, read_labels
from vlkit.search.demo import main as demo_main

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "clip-shapes.yaml"


@pytest.mark.slow
def test_search_demo_finds_the_colours_it_is_asked_for(tmp_path, capsys):
    run = tmp_path / "run"
    argv = ["train", "--config", str(CONFIG), "--train.output_dir", str(run), "--train.max_steps", "160",
            "--train.batch_size", "64", "--optim.warmup_steps", "20", "--train.eval_every", "0",
            "--train.checkpoint_every", "0", "--data.val_size", "50", "--train.progress", "false"]  # fmt: skip
    assert main(argv) == 0
    capsys.readouterr()
    assert demo_main(["--model", str(run), "--out", str(tmp_path / "demo"), "--count", "300"]) == 0
    printed = capsys.readouterr().out
    assert "300 images indexed" in printed
    assert all(f"precision@10 of {query!r}: " in printed for query, _ in EXAMPLE_QUERIES)
    searcher = Searcher(tmp_path / "demo" / "index")
    labels = read_labels(tmp_path / "demo" / "images")
    colour = [precision_at_k(searcher, labels, f"a {c} shape", {"colour": c}) for c in ("red", "green", "blue")]
    assert sum(colour) / 3 >= 0.6, colour  # chance: 1/6
