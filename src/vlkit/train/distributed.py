"""Distributed helpers: the same training script runs as one process or under ``torchrun``.

``torchrun`` sets ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE``; :func:`setup` then joins the
process group (NCCL on CUDA, gloo on CPU) and picks this process's device. Without them
everything here is a no-op for a single process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from ..runtime import resolve_device


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _device(requested: str, local_rank: int) -> torch.device:
    """The device of this process: ``requested`` (checked by :func:`vlkit.runtime.resolve_device`),
    a bare ``cuda`` (or ``auto`` on a GPU machine) becoming the GPU of the local rank."""
    device = resolve_device(requested)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local_rank % torch.cuda.device_count())
    return device


def setup(device: str = "auto") -> DistInfo:
    """Join the process group when launched by torchrun; return rank, world size and device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = _device(device, local_rank)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    return DistInfo(rank=rank, local_rank=local_rank, world_size=world, device=dev)


def cleanup(*, synchronize: bool = False) -> None:
    """Leave the process group. ``synchronize`` (on the success path only): wait for every process
    first, so that none tears its gloo connections down while another still uses them (an abort
    at exit otherwise); on an error path torchrun ends the processes still waiting."""
    if dist.is_available() and dist.is_initialized():
        if synchronize and dist.get_world_size() > 1:
            dist.barrier()
        dist.destroy_process_group()


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def mean_across(values: dict[str, float], device: torch.device) -> dict[str, float]:
    """The average of each value over all processes (the values themselves when single)."""
    if not is_distributed() or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    t /= dist.get_world_size()
    return dict(zip(keys, t.tolist()))


def min_across(value: int, device: torch.device) -> int:
    """The smallest ``value`` over all processes (``value`` itself when single)."""
    if not is_distributed():
        return value
    t = torch.tensor([value], dtype=torch.long, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return int(t.item())


def gather_objects(obj: Any) -> list[Any]:
    """Every process's ``obj``, by rank (a one-element list when single)."""
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def raise_if_any(error: BaseException | None) -> None:
    """Raise on every process when any process had ``error`` (the lowest rank's), so that a
    failure on rank 0 (a full disk, a refused output folder) ends every process alike instead of
    leaving the others waiting at the next collective."""
    errors = [e for e in gather_objects(error) if e is not None]
    if errors:
        raise errors[0]


def launched_as_main() -> bool:
    """Whether this process is rank 0 of its launch (torchrun's ``RANK``; True when single).
    Readable before the process group forms and after it is gone (for printing errors once)."""
    return os.environ.get("RANK", "0") == "0"
