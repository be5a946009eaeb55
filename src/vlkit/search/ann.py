"""FAISS indexes over normalised embeddings: exact inner product, or approximate (HNSW, IVF).

    index = build_faiss(embeddings, "hnsw")            # embeddings (N, D) float32, L2-normalised
    scores, ids = search_faiss(index, queries, k=10)   # (Q, k) each; ids -1 past the end
    recall = recall_at_k(index, embeddings, k=10)      # against exact search, on up to 1000 rows

Inner product on normalised vectors is cosine similarity. ``flat`` is exact; ``hnsw`` (a graph,
M=32, efSearch=256) and ``ivf`` (k-means lists, about 4*sqrt(N) of them, 1/4 probed) trade a
little recall for speed on large collections: measure it with :func:`recall_at_k`.
"""

from __future__ import annotations

import math

import numpy as np

from .extras import require

ANN_KINDS = ("flat", "hnsw", "ivf")
HNSW_M = 32
HNSW_EF_SEARCH = 256
HNSW_EF_CONSTRUCTION = 80
IVF_PROBE_FRACTION = 4  # probe a quarter of the lists


def _ivf_lists(n: int) -> int:
    """The number of IVF lists for ``n`` vectors: about 4 sqrt(n), with 39+ training points each."""
    return max(1, min(int(4 * math.sqrt(n)), n // 39))


def build_faiss(embeddings: np.ndarray, kind: str = "flat"):
    """A FAISS index of ``kind`` (one of :data:`ANN_KINDS`) over ``embeddings`` (N, D); ids = rows."""
    faiss = require("faiss", "faiss-cpu")

    if kind not in ANN_KINDS:
        raise ValueError(f"unknown index kind {kind!r}; expected one of {', '.join(ANN_KINDS)}")
    x = np.ascontiguousarray(embeddings, dtype=np.float32)  # (N, D)
    n, d = x.shape
    if kind == "flat":
        index = faiss.IndexFlatIP(d)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(d, HNSW_M, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        index.hnsw.efSearch = HNSW_EF_SEARCH
    else:
        lists = _ivf_lists(n)
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, lists, faiss.METRIC_INNER_PRODUCT)
        if n:
            index.train(x)
        index.nprobe = max(1, math.ceil(lists / IVF_PROBE_FRACTION))
    if n:
        index.add(x)
    return index


def search_faiss(index, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Scores and row ids (Q, k) of the ``k`` nearest rows of each query (Q, D); id -1 where the
    index has fewer than ``k`` rows."""
    q = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)  # (Q, D)
    if q.shape[1] != index.d:
        raise ValueError(f"query vectors have dimension {q.shape[1]}; the index holds dimension {index.d}")
    return index.search(q, k)


def recall_at_k(index, embeddings: np.ndarray, k: int = 10, queries: int = 1000, seed: int = 0) -> float:
    """Recall@k of ``index`` against exact search: the share of each query's true ``k`` nearest
    rows that ``index`` returns, over up to ``queries`` rows of ``embeddings`` used as queries."""
    faiss = require("faiss", "faiss-cpu")

    x = np.ascontiguousarray(embeddings, dtype=np.float32)
    if len(x) == 0:
        return 1.0
    rng = np.random.default_rng(seed)
    picked = rng.choice(len(x), size=min(queries, len(x)), replace=False)
    exact = faiss.IndexFlatIP(x.shape[1])
    exact.add(x)
    k = min(k, len(x))
    _, truth = exact.search(x[picked], k)  # (Q, k)
    _, found = index.search(x[picked], k)  # (Q, k)
    hits = sum(len(set(t) & set(f)) for t, f in zip(truth.tolist(), found.tolist()))
    return hits / truth.size
