"""Semantic image search: an index of a folder (FAISS + SQLite) that stays in sync with it, its
queries, zero-shot labels, and a web page (:mod:`vlkit.search.app`).

Needs the ``search`` extra (faiss-cpu; fastapi, uvicorn and python-multipart for the page); the
packages are imported when first used. See docs/search.md.
"""

from __future__ import annotations

from .ann import ANN_KINDS, DEFAULT_RECALL, Tuning, build_ann, build_faiss, recall_at_k, search_faiss
from .build import BuildReport, build_index, index_folder, update_index
from .classify import classify_files
from .export import export_parquet
from .extras import MissingExtraError
from .identity import check_same_model, model_identity
from .query import Hit, Searcher
from .store import Entry, IndexData, read_index, write_index

__all__ = [
    "ANN_KINDS",
    "BuildReport",
    "DEFAULT_RECALL",
    "Entry",
    "Hit",
    "IndexData",
    "MissingExtraError",
    "Searcher",
    "Tuning",
    "build_ann",
    "build_faiss",
    "build_index",
    "check_same_model",
    "classify_files",
    "export_parquet",
    "index_folder",
    "model_identity",
    "progress",
    "read_index",
    "recall_at_k",
    "search_faiss",
    "update_index",
    "write_index",
]


def progress() -> bool:
    """Progress bars on a terminal only."""
    from ..eval.embedding import progress_default

    return progress_default()
