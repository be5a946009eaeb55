"""Training: config, the generic loop, AdamW groups and schedule, checkpoints, distributed helpers.

from vlkit.train import load_config, train
result = train(load_config("configs/clip-shapes.yaml", ["train.max_steps=200"]))
"""

from .checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from .config import Config, DataConfig, EvalConfig, OptimConfig, TrainConfig, apply_overrides, load_config
from .loop import TrainResult, train
from .optim import build_optimizer, build_scheduler, lr_factor, no_decay_names, param_groups

__all__ = [
    "Config",
    "DataConfig",
    "EvalConfig",
    "OptimConfig",
    "TrainConfig",
    "TrainResult",
    "apply_overrides",
    "build_optimizer",
    "build_scheduler",
    "latest_checkpoint",
    "load_checkpoint",
    "load_config",
    "lr_factor",
    "no_decay_names",
    "param_groups",
    "save_checkpoint",
    "train",
]
