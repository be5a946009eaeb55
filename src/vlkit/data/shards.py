"""WebDataset shards: image-text pairs in tar files, written from an annotation file and streamed
back for training, read with the ``webdataset`` library.

A sample is the files of one key in a tar: the image under ``jpg``/``jpeg``/``png``/``webp``, the
caption under ``txt`` and optional metadata under ``json`` (the convention of LAION-scale sets and
img2dataset). :func:`write_shards` writes them; :class:`ShardStream` reads them.

Order and resume. The data of an epoch is split into *streams*, one per (rank, data worker):
stream ``s`` of ``S`` takes every ``S``-th shard of the epoch's shard order (a permutation seeded
by ``(seed, epoch)``), reads its shards in turn (again, reshuffled, when they run out before the
epoch's end), shuffles samples through a seeded buffer and yields batches of ``batch_size``
samples. The data loader takes the workers' batches round-robin, so batch ``j`` of a rank comes
from worker ``j % num_workers``. Every batch is therefore a pure function of ``(seed, epoch,
rank, worker, j)``. Each sample is read once per epoch when the shards split evenly over the
streams and ``num_samples`` is their total; otherwise a stream that runs out reads its shards
again and one with more leaves its last samples for the next epoch (webdataset's ``with_epoch``
behaves the same way). A run resumed at batch ``k`` of an epoch gets exactly the batches an
uninterrupted run would have (each stream skips the samples of its first batches before decoding
them: those tar bytes are read again, but no image is decoded twice).

Bad samples (a corrupt image, a missing image or caption, a truncated tar) are skip records in
the batch (:mod:`vlkit.data.skips`), counted and reported like the folder data's; never fatal.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image
from torch.utils.data import IterableDataset, get_worker_info

from .images import ImageError, load_image
from .skips import Skipped, SkipReport

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")


def expand_shards(spec: str | os.PathLike | Sequence[str]) -> list[str]:
    """Shard URLs from a brace pattern (``shards/{000000..000099}.tar``), a list of them, or a text
    file listing one per line (``.txt``). Local paths, ``pipe:`` and http(s) URLs as webdataset
    opens them."""
    from webdataset.shardlists import expand_urls

    if isinstance(spec, (list, tuple)):
        urls = [u for item in spec for u in expand_urls(str(item))]
    else:
        text = str(spec)
        if text.endswith(".txt") and Path(text).is_file():
            lines = Path(text).read_text(encoding="utf-8").splitlines()
            urls = [u for line in lines if line.strip() for u in expand_urls(line.strip())]
        else:
            urls = list(expand_urls(text))
    if not urls:
        raise ValueError(f"data.train_shards {spec!r} names no shards")
    local = [u for u in urls if "://" not in u and not u.startswith("pipe:")]
    missing = [u for u in local if not Path(u).is_file()]
    if missing:
        raise FileNotFoundError(f"shard {missing[0]} does not exist ({len(missing)} of {len(urls)} shards missing)")
    return urls


def _shard_samples(url: str) -> Iterator[dict[str, Any]]:
    """The raw samples ({"__key__", "jpg": bytes, "txt": bytes, ...}) of one tar; a tar that cannot
    be read to its end adds one skip record after the samples that could be read."""
    from webdataset.tariterators import tarfile_samples

    errors: list[Exception] = []

    def stop_shard(error: Exception) -> bool:
        errors.append(error)
        return False  # the rest of a broken tar cannot be trusted; the run goes on with the next shard

    yield from tarfile_samples([{"url": url}], handler=stop_shard)
    for error in errors[:1]:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        yield {"skipped": Skipped(url, "unreadable shard", reason)}


def decode_sample(raw: dict[str, Any], transform: Callable | None) -> dict[str, Any]:
    """A raw tar sample -> {"pixel_values" (or "image"), "caption", "key", "index"} or a skip record."""
    if "skipped" in raw:
        return {"skipped": raw["skipped"], "index": -1}
    key = f"{raw.get('__url__', '?')}:{raw.get('__key__', '?')}"
    image_bytes = next((raw[ext] for ext in IMAGE_EXTENSIONS if ext in raw), None)
    if image_bytes is None:
        return {"skipped": Skipped(key, "missing image", f"no {'/'.join(IMAGE_EXTENSIONS)} file"), "index": -1}
    caption = raw.get("txt", b"").decode("utf-8", errors="replace").strip()
    if not caption:
        return {"skipped": Skipped(key, "empty caption"), "index": -1}
    try:
        image = load_image(io.BytesIO(image_bytes))
    except ImageError as e:
        return {"skipped": Skipped(key, "unreadable image", e.reason), "index": -1}
    sample: dict[str, Any] = {"caption": caption, "key": key, "index": -1}
    if "json" in raw:
        with contextlib.suppress(ValueError):  # metadata is optional; a broken one does not cost the sample
            sample["metadata"] = json.loads(raw["json"])
    if transform is None:
        return {**sample, "image": image}
    return {**sample, "pixel_values": transform(image)}


def _shuffled(samples: Iterator[dict], buffer_size: int, rng: random.Random) -> Iterator[dict]:
    """Buffer shuffle: fill a buffer, then yield a random element and replace it with the next."""
    buffer: list[dict] = []
    for sample in samples:
        if len(buffer) < buffer_size:
            buffer.append(sample)
            continue
        i = rng.randrange(len(buffer))
        buffer[i], sample = sample, buffer[i]
        yield sample
    rng.shuffle(buffer)
    yield from buffer


class ShardStream(IterableDataset):
    """Batches (lists of decoded samples or skip records) from WebDataset shards, one epoch of
    ``num_samples`` per rank-group at a time; see the module for the order and for resuming.

    Use with ``DataLoader(stream, batch_size=None, collate_fn=collator, num_workers=W)`` (the
    stream batches itself). ``set_epoch(epoch, start=k)`` makes the next iteration start at
    batch ``k`` of this rank's epoch.
    """

    def __init__(
        self,
        shards: str | Sequence[str],
        *,
        num_samples: int,
        batch_size: int,
        transform: Callable | None = None,
        seed: int = 0,
        shuffle_buffer: int = 1000,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if num_samples < 1 or batch_size < 1:
            raise ValueError(f"num_samples ({num_samples}) and batch_size ({batch_size}) must be positive")
        self.urls = expand_shards(shards)
        self.num_samples = num_samples
        self.batch_size, self.transform, self.seed = batch_size, transform, seed
        self.shuffle_buffer, self.rank, self.world = shuffle_buffer, rank, world_size
        self.batches_per_epoch = num_samples // (world_size * batch_size)  # per rank, the last partial one dropped
        if self.batches_per_epoch == 0:
            raise ValueError(
                f"data.train_num_samples {num_samples} is less than one batch on each of {world_size} ranks"
            )
        self.epoch, self.start = 0, 0

    def __len__(self) -> int:
        return self.batches_per_epoch

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def _stream_samples(self, stream: int, streams: int) -> Iterator[dict]:
        """Raw samples of one stream: its shards of the epoch's order, buffer-shuffled, and again
        (reshuffled) when the epoch is longer than one pass; a pass ends before the next begins,
        so an epoch no longer than the data sees every sample at most once."""
        if len(self.urls) < streams:
            raise ValueError(
                f"{len(self.urls)} shards cannot feed {streams} streams (ranks x data workers): "
                "write smaller shards or use fewer data workers"
            )
        rng = random.Random(f"{self.seed}-{self.epoch}-{stream}")
        repeat = 0
        while True:
            order = list(self.urls)
            random.Random(f"{self.seed}-{self.epoch}-{repeat}").shuffle(order)
            mine = order[stream::streams]
            read = 0
            for sample in _shuffled((s for url in mine for s in _shard_samples(url)), self.shuffle_buffer, rng):
                read += 1
                yield sample
            if read == 0:
                raise ValueError(f"the shards of data stream {stream} hold no samples: {mine[:3]}")
            repeat += 1

    def __iter__(self) -> Iterator[list[dict[str, Any]]]:
        info = get_worker_info()
        workers = 1 if info is None else info.num_workers
        # The loader asks workers 0, 1, ... in turn from the start of an iteration, so after a
        # resume at batch `start` worker 0 serves the stream whose next batch is `start`.
        worker = (0 if info is None else info.id + self.start) % workers
        stream, streams = self.rank * workers + worker, self.world * workers
        mine = range(worker, self.batches_per_epoch, workers)  # this worker's batch numbers
        done = len(range(worker, min(self.start, self.batches_per_epoch), workers))
        samples = self._stream_samples(stream, streams)
        for _ in range(done * self.batch_size):  # resume: skip what was trained on, undecoded
            next(samples)
        for _ in range(len(mine) - done):
            yield [decode_sample(next(samples), self.transform) for _ in range(self.batch_size)]


@dataclass
class ShardSummary:
    """What :func:`write_shards` wrote."""

    out: Path
    shards: list[str] = field(default_factory=list)
    samples: int = 0
    bytes: int = 0
    skipped: SkipReport = field(default_factory=SkipReport)

    def pattern(self) -> str:
        """The brace pattern naming every shard written."""
        if len(self.shards) == 1:
            return str(self.out / self.shards[0])
        first, last = self.shards[0].split("-")[-1][:-4], self.shards[-1].split("-")[-1][:-4]
        return str(self.out / f"shard-{{{first}..{last}}}.tar")

    def lines(self) -> list[str]:
        size = f"{self.bytes / 2**20:.1f} MiB"
        lines = [f"wrote {self.samples} samples in {len(self.shards)} shards ({size}) to {self.out}"]
        if self.shards:
            lines.append(f"data.train_shards: {self.pattern()}")
        if len(self.skipped):
            lines.append(self.skipped.summary())
        return lines


def encode_image(path: Path, image_size: int | None) -> tuple[str, bytes]:
    """(extension, bytes) of an image for a shard: the file as it is when it is a jpg/png/webp and
    no resizing is asked for; otherwise decoded, resized so its shorter side is at most
    ``image_size``, and stored as JPEG (PNG when it has no size limit to save on, to stay lossless)."""
    image = load_image(path)  # also proves the file decodes
    ext = path.suffix.lower().lstrip(".")
    if image_size is None and ext in IMAGE_EXTENSIONS:
        return ("jpg" if ext == "jpeg" else ext), path.read_bytes()
    if image_size is not None and min(image.size) > image_size:
        scale = image_size / min(image.size)
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.resize(size, Image.Resampling.BICUBIC)
    buffer = io.BytesIO()
    if image_size is None:
        image.save(buffer, format="PNG")
        return "png", buffer.getvalue()
    image.save(buffer, format="JPEG", quality=95)
    return "jpg", buffer.getvalue()


def write_shards(
    pairs: Sequence[tuple[Path, str]],
    out: str | os.PathLike,
    *,
    shard_size: int,
    image_size: int | None = None,
    overwrite: bool = False,
    root: Path | None = None,
    on_sample: Callable[[], None] | None = None,
) -> ShardSummary:
    """Write (image path, caption) pairs as shards ``out/shard-000000.tar``, ... of ``shard_size``
    samples each; key ``%09d`` of the pair's position, metadata ``{"path", "index"}`` (the path
    relative to ``root`` when given). The folder appears whole or not at all
    (:func:`vlkit.files.new_folder`); unreadable images are skipped and counted. ``on_sample`` is
    called after each pair (a progress bar)."""
    from webdataset import TarWriter

    from ..files import new_folder

    if shard_size < 1:
        raise ValueError(f"--shard-size must be a positive number of samples, got {shard_size}")
    summary = ShardSummary(Path(out))
    with new_folder(out, overwrite=overwrite) as tmp:
        writer, count = None, 0
        for index, (path, caption) in enumerate(pairs):
            try:
                ext, data = encode_image(path, image_size)
            except ImageError as e:
                summary.skipped.add([Skipped(str(path), "unreadable image", e.reason)])
            else:
                if writer is None or count == shard_size:
                    if writer is not None:
                        writer.close()
                    summary.shards.append(f"shard-{len(summary.shards):06d}.tar")
                    writer, count = TarWriter(str(tmp / summary.shards[-1])), 0
                rel = os.path.relpath(path, root) if root is not None else str(path)
                meta = {"path": rel, "index": index}
                writer.write({"__key__": f"{index:09d}", ext: data, "txt": caption, "json": json.dumps(meta)})
                count += 1
                summary.samples += 1
            if on_sample is not None:
                on_sample()
        if writer is not None:
            writer.close()
        summary.bytes = sum((tmp / name).stat().st_size for name in summary.shards)
    return summary
