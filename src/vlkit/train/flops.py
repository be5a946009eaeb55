"""Model FLOPs of a training step, counted from the config, and model FLOPs utilisation (MFU).

MFU = (model FLOPs of the steps done) / (seconds taken x the device's peak FLOP/s): the share of
the card's arithmetic the step's own matrix products use (PaLM, Chowdhery et al. 2022, appendix
B). Only matrix products count, as in that convention: norms, activations, softmax, the loss and
the optimizer are left out, and a recomputed activation (``train.activation_checkpointing``) is
not counted twice, so MFU does not reward extra work.

One transformer block of width ``d`` (``H`` heads of ``d / H``), key/value width ``kv``, MLP
width ``m``, on a sequence of ``T`` tokens, forward:

    linear:    2 x P x T        P = d(d + 2 kv) + d^2 + 2 d m     (qkv, out projection, MLP fc1 + fc2;
                                                                   a SwiGLU MLP has 3 d m)
    attention: 4 x T^2 x d      (Q K^T and the attention-weighted V, 2 T^2 d each; a causal mask is
                                 counted whole, as the convention does)

A tower of ``L`` such blocks adds its input and output projections (a ViT's patch embedding:
``3 p^2 d`` parameters applied to each of its ``N`` patches; CLIP's projection to the shared
space: ``d D`` applied to the one pooled token). Training costs three forwards: the backward
computes the gradients of the inputs and of the weights, each as much as the forward, so per
token ``6 x params-in-matmuls + 12 x L x T x d``, except that a tower's input layer (a ViT's patch
embedding) computes no input gradient (the pixels need none): two forwards. A tower whose
parameters are all frozen (it reads the input, so nothing before it trains) runs forward only.

SigLIP's image tower has no [CLS] (blocks on its N patches) and pools with a learned probe (MAP:
the probe's query and output projections and the MLP on one token, keys and values on N, attention
``4 x N x d``); its text tower runs on the whole context (captions are padded to it) and projects
the last token.

Families counted: CLIP, SigLIP. Others give None (the log then has neither ``flops_per_step`` nor ``mfu``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..models.base import unwrap
from ..models.clip import CLIP, CLIPConfig
from ..models.siglip import Siglip, SiglipConfig

# Dense bf16 peak FLOP/s (tensor cores, without sparsity) from NVIDIA's data sheets, looked up by
# torch.cuda.get_device_name(): the first entry whose key occurs in the name, so the more specific
# names come first. "NVIDIA H100 80GB HBM3" is the SXM card.
PEAK_FLOPS: tuple[tuple[str, float], ...] = (
    ("H100 PCIe", 756e12),
    ("H100 NVL", 835e12),
    ("H100", 989.4e12),
    ("H200", 989.4e12),
    ("A100", 312e12),
)


def peak_flops(device: torch.device | str, override: float | None = None) -> float | None:
    """The peak FLOP/s MFU is measured against: ``override`` (``train.peak_flops``) when given,
    else the bf16 peak of a CUDA device :data:`PEAK_FLOPS` knows; None for the CPU and unknown cards."""
    if override is not None:
        return float(override)
    device = torch.device(device)
    if device.type != "cuda":
        return None
    return peak_flops_of_name(torch.cuda.get_device_name(device))


def peak_flops_of_name(name: str) -> float | None:
    """The :data:`PEAK_FLOPS` entry of a device name (``"NVIDIA H100 80GB HBM3"``), or None."""
    for key, flops in PEAK_FLOPS:
        if key.lower() in name.lower():
            return flops
    return None


def block_forward_flops(
    *, width: int, mlp_dim: int, tokens: int, kv_width: int | None = None, gated: bool = False
) -> int:
    """Forward matmul FLOPs of one self-attention block on one sequence of ``tokens`` (module docstring)."""
    d, kv, T = width, width if kv_width is None else kv_width, tokens
    params = d * (d + 2 * kv) + d * d + (3 if gated else 2) * d * mlp_dim
    return 2 * params * T + 4 * T * T * d


def stack_forward_flops(*, width: int, depth: int, mlp_dim: int, tokens: int, gated: bool = False) -> int:
    """Forward matmul FLOPs of ``depth`` blocks on one sequence."""
    return depth * block_forward_flops(width=width, mlp_dim=mlp_dim, tokens=tokens, gated=gated)


def clip_image_flops(config: CLIPConfig) -> tuple[int, int, int]:
    """Forward matmul FLOPs of CLIP's image tower for one image: (the patch embedding, the blocks
    on 1 + N tokens, the projection of the [CLS] token)."""
    v = config.vision
    patch = 2 * v.in_channels * v.patch_size**2 * v.width * v.num_patches
    blocks = stack_forward_flops(width=v.width, depth=v.depth, mlp_dim=v.mlp_dim, tokens=1 + v.num_patches)
    return patch, blocks, 2 * v.width * config.embed_dim


def clip_text_flops(config: CLIPConfig, text_length: int) -> tuple[int, int, int]:
    """Forward matmul FLOPs of CLIP's text tower for one caption of ``text_length`` tokens: (the
    embedding lookup: none, the blocks on every token, the projection of the pooled one)."""
    t = config.text
    blocks = stack_forward_flops(width=t.width, depth=t.depth, mlp_dim=t.mlp_dim, tokens=text_length)
    return 0, blocks, 2 * t.width * config.embed_dim


def siglip_image_flops(config: SiglipConfig) -> tuple[int, int, int]:
    """Forward matmul FLOPs of SigLIP's image tower for one image: (the patch embedding, the blocks
    on N tokens and the MAP head, 0: the head's output is the feature)."""
    v = config.vision
    d, N = v.width, v.num_patches
    patch = 2 * v.in_channels * v.patch_size**2 * d * N
    blocks = stack_forward_flops(width=d, depth=v.depth, mlp_dim=v.mlp_dim, tokens=N)
    head = 2 * d * d + 2 * 2 * d * d * N + 4 * N * d + 2 * d * d + 2 * 2 * d * v.mlp_dim  # q, kv, attention, out, MLP
    return patch, blocks + head, 0


