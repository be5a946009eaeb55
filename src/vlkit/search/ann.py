"""FAISS indexes over normalised embeddings: exact inner product, or approximate (HNSW, IVF) with
the search parameter tuned to a target recall.

    index, tuning = build_ann(embeddings, "hnsw", target=0.95)  # embeddings (N, D) float32, L2-normalised
    tuning.value, tuning.recall                                  # e.g. efSearch 96, recall@10 0.961
    scores, ids = search_faiss(index, queries, k=10)            # (Q, k) each; ids -1 past the end
    recall = recall_at_k(index, embeddings, k=10)               # against exact search, on stored rows

Inner product on normalised vectors is cosine similarity. ``flat`` is exact; ``hnsw`` (a graph)
and ``ivf`` (k-means lists) trade recall for speed on large collections, by how wide a query
searches (HNSW ``efSearch``, IVF ``nprobe``). How wide is enough depends on the data: uniformly
spread vectors need far more than clustered ones (real embeddings). So the build measures it:
up to 1000 random rows are held out, the index is built over the others, and the smallest
setting whose recall@10 on the held-out rows (against exact search) reaches ``target`` with a
margin of two standard errors is chosen (IVF: read off one ranking of the lists, exactly what
searching at each ``nprobe`` would find); then the held-out rows are added. The setting is stored in the FAISS file (and by the index
store in ``info.json``) and used by every query. IVF always reaches the target (probing every list
is exact); HNSW stops at efSearch 4096 and says so if its graph cannot reach it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from .extras import require

ANN_KINDS = ("flat", "hnsw", "ivf")
DEFAULT_RECALL = 0.95
TUNE_QUERIES = 1000  # held-out rows (at most; a tenth of the rows below 10k)
MIN_HELD_OUT = 20  # fewer rows than 10x this: no held-out set, the widest setting
SEARCH_PARAMETER = {"hnsw": "efSearch", "ivf": "nprobe"}
HNSW_EF_MAX = 4096
IVF_TRAIN_PER_LIST = 64  # k-means trains on at most this many rows per list
_STEP = 1.25  # the tuning ladder's ratio between settings


def hnsw_shape(n: int) -> tuple[int, int]:
    """(M, efConstruction) of an HNSW graph over ``n`` vectors: links per node, and the width of the
    search that picks them; both grow a little with ``n`` (larger graphs need more to stay
    navigable), build time grows with both."""
    return (16, 40) if n <= 20_000 else (32, 40) if n <= 300_000 else (32, 64)


def ivf_lists(n: int) -> int:
    """The number of IVF lists for ``n`` vectors: about sqrt(n) (a query scans the list centres and
    ``nprobe`` lists of about sqrt(n) rows each), with 39+ training rows per list."""
    return max(1, min(round(math.sqrt(n)), n // 39))


@dataclass(frozen=True)
class Tuning:
    """The search setting an approximate index was given and the recall it measured."""

    kind: str  # hnsw | ivf
    parameter: str  # efSearch | nprobe
    value: int
    recall: float  # recall@k at ``value`` on the held-out rows (stored rows when ``queries`` is 0)
    target: float
    queries: int  # held-out rows measured
    structure: dict  # {"M": .., "efConstruction": ..} or {"nlist": ..}
    k: int = 10

    @property
    def reached(self) -> bool:
        return round(self.recall, 3) >= self.target

    def to_info(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        shape = ", ".join(f"{k}={v}" for k, v in self.structure.items())
        where = f"{self.queries} held-out rows" if self.queries else "the stored rows (too few to hold any out)"
        text = (
            f"{self.kind} ({shape}): {self.parameter}={self.value} gives recall@{self.k} {self.recall:.3f} "
            f"against exact search on {where} (target {self.target:.2f})"
        )
        if not self.reached:
            text += "; the widest search falls short: use --ann ivf or flat for this data"
        return text


def set_search_parameter(index, name: str, value: int) -> None:
    """Set ``efSearch`` or ``nprobe`` of ``index`` (also inside an id map)."""
    faiss = require("faiss", "faiss-cpu")

    faiss.ParameterSpace().set_index_parameter(index, name, int(value))


def _empty_index(kind: str, x: np.ndarray, rng: np.random.Generator):
    """An empty (trained) index of ``kind`` for the rows ``x`` (N, D), taking ids; its structure."""
    faiss = require("faiss", "faiss-cpu")

    n, d = x.shape
    if kind == "hnsw":
        m, ef_construction = hnsw_shape(n)
        graph = faiss.IndexHNSWFlat(d, m, faiss.METRIC_INNER_PRODUCT)
        graph.hnsw.efConstruction = ef_construction
        return faiss.IndexIDMap(graph), {"M": m, "efConstruction": ef_construction}
    lists = ivf_lists(n)
    index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, lists, faiss.METRIC_INNER_PRODUCT)
    sample = (
        x if n <= IVF_TRAIN_PER_LIST * lists else x[np.sort(rng.choice(n, IVF_TRAIN_PER_LIST * lists, replace=False))]
    )
    index.train(sample)
    return index, {"nlist": lists}


def _ladder(low: int, high: int) -> list[int]:
    """Settings from ``low`` to ``high``, each about 1.25x the one before."""
    values = [low]
    while values[-1] < high:
        values.append(min(high, max(values[-1] + 1, math.ceil(values[-1] * _STEP))))
    return values


def _per_query_recall(found: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """(Q,) the share of each ``truth`` row's ids (Q, k) that the ``found`` row (Q, k) holds."""
    return (found[:, :, None] == truth[:, None, :]).any(axis=2).mean(axis=1)


