"""vlkit index build / update / export and vlkit search: the index on disk, kept in sync with its folder."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from search_helpers import shape_images, tiny_clip
from vlkit.cli import main
from vlkit.search import Searcher, build_faiss, read_index, recall_at_k
from vlkit.search import store as store_module


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return tiny_clip(tmp_path_factory.mktemp("clip") / "clip")


@pytest.fixture
def images(tmp_path) -> Path:
    folder = tmp_path / "photos"
    shape_images(folder, 24)
    (folder / "broken.png").write_bytes(b"this is no image")
    (folder / "notes.txt").write_text("not an image file at all")
    return folder


def build(model, images, out, *extra) -> int:
    return main(["index", "build", "--model", str(model), "--images", str(images), "--out", str(out),
                 "--workers", "0", *extra])  # fmt: skip


def test_build_stores_relative_paths_metadata_and_skips_bad_files(model, images, tmp_path, capsys):
    assert build(model, images, tmp_path / "idx") == 0
    out = capsys.readouterr().out
    assert "24 images indexed" in out and "broken.png" in out and "unreadable image" in out
    data = read_index(tmp_path / "idx")
    paths = [e.path for e in data.entries]
    assert paths == sorted(paths) and len(paths) == 24 and "sub/0000.png" in paths and "broken.png" not in paths
    entry = data.entries[data.positions["0001.png"]]
    st = (images / "0001.png").stat()
    assert (entry.size, entry.mtime_ns) == (st.st_size, st.st_mtime_ns) and len(entry.sha256) == 64
    assert data.info["root"] == str(images.resolve()) and data.info["ann"] == "flat"
    assert np.allclose(np.linalg.norm(data.embeddings, axis=1), 1, atol=1e-5)
    assert data.faiss_index.ntotal == 24


def test_search_cli_text_and_image_match_exact_cosine(model, images, tmp_path, capsys):
    build(model, images, tmp_path / "idx")
    capsys.readouterr()
    assert main(["search", str(tmp_path / "idx"), "--image", str(images / "0005.png"), "-k", "3", "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert hits[0] == {"path": "0005.png", "score": pytest.approx(1.0, abs=1e-5)} and len(hits) == 3
    searcher = Searcher(tmp_path / "idx")
    data = searcher.data
    expected = data.embeddings @ searcher.text_vector("a large blue star")[0]  # (N,)
    assert main(["search", str(tmp_path / "idx"), "--text", "a large blue star", "-k", "5"]) == 0
    lines = capsys.readouterr().out.splitlines()
    got = [line.split()[1] for line in lines]
    assert got == [data.entries[i].path for i in np.argsort(-expected)[:5]]
    assert [float(line.split()[0]) for line in lines] == pytest.approx(np.sort(expected)[::-1][:5], abs=1e-4)


def test_build_refuses_existing_index_without_overwrite(model, images, tmp_path, capsys):
    build(model, images, tmp_path / "idx")
    assert build(model, images, tmp_path / "idx") == 2
    assert "already exists" in capsys.readouterr().err
    assert build(model, images, tmp_path / "idx", "--overwrite") == 0
    assert read_index(tmp_path / "idx").version == "v000002"
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "keep.txt").write_text("mine")
    assert build(model, images, tmp_path / "other", "--overwrite") == 2
    assert "is not an index" in capsys.readouterr().err


def test_update_embeds_only_new_and_changed_files_and_drops_deleted(model, images, tmp_path, capsys):
    build(model, images, tmp_path / "idx")
    before = read_index(tmp_path / "idx")
    (images / "0002.png").unlink()  # deleted
    shape_images(images, 2, start=100)  # 2 new
    data = (images / "0004.png").read_bytes()
    (images / "renamed.png").write_bytes(data)  # a copy: same content, reused
    os.utime(images / "0007.png")  # touched, same content: reused
    from vlkit.data.synthetic import ShapesDataset

    ShapesDataset("train", size=1, image_size=32).image(0).save(images / "0008.png")  # changed content
    capsys.readouterr()
    assert main(["index", "update", str(tmp_path / "idx"), "--workers", "0"]) == 0
    out = capsys.readouterr().out
    assert "3 embedded" in out and "1 removed" in out, out
    after = read_index(tmp_path / "idx")
    paths = {e.path for e in after.entries}
    assert "0002.png" not in paths and {"0100.png", "renamed.png", "0008.png"} <= paths and len(paths) == 24 - 1 + 2 + 1
    row = lambda d, p: d.embeddings[d.positions[p]]
    assert np.array_equal(row(after, "renamed.png"), row(before, "0004.png"))
    assert np.array_equal(row(after, "0007.png"), row(before, "0007.png"))
    assert not np.allclose(row(after, "0008.png"), row(before, "0008.png"))
    searcher = Searcher(tmp_path / "idx")
    assert searcher.similar("0100.png", k=3)[0].path != "0100.png"
    assert main(["search", str(tmp_path / "idx"), "--image", str(images / "0101.png"), "-k", "1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["path"] == "0101.png"


def test_query_with_another_model_is_refused(model, images, tmp_path, capsys):
    build(model, images, tmp_path / "idx")
    other = tiny_clip(tmp_path / "other-clip", seed=1)
    capsys.readouterr()
    code = main(["search", str(tmp_path / "idx"), "--text", "a circle", "--model", str(other)])
    err = capsys.readouterr().err
    assert code == 2 and "is not the model index" in err and "weights differ" in err and "Traceback" not in err
    assert main(["index", "update", str(tmp_path / "idx"), "--model", str(other), "--workers", "0"]) == 2
    assert main(["search", str(tmp_path / "nothing"), "--text", "x"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_failed_write_leaves_previous_version_current(model, images, tmp_path, monkeypatch):
    build(model, images, tmp_path / "idx")
    shape_images(images, 3, start=200)

    def disk_full(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(store_module, "_write_entries", disk_full)
    assert main(["index", "update", str(tmp_path / "idx"), "--workers", "0"]) == 2
    data = read_index(tmp_path / "idx")
    assert data.version == "v000001" and len(data.entries) == 24
    assert sorted(p.name for p in (tmp_path / "idx").iterdir()) == [".lock", "CURRENT", "v000001"]


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "vlkit", *args]


def test_killed_update_leaves_previous_index_usable(model, images, tmp_path, capsys):
    """SIGKILL an update while it embeds: the index still answers from the previous version, and
    the next update finishes the work and clears what the killed one left."""
    index = tmp_path / "idx"
    build(model, images, index)
    shape_images(images, 120, start=1000)  # enough work that the update is still running when killed
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", PYTHONPATH=str(Path(__file__).parents[1] / "src"))
    proc = subprocess.Popen(_cli("index", "update", str(index), "--workers", "0", "--batch-size", "8"), env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    line = proc.stdout.readline()  # printed after the plan, before embedding
    assert "to embed" in line, line
    proc.send_signal(signal.SIGKILL)  # while it embeds the 120 new images
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    data = read_index(index)
    assert data.version == "v000001" and len(data.entries) == 24
    capsys.readouterr()
    assert main(["search", str(index), "--image", str(images / "0004.png"), "-k", "1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["path"] == "0004.png"
    assert main(["index", "update", str(index), "--workers", "0"]) == 0
    assert len(read_index(index).entries) == 144
    assert sorted(p.name for p in index.iterdir()) == [".lock", "CURRENT", "v000001", "v000002"]


def test_killed_between_rename_and_current_keeps_previous(model, images, tmp_path, monkeypatch):
    """A version folder renamed into place whose CURRENT was never written is ignored, then removed."""
    index = tmp_path / "idx"
    build(model, images, index)
    real = store_module.write_text

    def killed(path, text):
        raise KeyboardInterrupt  # as a kill between the two renames

    monkeypatch.setattr(store_module, "write_text", killed)
    shape_images(images, 2, start=300)
    assert main(["index", "update", str(index), "--workers", "0"]) == 130
    assert read_index(index).version == "v000001" and (index / "v000002").is_dir()
    monkeypatch.setattr(store_module, "write_text", real)
    assert main(["index", "update", str(index), "--workers", "0"]) == 0
    assert read_index(index).version == "v000003" and len(read_index(index).entries) == 26
    assert not (index / "v000002").exists()


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_ann_recall_at_10_against_exact(kind):
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(50, 64))
    x = centres[rng.integers(0, 50, 3000)] + 0.6 * rng.normal(size=(3000, 64))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)  # (N, D)
    recall = recall_at_k(build_faiss(x, kind), x, k=10, queries=500)
    assert recall >= 0.95, recall
    assert recall_at_k(build_faiss(x, "flat"), x, k=10, queries=500) == 1.0


def test_build_with_ann_prints_recall(model, images, tmp_path, capsys):
    assert build(model, images, tmp_path / "idx", "--ann", "hnsw") == 0
    out = capsys.readouterr().out
    assert "approximate index hnsw (M=16, efConstruction=40): efSearch=" in out and "(target 0.95)" in out
    info = read_index(tmp_path / "idx").info
    assert info["recall_at_10"] >= 0.95 and info["ann_tuning"]["parameter"] == "efSearch"
    assert build(model, images, tmp_path / "idx2", "--ann", "ivf", "--ann-recall", "1.5") == 2
    assert "must be in (0, 1], got 1.5" in capsys.readouterr().err


def test_export_parquet_rows_match_index(model, images, tmp_path, capsys):
    import pyarrow.parquet as pq

    build(model, images, tmp_path / "idx")
    assert main(["index", "export", str(tmp_path / "idx"), "--parquet", str(tmp_path / "out.parquet")]) == 0
    table = pq.read_table(tmp_path / "out.parquet")
    data = read_index(tmp_path / "idx")
    assert table.column("path").to_pylist() == [e.path for e in data.entries]
    assert np.array_equal(np.array(table.column("embedding").to_pylist(), dtype=np.float32), data.embeddings)
    assert json.loads(table.schema.metadata[b"vlkit"])["identity"] == data.info["identity"]


def test_classify_writes_csv_of_labels(model, images, tmp_path, capsys):
    out = tmp_path / "labels.csv"
    code = main(["classify", "--model", str(model), "--images", str(images), "--classes", "circle, square,star",
                 "--out", str(out)])  # fmt: skip
    assert code == 0
    rows = [line.split(",") for line in out.read_text().splitlines()]
    assert rows[0] == ["path", "label", "score", "circle", "square", "star"] and len(rows) == 25
    for _path, label, score, *scores in rows[1:]:
        scores = [float(s) for s in scores]
        assert label == ["circle", "square", "star"][int(np.argmax(scores))] and float(score) == max(scores)
    assert "broken.png" in capsys.readouterr().err
    assert main(["classify", "--model", str(model), "--images", str(images), "--classes", "circle"]) == 2


@pytest.mark.slow
def test_torchrun_build_matches_single_process(model, images, tmp_path):
    build(model, images, tmp_path / "single")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(Path(__file__).parents[1] / "src"))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "vlkit",
           "index", "build", "--model", str(model), "--images", str(images), "--out", str(tmp_path / "multi"),
           "--workers", "0", "--device", "cpu"]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("24 images indexed") == 1  # rank 0 alone reports
    single, multi = read_index(tmp_path / "single"), read_index(tmp_path / "multi")
    assert [e.path for e in multi.entries] == [e.path for e in single.entries]
    assert np.allclose(multi.embeddings, single.embeddings, atol=1e-5)


def test_build_with_captioner_stores_captions_and_update_keeps_captioning(model, images, tmp_path):
    import torch

    import vlkit
    from vlkit.data.images import load_image
    from vlkit.search.assist import Assistant

    torch.manual_seed(0)
    blip = vlkit.create_model("blip-tiny", text_encoder=False, retrieval_heads=False)
    with torch.no_grad():
        for p in blip.parameters():
            p.add_(torch.randn_like(p) * 0.2)  # make the image matter to the random decoder
    blip_folder = str(blip.save_pretrained(tmp_path / "blip"))
    assert build(model, images, tmp_path / "idx", "--captioner", blip_folder) == 0
    data = read_index(tmp_path / "idx")
    assistant = Assistant.load(blip_folder)
    entry = data.entries[data.positions["0004.png"]]
    assert entry.caption and entry.caption == assistant.caption(load_image(images / "0004.png"))
    assert all(e.caption for e in data.entries)
    shape_images(images, 1, start=500)
    assert main(["index", "update", str(tmp_path / "idx"), "--workers", "0"]) == 0
    data = read_index(tmp_path / "idx")
    assert data.entries[data.positions["0500.png"]].caption == assistant.caption(load_image(images / "0500.png"))


def test_auto_workers_decode_here_for_small_files_on_a_cpu(tmp_path, monkeypatch):
    from PIL import Image

    from vlkit.search.build import auto_workers

    small, large = tmp_path / "small.png", tmp_path / "large.png"
    Image.new("RGB", (64, 64)).save(small)
    Image.new("RGB", (256, 256)).save(large)
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    assert auto_workers([small] * 20, 32, "cpu") == 0  # 4x the input's pixels: decoding here is cheaper
    assert auto_workers([large] * 20, 32, "cpu") == 4
    assert auto_workers([small] * 20, 32, "cuda") == 4  # the model is elsewhere: the cores are free
    assert auto_workers([tmp_path / "gone.png"] * 3, 32, "cpu") == 0
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    assert auto_workers([large] * 20, 32, "cpu") == 1
