"""``vlkit train``: train a model from a YAML/JSON config, every field overridable.

    vlkit train --config configs/clip-shapes.yaml --set optim.lr=1e-3 --train.max_steps 2000
    vlkit train --config configs/clip-shapes.yaml --resume          # continue from the newest checkpoint
    torchrun --nproc_per_node 2 --no-python vlkit train --config configs/clip-shapes.yaml   # DDP
"""
from __future__ import annotations

import argparse
import dataclasses
import sys

from ..train.config import SECTIONS


def add_commands(commands) -> None:
    p = commands.add_parser(
        "train", help="train a model from a config file",
        description="Train a model. Every config field can be set with --set section.field=value or "
        "--section.field value; model fields (nested) with --set model.vision.width=128.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", help="YAML or JSON config file (default: the built-in defaults)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. optim.lr=1e-3 (repeatable)")
    p.add_argument("--resume", nargs="?", const=True, default=False, metavar="CHECKPOINT",
                   help="continue from a checkpoint (default: the newest in train.output_dir)")
    p.add_argument("--stop-after", type=int, default=None, metavar="STEPS",
                   help="stop after this many steps with a checkpoint, as if interrupted (the schedule still "
                   "runs to train.max_steps)")
    p.add_argument("--overwrite", action="store_true",
                   help="start afresh in an output_dir that holds an earlier run (deletes its checkpoints and metrics)")
    p.add_argument("--task", dest="dotted:task", metavar="NAME", help="the task (config field task)")
    for key in ("preset", "pretrained"):
        p.add_argument(f"--model.{key}", dest=f"dotted:model.{key}", metavar="VALUE", help=argparse.SUPPRESS)
    for section, section_cls in SECTIONS.items():
        group = p.add_argument_group(f"{section} fields (--{section}.FIELD VALUE)")
        for f in dataclasses.fields(section_cls):
            group.add_argument(f"--{section}.{f.name}", dest=f"dotted:{section}.{f.name}", metavar="V",
                               help=argparse.SUPPRESS)
        group.description = ", ".join(f.name for f in dataclasses.fields(section_cls))
    p.set_defaults(run=run)


def overrides_from_args(args: argparse.Namespace) -> list[str]:
    """``--set`` items, then the dotted flags, as ``key=value`` strings."""
    out = list(args.overrides)
    for dest, value in vars(args).items():
        if dest.startswith("dotted:") and value is not None:
            out.append(f"{dest[len('dotted:'):]}={value}")
    return out


def run(args: argparse.Namespace) -> int:
    from ..train import load_config, train
    from ..train.checkpoint import latest_checkpoint, load_checkpoint
    from ..train.config import Config, apply_overrides

    overrides = overrides_from_args(args)
    if args.config is None and args.resume not in (False, True):
        # resuming a given checkpoint without a config: use the checkpoint's own
        cfg = Config.from_dict(apply_overrides(load_checkpoint(args.resume)["config"], overrides), "checkpoint config")
    else:
        cfg = load_config(args.config, overrides)
        if args.config is None and args.resume is True:
            latest = latest_checkpoint(cfg.train.output_dir)
            if latest is not None:
                cfg = Config.from_dict(apply_overrides(load_checkpoint(latest)["config"], overrides), "checkpoint config")
    try:
        train(cfg, resume=args.resume, stop_after=args.stop_after, overwrite=args.overwrite)
    except FileExistsError as e:
        print(f"vlkit train: error: {e}", file=sys.stderr)
        return 2
    return 0