def _recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(_per_query_recall(found, truth).mean())


def _tune(per_query, ladder: list[int], target: float):
    """The smallest setting of ``ladder`` whose recall surely reaches ``target`` (less two standard
    errors of its estimate, so that other queries reach it too), else the largest; (setting,
    recall). ``per_query(value)`` gives the (Q,) recall of each held-out query at a setting.
    Recall grows with the setting, and so does the cost of measuring it: steps up the ladder 1, 2,
    4, ... settings at a time until one reaches, then bisects the last step."""
    measured: dict[int, np.ndarray] = {}

    def reaches(i: int) -> bool:
        if ladder[i] not in measured:
            measured[ladder[i]] = per_query(ladder[i])  # (Q,)
        r = measured[ladder[i]]
        return r.mean() - 2 * r.std() / math.sqrt(len(r)) >= target

    lo, hi, step = 0, 0, 1
    while not reaches(hi) and hi < len(ladder) - 1:
        lo, hi, step = hi + 1, min(hi + step, len(ladder) - 1), step * 2
    while lo < hi and reaches(hi):  # every setting below lo falls short
        mid = (lo + hi) // 2
        if reaches(mid):
            hi = mid
        else:
            lo = mid + 1
    return ladder[hi], float(measured[ladder[hi]].mean())


def _searched_recall(index, parameter: str, queries: np.ndarray, truth: np.ndarray):
    """``per_query`` of :func:`_tune` by searching ``index`` for ``queries`` (Q, D) at each setting
    and comparing with ``truth`` (Q, k), their true nearest ids."""

    def per_query(value: int) -> np.ndarray:
        set_search_parameter(index, parameter, value)
        return _per_query_recall(index.search(queries, truth.shape[1])[1], truth)  # (Q,)

    return per_query


