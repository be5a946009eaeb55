"""``vlkit index export --parquet``: an index as one Parquet file, the form vector databases ingest.

One row per image: ``id`` (int64, the row), ``path`` (relative to the indexed folder), ``size``,
``mtime_ns``, ``sha256``, ``caption`` (null without one) and ``embedding`` (a fixed-size list of
float32, L2-normalised). The index's ``info.json`` travels in the file's metadata under ``vlkit``.
Qdrant, Milvus and LanceDB read such a file (``pyarrow.parquet.read_table``) into a collection with
a vector field of the index's dimension and the cosine (or inner product) metric.
"""

from __future__ import annotations

import json
import os

import numpy as np

from ..files import write_file
from .extras import require
from .store import read_index


def export_parquet(index: str | os.PathLike, out: str | os.PathLike, *, row_group_size: int = 65536) -> int:
    """Write the current version of ``index`` to the Parquet file ``out`` (whole); the row count."""
    pa = require("pyarrow")
    pq = require("pyarrow.parquet", "pyarrow")
    data = read_index(index, with_faiss=False)
    n, d = data.embeddings.shape
    flat = pa.array(np.ascontiguousarray(data.embeddings, dtype=np.float32).reshape(-1))  # (N * D,)
    table = pa.table(
        {
            "id": pa.array(np.arange(n, dtype=np.int64)),
            "path": [e.path for e in data.entries],
            "size": pa.array([e.size for e in data.entries], type=pa.int64()),
            "mtime_ns": pa.array([e.mtime_ns for e in data.entries], type=pa.int64()),
            "sha256": [e.sha256 for e in data.entries],
            "caption": pa.array([e.caption for e in data.entries], type=pa.string()),
            "embedding": pa.FixedSizeListArray.from_arrays(flat, d),
        }
    )
    table = table.replace_schema_metadata({"vlkit": json.dumps(data.info)})
    write_file(out, lambda tmp: pq.write_table(table, str(tmp), row_group_size=row_group_size))
    return n