def siglip_text_flops(config: SiglipConfig, text_length: int) -> tuple[int, int, int]:
    """Forward matmul FLOPs of SigLIP's text tower for one caption: (0, the blocks on the context
    (``text_length`` tokens padded to ``context_length`` when the config pads), the head)."""
    t = config.text
    T = max(text_length, t.context_length) if t.pad_token_id is not None else text_length
    blocks = stack_forward_flops(width=t.width, depth=t.depth, mlp_dim=t.mlp_dim, tokens=T)
    return 0, blocks, 2 * t.width * config.embed_dim


def tower_train_flops(first: int, blocks: int, projection: int, *, tower_trains: bool, projection_trains: bool) -> int:
    """Training FLOPs of a tower that reads the input (``first``: its input layer, then the
    ``blocks``, then its ``projection``; forward FLOPs each): every part runs forward; its weight
    gradients cost another forward where it trains, its input gradients another where something
    before it trains (never for the input layer: the pixels need no gradient)."""
    t, p = int(tower_trains), int(projection_trains)
    return first * (1 + t) + blocks * (1 + 2 * t) + projection * (1 + t + p)


def two_tower_train_flops(
    config: CLIPConfig | SiglipConfig,
    *,
    batch_size: int,
    text_length: int,
    image_trained: bool = True,
    text_trained: bool = True,
    projections_trained: bool = True,
) -> int:
    """Model FLOPs of one CLIP or SigLIP training step on ``batch_size`` pairs whose texts are
    padded to ``text_length``: three forwards of what trains, one of a frozen tower (module docstring)."""
    if isinstance(config, SiglipConfig):
        image_parts, text_parts = siglip_image_flops(config), siglip_text_flops(config, text_length)
    else:
        image_parts, text_parts = clip_image_flops(config), clip_text_flops(config, text_length)
    image = tower_train_flops(*image_parts, tower_trains=image_trained, projection_trains=projections_trained)
    text = tower_train_flops(*text_parts, tower_trains=text_trained, projection_trains=projections_trained)
    return batch_size * (image + text)


clip_train_flops = two_tower_train_flops  # the name CLIP's users look for


def _trains(module: nn.Module) -> bool:
    return any(p.requires_grad for p in module.parameters())


def train_step_flops(model: nn.Module, batch: dict[str, Any], batch_size: int) -> int | None:
    """Model FLOPs of one training step of ``model`` on ``batch`` (``batch_size`` samples), or None
    for a family this module does not count."""
    model = unwrap(model)
    if not isinstance(model, (CLIP, Siglip)) or "input_ids" not in batch:
        return None
    if isinstance(model, CLIP):
        projections, text_tower = [model.image_proj, model.text_proj], model.text
    else:  # SigLIP: the MAP head is part of the image tower, the text head is the projection
        projections, text_tower = [model.text.head], model.text.encoder
    return two_tower_train_flops(
        model.config,
        batch_size=batch_size,
        text_length=int(batch["input_ids"].shape[1]),
        image_trained=_trains(model.visual),
        text_trained=_trains(text_tower),
        projections_trained=any(_trains(p) for p in projections),
    )
