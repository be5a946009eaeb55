"""WebDataset shards: written by ``vlkit data shard``, read back sample for sample by the
``webdataset`` library; streamed for training split across ranks and workers, each sample once
per epoch, resumed exactly; bad samples skipped and counted."""

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import webdataset as wds
from PIL import Image
from torch.utils.data import DataLoader

from helpers import TINY_CLIP
from vlkit.cli import main
from vlkit.data.folder import ImageTextFolder
from vlkit.data.shards import ShardStream, expand_shards, write_shards
from vlkit.data.skips import SkipReport
from vlkit.train import load_config, train

COLOURS = ["red", "green", "blue", "yellow", "purple", "orange", "white", "black", "gray", "cyan", "pink", "brown"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """24 small images of two formats and their captions in a CSV."""
    root = tmp_path_factory.mktemp("pairs")
    rows = ["image,caption"]
    for i in range(24):
        rng = np.random.default_rng(i)
        ext = "png" if i % 2 else "jpg"
        Image.fromarray(rng.integers(0, 255, (20 + i, 16, 3), dtype=np.uint8)).save(root / f"img{i}.{ext}")
        rows.append(f"img{i}.{ext},a {COLOURS[i % 12]} picture number {i}")
    (root / "train.csv").write_text("\n".join(rows) + "\n")
    return root


@pytest.fixture(scope="module")
def shards(folder, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("shards") / "out"
    assert (
        main(["data", "shard", str(folder / "train.csv"), "--out", str(out), "--shard-size", "4", "--no-progress"]) == 0
    )
    return out


def test_shard_cli_writes_what_webdataset_reads_back(folder, shards, capsys):
    names = sorted(p.name for p in shards.iterdir())
    assert names == [f"shard-{i:06d}.tar" for i in range(6)]
    samples = list(wds.WebDataset(str(shards / "shard-{000000..000005}.tar"), shardshuffle=False))
    assert [s["__key__"] for s in samples] == [f"{i:09d}" for i in range(24)]
    for i, s in enumerate(samples):
        ext = "png" if i % 2 else "jpg"
        assert s[ext] == (folder / f"img{i}.{ext}").read_bytes()  # stored as they are
        assert s["txt"].decode() == f"a {COLOURS[i % 12]} picture number {i}"
        assert b'"path": "img' in s["json"]


def test_resize_stores_a_smaller_jpeg(folder, tmp_path):
    pairs = [(folder / "img23.png", "a caption")]
    summary = write_shards(pairs, tmp_path / "s", shard_size=10, image_size=8)
    (sample,) = wds.WebDataset(str(tmp_path / "s" / "shard-000000.tar"), shardshuffle=False)
    assert min(Image.open(io.BytesIO(sample["jpg"])).size) == 8
    assert summary.samples == 1 and summary.pattern().endswith("shard-000000.tar")


def _keys(stream: ShardStream, workers: int) -> list[list[str]]:
    loader = DataLoader(stream, batch_size=None, num_workers=workers, collate_fn=lambda b: [s["key"] for s in b])
    return list(loader)


@pytest.mark.parametrize("workers", [0, 2])
def test_every_sample_once_per_epoch_across_ranks_and_workers(folder, tmp_path, workers):
    """8 shards of 3 split evenly over 2 ranks x 2 workers: each stream reads 2 shards."""
    write_shards(ImageTextFolder(folder / "train.csv").samples, tmp_path / "s", shard_size=3)
    pattern = str(tmp_path / "s" / "shard-{000000..000007}.tar")
    seen = []
    for rank in range(2):
        stream = ShardStream(pattern, num_samples=24, batch_size=3, rank=rank, world_size=2, shuffle_buffer=5)
        batches = _keys(stream, workers)
        assert len(batches) == len(stream) == 4
        seen += [k for b in batches for k in b]
    assert len(seen) == 24 and len(set(seen)) == 24  # each sample once
    stream.set_epoch(1)
    assert _keys(stream, workers) != batches  # another epoch, another order


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_mid_epoch_gives_the_remaining_batches_exactly(shards, workers):
    stream = ShardStream(str(shards / "shard-{000000..000005}.tar"), num_samples=24, batch_size=2, seed=3)
    stream.set_epoch(2)
    full = _keys(stream, workers)
    stream.set_epoch(2, start=5)
    assert _keys(stream, workers) == full[5:]


def test_bad_samples_are_skipped_and_counted(tmp_path):
    good = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(good, format="PNG")
    shard = tmp_path / "bad.tar"
    with tarfile.open(shard, "w") as tar:
        for name, data in [
            ("a.png", good.getvalue()),
            ("a.txt", b"a red square"),
            ("b.png", b"not an image"),
            ("b.txt", b"broken"),
            ("c.png", good.getvalue()),  # no caption
            ("d.txt", b"no image"),
        ]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    truncated = tmp_path / "truncated.tar"
    truncated.write_bytes(shard.read_bytes()[:1540])  # a.png, then a cut inside a.txt
    stream = ShardStream([str(shard), str(truncated)], num_samples=6, batch_size=6, shuffle_buffer=1)
    (batch,) = DataLoader(stream, batch_size=None, collate_fn=lambda b: b)
    report = SkipReport([s["skipped"] for s in batch if "skipped" in s])
    assert [s["caption"] for s in batch if "skipped" not in s] == ["a red square"]
    # the truncated shard: its a.png without a caption, then the fault itself
    assert report.counts() == {"unreadable image": 1, "empty caption": 2, "missing image": 1, "unreadable shard": 1}


def test_shard_lists_and_errors(shards, tmp_path):
    listing = tmp_path / "shards.txt"
    listing.write_text("\n".join(str(p) for p in sorted(shards.iterdir())) + "\n")
    assert expand_shards(listing) == expand_shards(str(shards / "shard-{000000..000005}.tar"))
    with pytest.raises(FileNotFoundError, match="shard-000008.tar does not exist .2 of 2 shards missing"):
        expand_shards(str(shards / "shard-{000008..000009}.tar"))
    with pytest.raises(ValueError, match="less than one batch"):
        ShardStream(str(listing), num_samples=3, batch_size=4)
    stream = ShardStream(str(shards / "shard-000000.tar"), num_samples=8, batch_size=2)
    with pytest.raises(ValueError, match="1 shards cannot feed 2 streams"):
        _keys(ShardStream(str(shards / "shard-000000.tar"), num_samples=8, batch_size=2, world_size=2), 0)
    assert len(_keys(stream, 0)) == 4  # a stream reads its shards again when an epoch is longer


def test_shard_cli_errors_are_one_line(folder, shards, tmp_path, capsys):
    assert main(["data", "shard", str(folder / "train.csv"), "--out", str(shards), "--no-progress"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["data", "shard", str(folder / "train.csv"), "--out", str(tmp_path / "x"), "--shard-size", "0"]) == 2
    assert "--shard-size must be a positive" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_training_on_shards_resumes_exactly(folder, tmp_path):
    """data.kind: webdataset in the training loop; 2 data workers; 24 samples / batch 4 = 6 steps per
    epoch, so the runs cross an epoch boundary; a run stopped at step 5 and resumed gives the
    uninterrupted run's loss sequence bit for bit."""
    write_shards(ImageTextFolder(folder / "train.csv").samples, tmp_path / "s", shard_size=6)
    common = [
        *TINY_CLIP,
        "data.kind=webdataset",
        f"data.train_shards={tmp_path / 's' / 'shard-{000000..000003}.tar'}",
        "data.train_num_samples=24",
        "data.num_workers=2",
        "train.batch_size=4",
        "train.max_steps=8",
        "train.log_every=1",
        "train.progress=false",
        "train.plots=false",
        "train.threads=1",
        "train.eval_every=0",
    ]

    def losses(out):
        rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        return [(r["step"], r["loss"]) for r in rows if r.get("split") == "train"]

    full = train(load_config(None, [*common, f"train.output_dir={tmp_path / 'full'}"]))
    assert full.step == 8
    expected = losses(tmp_path / "full")
    part = load_config(None, [*common, f"train.output_dir={tmp_path / 'part'}"])
    train(part, stop_after=5)
    train(part, resume=True)
    assert losses(tmp_path / "part") == expected
    with pytest.raises(ValueError, match="data.train_num_samples"):
        no_length = [c for c in common if not c.startswith("data.train_num_samples")]
        train(load_config(None, [*no_length, f"train.output_dir={tmp_path / 'x'}"]))
