"""Building and updating an index of a folder of images (``vlkit index build`` / ``update``).

    report = index_folder("photos.index", model, model_source="runs/clip-shapes", root="photos/")
    report = index_folder("photos.index", model, model_source=..., root=..., previous=read_index(...))

Every image file under ``root`` is listed (:func:`vlkit.data.image_files.find_images`). A file
whose path, size and modification time match the previous version keeps its embedding; so does a
file whose content hash (SHA-256) matches one there (a moved or touched file); every other file
is embedded (:func:`vlkit.eval.embedding.embed_image_files`), and files gone from ``root`` leave
the index. Unreadable files are skipped and reported. The new version is written atomically
(:mod:`vlkit.search.store`).

Under ``torchrun`` each process embeds every ``world_size``-th new file; rank 0 gathers the slices
and writes the one index.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from ..data.folder import SkipReport
from ..data.image_files import find_images
from ..data.transforms import image_transform
from ..eval.embedding import embed_image_files
from ..files import OutputExistsError
from .ann import DEFAULT_RECALL, Tuning, build_ann
from .extras import require
from .identity import check_same_model, model_identity
from .store import Entry, IndexData, current_version, is_index, read_index, write_index, writer_lock

FORMAT_VERSION = 1


@dataclass
class BuildReport:
    """What a build or update did."""

    version: str = ""
    images: int = 0  # in the new version
    embedded: int = 0  # embedded now
    reused: int = 0  # embeddings kept from the previous version
    removed: int = 0  # entries of the previous version whose file is gone (or now unreadable)
    skipped: SkipReport = field(default_factory=SkipReport)
    recall_at_10: float | None = None  # of the ANN index against exact search (held-out rows)
    tuning: Tuning | None = None  # the ANN index's search setting
    seconds: float = 0.0
    embed_seconds: float = 0.0

    def summary(self) -> str:
        rate = f" ({self.embedded / self.embed_seconds:.1f} images/s)" if self.embedded and self.embed_seconds else ""
        text = (
            f"{self.images} images indexed ({self.version}): {self.embedded} embedded{rate}, {self.reused} unchanged, "
            f"{self.removed} removed, {len(self.skipped)} skipped, in {self.seconds:.1f} s"
        )
        return text


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def relative_path(path: Path, root: Path) -> str:
    """``path`` relative to ``root``, with ``/`` separators (how the index stores paths)."""
    return path.relative_to(root).as_posix()


def plan(root: Path, previous: IndexData | None) -> tuple[list[tuple[Entry, int]], list[Entry]]:
    """(entries that keep a row of ``previous``, with that row; entries to embed), by path. With no
    ``previous`` no hash decides anything: the entries' ``sha256`` is left empty (see
    :func:`_hash_in_background`)."""
    old_rows = previous.positions if previous is not None else {}
    by_hash = {e.sha256: i for i, e in enumerate(previous.entries)} if previous is not None else {}
    keep: list[tuple[Entry, int]] = []
    todo: list[Entry] = []
    for path in find_images([root]):
        rel, st = relative_path(path, root), path.stat()
        row = old_rows.get(rel)
        if row is not None:
            old = previous.entries[row]
            if (old.size, old.mtime_ns) == (st.st_size, st.st_mtime_ns):
                keep.append((old, row))
                continue
        entry = Entry(rel, st.st_size, st.st_mtime_ns, file_sha256(path) if by_hash else "")
        if entry.sha256 in by_hash:
            row = by_hash[entry.sha256]
            keep.append((replace(entry, caption=previous.entries[row].caption), row))
        else:
            todo.append(entry)
    return keep, todo


def _hash_in_background(root: Path, entries: list[Entry]) -> Future:
    """Import faiss and hash the files of ``entries`` that have no hash yet, in a thread, while the
    model embeds (both mostly wait on I/O or run outside the GIL); the future's result is
    ``entries`` with their hashes ("" for a file that vanished meanwhile)."""

    def work() -> list[Entry]:
        with contextlib.suppress(ImportError):
            require("faiss", "faiss-cpu")
        hashed = []
        for e in entries:
            if not e.sha256:
                with contextlib.suppress(OSError):
                    e = replace(e, sha256=file_sha256(root / e.path))
            hashed.append(e)
        return hashed

    pool = ThreadPoolExecutor(max_workers=1)
    future = pool.submit(work)
    pool.shutdown(wait=False)  # the thread ends with the work
    return future


def auto_workers(files: list[Path], image_size: int, device: torch.device | str) -> int:
    """Data worker processes worth starting for ``files``. A worker decodes in parallel with the
    model, but every image it decodes is pickled across to this process, and on the CPU it takes
    a core from the model's threads: for files little larger than the model's input (``image_size``
    pixels square) that costs more than decoding here (measured: 64-pixel PNGs, a 32-pixel model,
    2 cores, 2 workers: 0.78x the images/s of none). So: none when the median of 16 sampled files
    has at most 4x the input's pixels on a CPU, else up to 4 (and a core left for this process)."""
    from PIL import Image

    cores = os.cpu_count() or 1
    if cores < 2 or not files:
        return 0
    if torch.device(device).type == "cpu":
        areas = []
        for path in files[:: max(1, len(files) // 16)][:16]:
            with contextlib.suppress(OSError, ValueError, Image.DecompressionBombError), Image.open(path) as image:
                areas.append(image.width * image.height)  # (from the header: nothing decoded)
        if not areas or sorted(areas)[len(areas) // 2] <= 4 * image_size**2:
            return 0
    return min(4, cores - 1)


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _embed_slice(model, root: Path, todo: list[Entry], rank: int, world: int, captioner=None, **embed_options):
    """This process's share of ``todo``: (positions in ``todo``, features (n, D), skipped, captions
    (n) or None)."""
    mine = list(range(rank, len(todo), world))
    if not mine:
        return [], None, [], None
    files = [root / todo[i].path for i in mine]
    if embed_options["num_workers"] is None:
        size = image_transform(model).image_size
        embed_options = dict(embed_options, num_workers=auto_workers(files, size, embed_options["device"]))
    result = embed_image_files(model, files, require_any=False, **embed_options)
    captions = None
    if captioner is not None and result.kept:
        captions = captioner.caption_files([files[i] for i in result.kept], batch_size=embed_options["batch_size"])
    return [mine[i] for i in result.kept], result.features.numpy(), list(result.skipped.skipped), captions


def index_folder(
    out: str | os.PathLike,
    model,
    *,
    model_source: str,
    root: str | os.PathLike,
    previous: IndexData | None = None,
    ann: str = "flat",
    ann_recall: float = DEFAULT_RECALL,
    batch_size: int = 64,
    num_workers: int | None = 0,
    device: torch.device | str = "cpu",
    precision: str = "auto",
    progress: bool = False,
    captioner=None,
    captioner_source: str | None = None,
    log: Callable[[str], None] = print,
) -> BuildReport:
    """Write a new version of the index ``out`` for the images under ``root`` (module docstring).
    ``num_workers`` None: :func:`auto_workers`.
    Under torchrun every process calls this; rank 0 writes and returns the full report. The
    caller holds :func:`vlkit.search.store.writer_lock` (rank 0). ``captioner``
    (:class:`vlkit.search.assist.Assistant`) captions the newly embedded images."""
    start = time.perf_counter()
    if not 0.0 < ann_recall <= 1.0:
        raise ValueError(f"the target recall of the approximate index must be in (0, 1], got {ann_recall}")
    root = Path(root).resolve()
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} does not exist or is not a folder")
    rank, world = _world()
    keep, todo = plan(root, previous)
    if world > 1:  # every process must embed the same list: rank 0's
        shared = [(keep, todo)]
        dist.broadcast_object_list(shared, src=0)
        keep, todo = shared[0]
    if rank == 0:
        log(f"{len(keep) + len(todo)} image files under {root}: {len(todo)} to embed, {len(keep)} unchanged")
        hashing = _hash_in_background(root, todo)
    t0 = time.perf_counter()
    options = dict(
        batch_size=batch_size,
        num_workers=num_workers,
        device=device,
        precision=precision,
        progress=progress and rank == 0,
    )
    slices = [_embed_slice(model, root, todo, rank, world, captioner, **options)]
    if world > 1:
        gathered: list = [None] * world
        dist.all_gather_object(gathered, slices[0])
        slices = gathered
    embed_seconds = time.perf_counter() - t0
    if rank != 0:
        return BuildReport()
    report = BuildReport(embedded=0, reused=len(keep), embed_seconds=embed_seconds)
    todo = hashing.result()
    rows: dict[str, tuple[Entry, np.ndarray]] = {e.path: (e, previous.embeddings[row]) for e, row in keep}
    for positions, feats, skipped, captions in slices:
        report.skipped.add(skipped)
        for j, pos in enumerate(positions):
            entry = todo[pos] if captions is None else replace(todo[pos], caption=captions[j])
            rows[entry.path] = (entry, feats[j])
        report.embedded += len(positions)
    if not rows:
        raise ValueError(f"no image could be indexed under {root}: {report.skipped.summary(len(todo))}")
    report.removed = len({e.path for e in previous.entries} - set(rows)) if previous is not None else 0
    entries = [rows[p][0] for p in sorted(rows)]
    embeddings = np.stack([rows[p][1] for p in sorted(rows)]).astype(np.float32)  # (N, D)
    index, report.tuning = build_ann(embeddings, ann, target=ann_recall)
    report.recall_at_10 = report.tuning.recall if report.tuning is not None else None
    info = {
        "format": FORMAT_VERSION,
        "root": str(root),
        "model": model_source,
        "identity": model_identity(model),
        "dim": int(embeddings.shape[1]),
        "ann": ann,
        "count": len(entries),
        "recall_at_10": report.recall_at_10,
        "ann_tuning": report.tuning.to_info() if report.tuning is not None else None,
        "captioner": captioner_source,
        "written": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    report.version = write_index(out, IndexData(info, entries, embeddings, index))
    report.images = len(entries)
    report.seconds = time.perf_counter() - start
    return report


# ---------------------------------------------------------------------------------- commands
def _source_name(source: str) -> str:
    """How the index records the model: an existing path made absolute, anything else as given."""
    return str(Path(source).resolve()) if Path(source).exists() else source


def _load_embedder(source: str, device: torch.device):
    from ..eval.resolve import load_model, require_embedder

    return require_embedder(load_model(source), source).to(device).eval()


def _load_captioner(source: str | None, device: torch.device):
    from .assist import Assistant

    return Assistant.load(source, device) if source else None


@contextlib.contextmanager
def _processes(device: str) -> Iterator[torch.device]:
    """Join torchrun's process group when launched by it; this process's device."""
    from ..train.distributed import cleanup, setup

    info = setup(device)
    finished = False
    try:
        yield info.device
        finished = True
    finally:
        cleanup(synchronize=finished)


def _lock(out: Path):
    return writer_lock(out) if _world()[0] == 0 else contextlib.nullcontext()


def build_index(
    out: str | os.PathLike,
    model: str,
    images: str | os.PathLike,
    *,
    ann: str = "flat",
    overwrite: bool = False,
    device: str = "auto",
    captioner: str | None = None,
    **options,
) -> BuildReport:
    """``vlkit index build``: index every image under ``images`` with the model ``model`` (a
    path or name :func:`vlkit.eval.resolve.load_model` reads) into the folder ``out``; with
    ``captioner`` (a captioning BLIP) every image gets a caption too."""
    out = Path(out)
    if out.exists() and not is_index(out) and (not out.is_dir() or any(out.iterdir())):
        raise OutputExistsError(f"{out} exists and is not an index; choose another output")
    if is_index(out) and not overwrite:
        raise OutputExistsError(f"index {out} already exists; update it with `vlkit index update` or pass --overwrite")
    with _processes(device) as dev:
        embedder = _load_embedder(model, dev)
        helper = _load_captioner(captioner, dev)
        with _lock(out):
            return index_folder(
                out,
                embedder,
                model_source=_source_name(model),
                root=images,
                ann=ann,
                device=dev,
                captioner=helper,
                captioner_source=_source_name(captioner) if captioner else None,
                **options,
            )


def update_index(
    out: str | os.PathLike,
    *,
    model: str | None = None,
    ann: str | None = None,
    ann_recall: float | None = None,
    device: str = "auto",
    captioner: str | None = None,
    **options,
) -> BuildReport:
    """``vlkit index update``: a new version of ``out`` with new and changed files embedded and
    deleted ones gone, by the index's own model (``model``, if given, must be that model)."""
    out = Path(out)
    current_version(out)  # a clear error when ``out`` is no index
    with _processes(device) as dev, _lock(out):
        previous = read_index(out, with_faiss=False)
        source = model or previous.info["model"]
        embedder = _load_embedder(source, dev)
        check_same_model(previous.info["identity"], embedder, index=str(out), model_name=source)
        captioner = captioner or previous.info.get("captioner")
        return index_folder(
            out,
            embedder,
            model_source=previous.info["model"],
            root=previous.info["root"],
            previous=previous,
            ann=ann or previous.info["ann"],
            ann_recall=ann_recall or (previous.info.get("ann_tuning") or {}).get("target", DEFAULT_RECALL),
            device=dev,
            captioner=_load_captioner(captioner, dev),
            captioner_source=_source_name(captioner) if captioner else None,
            **options,
        )
