"""``vlkit train``: train a model from a YAML/JSON config, every field overridable.

    vlkit train --config configs/clip-shapes.yaml --set optim.lr=1e-3 --train.max_steps 2000
    vlkit train --config configs/clip-shapes.yaml --resume          # continue from the newest checkpoint
    vlkit train --config configs/clip-shapes.yaml --profile-loader 50   # the data loader alone: batches/s
    torchrun --nproc_per_node 2 --no-python vlkit train --config configs/clip-shapes.yaml \\
        --train.output_dir runs/clip-ddp                                # DDP, in its own run folder
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

from ..train.config import SECTIONS


def add_commands(commands) -> None:
    p = commands.add_parser(
        "train",
        help="train a model from a config file",
        description="Train a model. Every config field can be set with --set section.field=value or "
        "--section.field value; model fields (nested) with --set model.vision.width=128.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", help="YAML or JSON config file (default: the built-in defaults)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config field, e.g. optim.lr=1e-3 (repeatable)",
    )
    p.add_argument(
        "--resume",
        nargs="?",
        const=True,
        default=False,
        metavar="CHECKPOINT",
        help="continue from a checkpoint (default: the newest readable one in train.output_dir)",
    )
    p.add_argument(
        "--stop-after",
        type=int,
        default=None,
        metavar="STEPS",
        help="stop after this many steps with a checkpoint, as if interrupted (the schedule still "
        "runs to train.max_steps)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="start afresh in an output_dir that holds an earlier run (deletes what that run wrote: "
        "checkpoints, metrics, plots, config.yaml, model/)",
    )
    p.add_argument(
        "--profile-loader",
        type=int,
        default=None,
        metavar="BATCHES",
        help="read this many training batches without the model and report the loader's batches/s "
        "(does the data keep the device fed?); trains nothing",
    )
    p.add_argument("--task", dest="dotted:task", metavar="NAME", help="the task (config field task)")
    for key in ("preset", "pretrained"):
        p.add_argument(f"--model.{key}", dest=f"dotted:model.{key}", metavar="VALUE", help=argparse.SUPPRESS)
    for section, section_cls in SECTIONS.items():
        group = p.add_argument_group(f"{section} fields (--{section}.FIELD VALUE)")
        for f in dataclasses.fields(section_cls):
            group.add_argument(
                f"--{section}.{f.name}", dest=f"dotted:{section}.{f.name}", metavar="V", help=argparse.SUPPRESS
            )
        group.description = ", ".join(f.name for f in dataclasses.fields(section_cls))
    p.set_defaults(run=run)


def overrides_from_args(args: argparse.Namespace) -> list[str]:
    """``--set`` items, then the dotted flags, as ``key=value`` strings."""
    out = list(args.overrides)
    for dest, value in vars(args).items():
        if dest.startswith("dotted:") and value is not None:
            out.append(f"{dest[len('dotted:') :]}={value}")
    return out


def run(args: argparse.Namespace) -> int:
    """Train; a user error (a refused output folder, a bad value, a full disk) is one line on
    stderr, printed once under torchrun (by rank 0), and exit status 2 on every process."""
    from ..train.distributed import launched_as_main

    try:
        _train(args)
    except (OSError, ValueError, KeyError, TypeError, FloatingPointError) as e:
        if launched_as_main():
            message = e.args[0] if isinstance(e, KeyError) and e.args else e
            print(f"vlkit train: error: {message}", file=sys.stderr)
        return 2
    return 0


def _train(args: argparse.Namespace) -> None:
    from ..train import load_config, train
    from ..train.checkpoint import load_checkpoint, newest_usable_checkpoint
    from ..train.config import Config, apply_overrides

    if args.stop_after is not None and args.stop_after < 1:
        raise ValueError(f"--stop-after must be at least 1, got {args.stop_after}")
    overrides = overrides_from_args(args)
    if args.config is None and args.resume not in (False, True):
        # resuming a given checkpoint without a config: use the checkpoint's own
        cfg = Config.from_dict(apply_overrides(load_checkpoint(args.resume)["config"], overrides), "checkpoint config")
    else:
        cfg = load_config(args.config, overrides)
        if args.config is None and args.resume is True:
            _, state, _ = newest_usable_checkpoint(cfg.train.output_dir)
            if state is not None:
                cfg = Config.from_dict(apply_overrides(state["config"], overrides), "checkpoint config")
    if args.profile_loader is not None:
        from ..train.loader_profile import profile_loader

        print(profile_loader(cfg, batches=args.profile_loader).summary())
        return
    train(cfg, resume=args.resume, stop_after=args.stop_after, overwrite=args.overwrite)
