"""Batching: a collate function that tokenizes captions, and a resumable, shardable sampler.

The order of samples is a pure function of ``(seed, epoch)``; rank ``r`` of ``w`` takes every
``w``-th index of the epoch's permutation (as ``DistributedSampler`` does), and a run resumed at
step ``s`` starts the sampler at the exact sample it would have reached, without loading the
skipped ones. Together with datasets that are pure functions of their index this makes a resumed
run see the same batches as an uninterrupted one.

Grouping by length (``data.group_by_length``): each run of :data:`GROUP_BATCHES` batches of the
shuffled order is sorted by the samples' lengths (``dataset.length(index)``), cut into batches of
similar lengths, and those batches are shuffled among themselves; a padded batch then holds
little padding (texts of 8 to 60 words: half the tokens, about twice the steps per second). Every
sample is still seen once an epoch, and the order is still a pure function of ``(seed, epoch)``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import DataLoader, Sampler

from ..losses.itm import caption_ids
from .shards import ShardStream
from .skips import start_batch


class ImageTextCollator:
    """Stack images and tokenize captions into one batch.

    Returns ``{"pixel_values": (B, 3, H, W), "input_ids": (B, T), "attention_mask": (B, T),
    "captions": [str], "caption_ids": (B,), "index": (B,), "attributes": [dict] (when the dataset
    has them), "skipped": [Skipped]}``. ``caption_ids`` (:func:`caption_ids`) are equal for equal
    captions: the tasks that treat equal captions as one pair read them as a tensor, so a compiled
    step never sees the strings. Samples a dataset marked as skipped are dropped and passed on under
    ``"skipped"``. Captions are padded to the longest in the batch (``padding="longest"``), which
    for a causal text tower gives the same features as padding to the full context.
    """

    def __init__(self, tokenizer: Callable[..., dict[str, torch.Tensor]], padding: str = "longest") -> None:
        self.tokenizer = tokenizer
        self.padding = padding

    def __call__(self, items: Sequence[dict[str, Any]]) -> dict[str, Any]:
        batch, items = start_batch(items)
        batch["captions"] = [it["caption"] for it in items]
        if not items:
            return batch
        if "pixel_values" not in items[0]:
            raise TypeError(
                "dataset items have no 'pixel_values': give the dataset a transform (vlkit.image_transform)"
            )
        batch["pixel_values"] = torch.stack([it["pixel_values"] for it in items])  # (B, 3, H, W)
        tokens = self.tokenizer(batch["captions"], padding=self.padding)
        batch["input_ids"] = tokens["input_ids"]  # (B, T)
        batch["attention_mask"] = tokens["attention_mask"]  # (B, T)
        batch["caption_ids"] = caption_ids(batch["captions"])  # (B,)
        if "attributes" in items[0]:
            batch["attributes"] = [it["attributes"] for it in items]
        return batch


GROUP_BATCHES = 64  # batches sorted by length together when grouping by length


class ResumableSampler(Sampler[int]):
    """Shuffled (or ordered) indices of one epoch for one rank, starting at any position.

    ``set_epoch(e, start=k)`` makes the next iteration yield this rank's indices of epoch ``e``
    from its ``k``-th on. With ``drop_last`` every rank gets ``len(dataset) // world_size``
    indices (equal batch counts on all ranks, as distributed training needs). With ``lengths``
    (index -> length) and ``batch_size``, batches are grouped by length (module docs); lengths
    are read a group at a time, only for the groups that are iterated.
    """

    def __init__(
        self,
        num_samples: int,
        *,
        shuffle: bool = True,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = True,
        lengths: Callable[[int], int] | None = None,
        batch_size: int = 1,
    ) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, {world_size})")
        self.n, self.shuffle, self.seed, self.rank, self.world = num_samples, shuffle, seed, rank, world_size
        self.lengths, self.batch_size = lengths, batch_size
        self.per_rank = num_samples // world_size if drop_last else -(-num_samples // world_size)
        if self.per_rank == 0:
            raise ValueError(f"{num_samples} samples cannot be shared by {world_size} processes")
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def indices(self, epoch: int) -> list[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = list(range(self.n))
        total = self.per_rank * self.world
        order = (order + order[: total - len(order)]) if total > len(order) else order[:total]
        return order[self.rank :: self.world]

    def __iter__(self) -> Iterator[int]:
        order = self.indices(self.epoch)
        if self.lengths is None:
            return iter(order[self.start :])
        return self._grouped(order)

    def _grouped(self, order: list[int]) -> Iterator[int]:
        """``order`` regrouped by length (module docs), from the ``start``-th index on."""
        span = self.batch_size * GROUP_BATCHES
        first = self.start // span * span  # the groups before the start's are skipped unread
        for begin in range(first, len(order), span):
            group = sorted(order[begin : begin + span], key=self.lengths)  # type: ignore[arg-type]
            full = len(group) // self.batch_size * self.batch_size  # a last, partial batch stays last
            batches = [group[i : i + self.batch_size] for i in range(0, full, self.batch_size)]
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch * 7_919 + begin)
            regrouped = [i for b in torch.randperm(len(batches), generator=g).tolist() for i in batches[b]]
            yield from (regrouped + group[full:])[max(0, self.start - begin) :]

    def __len__(self) -> int:
        return self.per_rank - self.start


class StepLoader:
    """Batches for step-based training: walks epochs forever, resumable at any step.

    ``batches(start_step)`` yields ``(step, epoch, batch)`` for steps ``start_step + 1, ...``;
    ``on_epoch_end(epoch)`` (if given) is called when an epoch's batches are used up.
    """

    def __init__(
        self,
        dataset,
        collate: Callable,
        batch_size: int,
        *,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        num_workers: int = 0,
        pin_memory: bool = False,
        group_by_length: bool = False,
    ) -> None:
        self.dataset, self.batch_size = dataset, batch_size
        self.sampler: ResumableSampler | None = None
        lengths = getattr(dataset, "length", None) if group_by_length else None
        if group_by_length and lengths is None:
            raise ValueError(
                f"data.group_by_length needs a dataset whose samples have a length (text data); "
                f"{type(dataset).__name__} has none"
            )
        if isinstance(dataset, ShardStream):  # batches itself, split over ranks and workers
            self.steps_per_epoch, self.samples_per_epoch = len(dataset), dataset.num_samples
        else:
            self.sampler = ResumableSampler(
                len(dataset), seed=seed, rank=rank, world_size=world_size, lengths=lengths, batch_size=batch_size
            )
            self.steps_per_epoch, self.samples_per_epoch = self.sampler.per_rank // batch_size, len(dataset)
        if self.steps_per_epoch == 0:
            raise ValueError(
                f"batch_size {batch_size} x {world_size} processes is more than the {len(dataset)} training samples"
            )
        self.collate, self.num_workers, self.pin_memory = collate, num_workers, pin_memory

    def _loader(self) -> DataLoader:
        if self.sampler is None:
            return DataLoader(
                self.dataset,
                batch_size=None,
                collate_fn=self.collate,
                num_workers=self.num_workers,
                pin_memory=self.pin_memory,
            )
        # A private generator: creating the iterator must not consume the global RNG (resume).
        return DataLoader(
            self.dataset,
            batch_size=self.batch_size,
            sampler=self.sampler,
            collate_fn=self.collate,
            num_workers=self.num_workers,
            drop_last=True,
            pin_memory=self.pin_memory,
            generator=torch.Generator().manual_seed(0),
            persistent_workers=False,
        )

    def batches(self, start_step: int = 0, on_epoch_end: Callable[[int], None] | None = None):
        epoch, offset = divmod(start_step, self.steps_per_epoch)
        step = start_step
        while True:
            if self.sampler is None:
                self.dataset.set_epoch(epoch, start=offset)
            else:
                self.sampler.set_epoch(epoch, start=offset * self.batch_size)
            for batch in self._loader():
                step += 1
                yield step, epoch, batch
            if on_epoch_end is not None:
                on_epoch_end(epoch)
            epoch, offset = epoch + 1, 0


def eval_loader(dataset, collate: Callable, batch_size: int, num_workers: int = 0) -> DataLoader:
    """Every sample once, in order (evaluation, embedding)."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        collate_fn=collate,
        num_workers=num_workers,
        generator=torch.Generator().manual_seed(0),
    )
