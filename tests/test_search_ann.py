"""Approximate indexes tuned to a target recall: the chosen search setting, its recall on queries
the index never saw, and the setting kept on disk and used by queries."""

from __future__ import annotations

import json

import numpy as np
import pytest

from vlkit.search import Entry, IndexData, build_ann, read_index, write_index
from vlkit.search.ann import SEARCH_PARAMETER, _empty_index, _ivf_list_ranks, _recall, set_search_parameter


def mixture(rng, centres: np.ndarray, n: int) -> np.ndarray:
    """``n`` unit vectors (n, D) around ``centres`` (C, D), as much noise as signal per dimension."""
    x = centres[rng.integers(0, len(centres), n)] + rng.standard_normal((n, centres.shape[1]))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def clustered():
    """5000 stored vectors of 50 clusters (D=32), 500 fresh queries from the same clusters, and the
    queries' exact 10 nearest."""
    faiss = pytest.importorskip("faiss")
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((50, 32))
    x, queries = mixture(rng, centres, 5000), mixture(rng, centres, 500)
    _, truth = faiss.knn(queries, x, 10, metric=faiss.METRIC_INNER_PRODUCT)  # (500, 10)
    return x, queries, truth


def current_setting(index, name: str) -> int:
    import faiss

    inner = faiss.downcast_index(index.index) if isinstance(index, faiss.IndexIDMap) else index
    return int(inner.hnsw.efSearch) if name == "efSearch" else int(inner.nprobe)


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_tuned_recall_reaches_the_target_on_queries_the_index_never_saw(kind, clustered):
    x, queries, truth = clustered
    index, tuning = build_ann(x, kind, target=0.95)
    assert tuning.parameter == SEARCH_PARAMETER[kind] and tuning.queries == 500 and tuning.reached
    assert tuning.recall >= 0.95 and current_setting(index, tuning.parameter) == tuning.value
    assert index.ntotal == 5000 and sorted(index.search(x[:50], 1)[1][:, 0].tolist()) == list(range(50))
    assert _recall(index.search(queries, 10)[1], truth) >= 0.93  # fresh queries: the estimate holds
    widest = 4096 if kind == "hnsw" else tuning.structure["nlist"]
    assert tuning.value < widest / 4  # the tuning found a narrow search, not the exhaustive one
    loose, low = build_ann(x, kind, target=0.8)
    assert low.value <= tuning.value and low.recall >= 0.8
    assert _recall(loose.search(queries, 10)[1], truth) >= 0.78


def test_ivf_reaches_even_full_recall_and_a_bad_target_is_refused(clustered):
    x, _, _ = clustered
    _, tuning = build_ann(x, "ivf", target=1.0)
    assert tuning.reached and tuning.value <= tuning.structure["nlist"]  # all lists probed is exact
    with pytest.raises(ValueError, match="target recall"):
        build_ann(x, "hnsw", target=1.5)


def test_tuned_setting_is_stored_and_used_by_queries(clustered, tmp_path):
    x, queries, truth = clustered
    index, tuning = build_ann(x, "ivf", target=0.95)
    entries = [Entry(f"{i:05d}.png", 1, 1, f"{i:064x}") for i in range(len(x))]
    info = {"root": str(tmp_path), "ann": "ivf", "ann_tuning": tuning.to_info()}
    write_index(tmp_path / "idx", IndexData(info, entries, x, index))
    data = read_index(tmp_path / "idx")
    assert data.info["ann_tuning"]["value"] == tuning.value == current_setting(data.faiss_index, "nprobe") > 1
    assert np.array_equal(data.faiss_index.search(queries, 10)[1], index.search(queries, 10)[1])
    # the stored setting is the one queries use: narrow it in info.json and recall drops
    info_file = tmp_path / "idx" / data.version / "info.json"
    info["ann_tuning"]["value"] = 1
    info_file.write_text(json.dumps(info))
    narrow = read_index(tmp_path / "idx").faiss_index
    assert current_setting(narrow, "nprobe") == 1
    assert _recall(narrow.search(queries, 10)[1], truth) < _recall(index.search(queries, 10)[1], truth) - 0.02


def test_ivf_recall_from_list_ranks_is_what_searching_finds(clustered):
    """The IVF tuning reads recall at every nprobe off the lists' ranks; searching at each agrees."""
    x, queries, truth = clustered
    index, structure = _empty_index("ivf", x, np.random.default_rng(0))
    index.add_with_ids(x, np.arange(len(x)))
    ranks = _ivf_list_ranks(index, queries, x[truth])  # (500, 10)
    assert ranks.shape == truth.shape and ranks.min() == 0 and ranks.max() < structure["nlist"]
    for nprobe in (1, 2, 3, 5, structure["nlist"]):
        set_search_parameter(index, "nprobe", nprobe)
        searched = _recall(index.search(queries, 10)[1], truth)
        assert abs(float((ranks < nprobe).mean()) - searched) <= 1e-3, nprobe
    assert float((ranks < 1).mean()) < 0.99 and float((ranks < structure["nlist"]).mean()) == 1.0
