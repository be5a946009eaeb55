"""How the model is spread over the processes of a run, and what it keeps for the backward pass.

``train.strategy``:

- ``ddp`` (default): every process holds the whole model, optimizer state and gradients;
  DistributedDataParallel averages the gradients. Simple and fastest while the model fits.
- ``fsdp``: PyTorch's FSDP2 (``fully_shard``): each :class:`~vlkit.layers.Block` and then the
  whole model are sharded over the processes, so each holds ``1/world`` of the parameters,
  gradients and optimizer state; a Block's parameters are all-gathered just before it runs and
  freed after. On a GPU under bf16 precision the gathered parameters are bf16 and gradients are
  reduced in float32 (``MixedPrecisionPolicy``). With one process ``fsdp`` is plain training.

``train.activation_checkpointing: true`` keeps only each Block's input for the backward pass and
recomputes the rest (``torch.utils.checkpoint``, non-reentrant; dropout replays the same mask):
activation memory falls from every Block's intermediate tensors to one Block's, for about one more
forward pass of compute. Both compose with the contrastive losses' feature gathering.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..layers import Block

STRATEGIES = ("ddp", "fsdp")


def checkpoint_blocks(model: nn.Module) -> int:
    """Recompute every Block's activations in the backward pass; the number of Blocks wrapped.
    Parameter names and the state dict are unchanged."""
    count = 0
    for module in model.modules():
        if isinstance(module, Block):
            module.forward = _checkpointed(module)  # type: ignore[method-assign]
            count += 1
    return count


def _checkpointed(block: Block):
    plain = type(block).forward

    def forward(x: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        if not torch.is_grad_enabled():
            return plain(block, x, **kwargs)
        return torch.utils.checkpoint.checkpoint(plain, block, x, use_reentrant=False, **kwargs)

    return forward


def shard_model(model: nn.Module, *, device: torch.device, world_size: int, bf16: bool) -> None:
    """FSDP2 in place: every Block, then the rest of the model as one unit."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    mesh = init_device_mesh(device.type, (world_size,))
    policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if bf16 else None
    kwargs: dict[str, Any] = {"mesh": mesh} if policy is None else {"mesh": mesh, "mp_policy": policy}
    for module in model.modules():
        if isinstance(module, Block):
            fully_shard(module, **kwargs)
    # FSDP shards along dim 0 and refuses scalars (a temperature, a logit bias): those stay whole
    # on every process and their gradients are averaged as DDP would
    scalars = {p for p in model.parameters() if p.dim() == 0}
    for p in scalars:
        if p.requires_grad:
            p.register_post_accumulate_grad_hook(_average_grad)
    fully_shard(model, ignored_params=scalars or None, **kwargs)


def _average_grad(param: torch.Tensor) -> None:
    import torch.distributed as dist

    if param.grad is not None:
        dist.all_reduce(param.grad, op=dist.ReduceOp.AVG if dist.get_backend() == "nccl" else dist.ReduceOp.SUM)
        if dist.get_backend() != "nccl":  # gloo has no AVG
            param.grad /= dist.get_world_size()


def is_sharded(model: nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def full_model_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The whole model's state dict on the CPU. For a sharded model a collective (every process
    calls it); the main process gets the tensors, the others an empty dict."""
    if not is_sharded(model):
        return model.state_dict()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def local_value(x: torch.Tensor) -> torch.Tensor:
    """A plain tensor of ``x`` (a DTensor, e.g. the gradient norm of a sharded model, is made whole)."""
    full_tensor = getattr(x, "full_tensor", None)
    return full_tensor() if callable(full_tensor) else x
