"""A model's identity: what an index records so that a query embedded by another model is refused.

Two models are the same when their family, config and weights are: ``config_sha256`` hashes the
config (as ``config.json`` stores it) and ``weights_sha256`` every tensor of the state dict (names,
dtypes, shapes and bytes, in name order). A model saved and loaded again keeps its identity; one
trained a step further does not.
"""

from __future__ import annotations

import hashlib
import json

import torch
from torch import nn

from ..models.registry import config_to_dict


def model_identity(model: nn.Module) -> dict[str, str]:
    """``{"model_type", "config_sha256", "weights_sha256"}`` of ``model``."""
    config = getattr(model, "config", None)
    config_json = json.dumps(config_to_dict(config) if config is not None else {}, sort_keys=True, default=str)
    weights = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        weights.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        weights.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return {
        "model_type": str(getattr(model, "model_type", type(model).__name__)),
        "config_sha256": hashlib.sha256(config_json.encode()).hexdigest(),
        "weights_sha256": weights.hexdigest(),
    }


def check_same_model(index_identity: dict[str, str], model: nn.Module, *, index: str, model_name: str) -> None:
    """A ValueError when ``model`` is not the model whose identity the index ``index`` recorded."""
    mine = model_identity(model)
    if mine == index_identity:
        return
    what = "config" if mine["config_sha256"] != index_identity.get("config_sha256") else "weights"
    raise ValueError(
        f"{model_name} is not the model index {index} was built with (its {what} differ: "
        f"{index_identity.get('model_type')} {index_identity.get(what + '_sha256', '?')[:12]} in the index, "
        f"{mine['model_type']} {mine[what + '_sha256'][:12]} given); query with the index's model or rebuild the index"
    )
