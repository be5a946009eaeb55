"""The index on disk: a folder of versions, one of which is current, replaced atomically.

    INDEX/
      CURRENT            the name of the current version ("v000003"), replaced whole
      v000003/
        info.json        the indexed folder, the model (source and identity), dimension, ANN kind and
                         its tuned search setting (used by every query)
        meta.sqlite      table ``images``: pos, path, size, mtime_ns, sha256, caption
        embeddings.npy   (N, D) float32, L2-normalised; row ``pos`` is the image at ``pos``
        index.faiss      the FAISS index over those rows (ids = ``pos``)
      v000002/           the previous version, kept for readers that are still loading it
      thumbs/            thumbnails of the web page, by content hash

Paths are relative to the indexed folder (``info["root"]``, stored absolute), with ``/``
separators. A build or update writes a new version into a staging folder beside the others,
renames it into place and only then replaces ``CURRENT`` (a rename as well): killed at any point,
it leaves the previous version current and whole; the next write removes what it left. One
writer at a time holds ``INDEX/.lock``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import sqlite3
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..files import write_text
from .ann import set_search_parameter
from .extras import require

CURRENT_FILE = "CURRENT"
INFO_FILE = "info.json"
META_FILE = "meta.sqlite"
EMBEDDINGS_FILE = "embeddings.npy"
FAISS_FILE = "index.faiss"
THUMBS_FOLDER = "thumbs"
_VERSION = re.compile(r"^v(\d{6})$")
_STAGING_PREFIX = ".staging-"


@dataclass(frozen=True)
class Entry:
    """One indexed image: its path relative to the indexed folder and what identifies its content."""

    path: str
    size: int
    mtime_ns: int
    sha256: str
    caption: str | None = None


@dataclass
class IndexData:
    """One version of an index, in memory."""

    info: dict
    entries: list[Entry]
    embeddings: np.ndarray  # (N, D) float32
    faiss_index: object = None  # a faiss.Index over ``embeddings`` (None until built or read)
    version: str = ""
    positions: dict[str, int] = field(default_factory=dict)  # path -> row

    def __post_init__(self) -> None:
        if len(self.entries) != len(self.embeddings):
            raise ValueError(f"{len(self.entries)} index entries but {len(self.embeddings)} embeddings")
        self.positions = {e.path: i for i, e in enumerate(self.entries)}

    @property
    def root(self) -> Path:
        return Path(self.info["root"])


def is_index(folder: str | os.PathLike) -> bool:
    return (Path(folder) / CURRENT_FILE).is_file()


def current_version(folder: str | os.PathLike) -> str:
    """The name of ``folder``'s current version; a FileNotFoundError when ``folder`` is no index."""
    folder = Path(folder)
    if not is_index(folder):
        what = "does not exist" if not folder.exists() else "is not an index (no CURRENT file)"
        raise FileNotFoundError(f"index {folder} {what}; build one with `vlkit index build`")
    name = (folder / CURRENT_FILE).read_text(encoding="utf-8").strip()
    if not _VERSION.match(name) or not (folder / name).is_dir():
        raise ValueError(f"index {folder} is damaged: CURRENT names {name!r}, which is not a version folder in it")
    return name


def _read_entries(path: Path) -> list[Entry]:
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = con.execute("SELECT path, size, mtime_ns, sha256, caption FROM images ORDER BY pos").fetchall()
    finally:
        con.close()
    return [Entry(*row) for row in rows]


def read_index(folder: str | os.PathLike, *, with_faiss: bool = True) -> IndexData:
    """The current version of the index ``folder``."""
    faiss = require("faiss", "faiss-cpu")

    folder = Path(folder)
    version = current_version(folder)
    vdir = folder / version
    try:
        info = json.loads((vdir / INFO_FILE).read_text(encoding="utf-8"))
        entries = _read_entries(vdir / META_FILE)
        embeddings = np.load(vdir / EMBEDDINGS_FILE)
        index = faiss.read_index(str(vdir / FAISS_FILE)) if with_faiss else None
        tuning = info.get("ann_tuning")
        if index is not None and tuning:  # the search setting the build chose (also in the FAISS file)
            set_search_parameter(index, tuning["parameter"], tuning["value"])
    except (OSError, ValueError, sqlite3.Error, RuntimeError) as e:
        raise ValueError(f"index {folder} ({version}) cannot be read: {e}") from None
    return IndexData(info, entries, embeddings, index, version)


def _write_entries(path: Path, entries: list[Entry]) -> None:
    con = sqlite3.connect(path)
    try:
        con.execute(
            "CREATE TABLE images (pos INTEGER PRIMARY KEY, path TEXT UNIQUE NOT NULL, size INTEGER NOT NULL, "
            "mtime_ns INTEGER NOT NULL, sha256 TEXT NOT NULL, caption TEXT)"
        )
        con.executemany(
            "INSERT INTO images VALUES (?, ?, ?, ?, ?, ?)",
            [(i, e.path, e.size, e.mtime_ns, e.sha256, e.caption) for i, e in enumerate(entries)],
        )
        con.commit()
    finally:
        con.close()


def _fsync(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _next_version(folder: Path) -> str:
    numbers = [int(m.group(1)) for p in folder.iterdir() if (m := _VERSION.match(p.name))]
    return f"v{max(numbers, default=0) + 1:06d}"


def _clean(folder: Path, keep: set[str]) -> None:
    """Remove staging folders and versions other than ``keep`` (left by killed or older writes)."""
    for p in folder.iterdir():
        if p.name.startswith(_STAGING_PREFIX) or (_VERSION.match(p.name) and p.name not in keep):
            shutil.rmtree(p, ignore_errors=True)
        elif p.name.startswith(f".{CURRENT_FILE}.tmp-"):
            p.unlink(missing_ok=True)


def write_index(folder: str | os.PathLike, data: IndexData) -> str:
    """Write ``data`` as the new current version of ``folder`` (see the module docstring); its name.
    The caller holds :func:`writer_lock`."""
    faiss = require("faiss", "faiss-cpu")

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    previous = current_version(folder) if is_index(folder) else None
    staging = Path(tempfile.mkdtemp(prefix=_STAGING_PREFIX, dir=folder))
    try:
        (staging / INFO_FILE).write_text(json.dumps(data.info, indent=2) + "\n", encoding="utf-8")
        _write_entries(staging / META_FILE, data.entries)
        np.save(staging / EMBEDDINGS_FILE, np.ascontiguousarray(data.embeddings, dtype=np.float32))
        faiss.write_index(data.faiss_index, str(staging / FAISS_FILE))
        for p in staging.iterdir():
            _fsync(p)
        os.chmod(staging, 0o755)
        version = _next_version(folder)
        os.replace(staging, folder / version)
        write_text(folder / CURRENT_FILE, version + "\n")
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    _clean(folder, {version} | ({previous} if previous else set()))
    data.version = version
    return version


@contextlib.contextmanager
def writer_lock(folder: str | os.PathLike) -> Iterator[None]:
    """Hold ``folder/.lock`` while writing; a ValueError when another writer holds it."""
    import fcntl  # POSIX; imported here so that the rest of vlkit imports anywhere

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "a+") as f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ValueError(f"index {folder} is being written by another `vlkit index` process") from None
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)