def _ivf_list_ranks(index, queries: np.ndarray, nearest: np.ndarray) -> np.ndarray:
    """(Q, k) for each query (Q, D) and each of its true nearest vectors (Q, k, D): the rank of the
    list holding that vector among the lists the query probes, nearest list first (rank 0).
    IVF-Flat compares the query with every vector of the lists it probes, exactly, so at
    ``nprobe=p`` it returns exactly the true nearest whose list ranks below ``p`` (ties aside): one
    ranking of the lists gives the recall at every ``nprobe`` without searching at each, which at
    a million vectors, where the search scans most of them, costs minutes per setting."""
    faiss = require("faiss", "faiss-cpu")

    quantizer = faiss.downcast_index(index.quantizer)  # the list centres, as add() assigned them
    q, k, d = nearest.shape
    _, order = quantizer.search(queries, index.nlist)  # (Q, nlist) lists, nearest first
    rank = np.empty_like(order)
    rank[np.arange(q)[:, None], order] = np.arange(index.nlist)  # (Q, nlist) list -> its rank
    _, home = quantizer.search(np.ascontiguousarray(nearest.reshape(q * k, d)), 1)  # (Q*k, 1)
    return rank[np.arange(q)[:, None], home.reshape(q, k)]  # (Q, k)


def build_ann(
    embeddings: np.ndarray,
    kind: str = "flat",
    *,
    target: float = DEFAULT_RECALL,
    k: int = 10,
    queries: int = TUNE_QUERIES,
    seed: int = 0,
):
    """A FAISS index of ``kind`` (one of :data:`ANN_KINDS`) over ``embeddings`` (N, D), ids = rows,
    and its :class:`Tuning` (None for ``flat``): see the module docstring."""
    faiss = require("faiss", "faiss-cpu")

    if kind not in ANN_KINDS:
        raise ValueError(f"unknown index kind {kind!r}; expected one of {', '.join(ANN_KINDS)}")
    if not 0.0 < target <= 1.0:
        raise ValueError(f"the target recall must be in (0, 1], got {target}")
    x = np.ascontiguousarray(embeddings, dtype=np.float32)  # (N, D)
    n, d = x.shape
    if kind == "flat" or n == 0:  # (an empty collection needs no approximation)
        index = faiss.IndexFlatIP(d)
        index.add(x)
        return index, None
    rng = np.random.default_rng(seed)
    held = min(queries, n // 10)
    held_rows = np.sort(rng.choice(n, held, replace=False)) if held >= MIN_HELD_OUT else np.empty(0, dtype=np.int64)
    base_rows = np.setdiff1d(np.arange(n), held_rows)  # (N - H,)
    base = x[base_rows] if len(held_rows) else x  # (N - H, D)
    index, structure = _empty_index(kind, x, rng)
    index.add_with_ids(base, base_rows)
    parameter = SEARCH_PARAMETER[kind]
    widest = min(HNSW_EF_MAX, max(k, len(base))) if kind == "hnsw" else structure["nlist"]
    if len(held_rows):
        k_eff = min(k, len(base))
        _, truth = faiss.knn(x[held_rows], base, k_eff, metric=faiss.METRIC_INNER_PRODUCT)  # (H, k) into base
        ladder = _ladder(k_eff if kind == "hnsw" else 1, widest)
        if kind == "ivf":  # recall at every nprobe from the lists' ranks (see _ivf_list_ranks)
            ranks = _ivf_list_ranks(index, x[held_rows], base[truth])  # (H, k)
            per_query = lambda value: (ranks < value).mean(axis=1)  # (H,)
        else:
            per_query = _searched_recall(index, parameter, x[held_rows], base_rows[truth])
        value, recall = _tune(per_query, ladder, target)
        index.add_with_ids(x[held_rows], held_rows)
    else:
        value = widest
        set_search_parameter(index, parameter, value)
        recall = recall_at_k(index, x, k=k)
    set_search_parameter(index, parameter, value)
    return index, Tuning(kind, parameter, value, round(recall, 4), target, len(held_rows), structure, k)


def build_faiss(embeddings: np.ndarray, kind: str = "flat", **tuning):
    """The index of :func:`build_ann` without its tuning report."""
    return build_ann(embeddings, kind, **tuning)[0]


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
    k = min(k, len(x))
    _, truth = faiss.knn(x[picked], x, k, metric=faiss.METRIC_INNER_PRODUCT)  # (Q, k)
    _, found = index.search(x[picked], k)  # (Q, k)
    return _recall(found, truth)
