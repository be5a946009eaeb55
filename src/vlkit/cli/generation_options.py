"""The generation flags of ``vlkit caption``, ``vlkit vqa`` and ``vlkit eval captioning|vqa``, and
the :class:`vlkit.GenerationConfig` they make (validated there; errors name the flags)."""

from __future__ import annotations

import argparse
import re

import torch

from ..models.generation_config import GenerationConfig

_FLAG_OF = {
    name: "--" + name.replace("_", "-")
    for name in (
        "num_beams",
        "max_new_tokens",
        "min_new_tokens",
        "min_length",
        "repetition_penalty",
        "length_penalty",
        "top_p",
        "top_k",
        "temperature",
    )
}


def add_generation_arguments(
    p: argparse.ArgumentParser, *, beams: int, max_new: int, min_length: int, sampling: bool = False
) -> None:
    """Beam width, lengths and penalties (defaults per command); ``sampling`` adds ``--sample``,
    ``--top-p``, ``--top-k``, ``--temperature`` and ``--seed``."""
    g = p.add_argument_group("generation")
    g.add_argument(
        "--num-beams", type=int, default=beams, help=f"beam search width (1: greedy; default {beams}, BLIP's)"
    )
    g.add_argument(
        "--max-new-tokens", type=int, default=max_new, help=f"at most this many new tokens (default {max_new})"
    )
    g.add_argument(
        "--min-length",
        type=int,
        default=min_length,
        help=f"minimum length counting [DEC] and the prompt, as transformers counts it (default {min_length})",
    )
    g.add_argument("--min-new-tokens", type=int, default=0, help="at least this many new tokens (default 0)")
    g.add_argument("--repetition-penalty", type=float, default=1.0, help="CTRL's penalty on repeated tokens (1: none)")
    g.add_argument(
        "--length-penalty",
        type=float,
        default=1.0,
        help="beam search: scores are divided by length ** this (> 0 favours longer; default 1)",
    )
    g.add_argument(
        "--static-cache", action="store_true", help="decode on a preallocated KV cache (same tokens; fixed shapes)"
    )
    g.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the decoding step (implies --static-cache; the first call compiles, 5-60 s)",
    )
    if sampling:
        g.add_argument("--sample", action="store_true", help="nucleus sampling instead of beam search")
        g.add_argument("--top-p", type=float, default=0.9, help="nucleus mass kept when sampling (BLIP: 0.9)")
        g.add_argument("--top-k", type=int, default=0, help="keep the k most likely tokens when sampling (0: all)")
        g.add_argument("--temperature", type=float, default=1.0, help="softmax temperature when sampling")
        g.add_argument("--seed", type=int, default=0, help="random seed when sampling")


def generation_config_from_args(args: argparse.Namespace) -> GenerationConfig:
    """The flags as a validated GenerationConfig; ``--sample`` samples with one beam."""
    if args.max_new_tokens < 1:
        raise ValueError(f"--max-new-tokens must be >= 1, got {args.max_new_tokens}")
    options = dict(
        num_beams=args.num_beams,
        max_new_tokens=args.max_new_tokens,
        min_length=args.min_length,
        min_new_tokens=args.min_new_tokens,
        repetition_penalty=args.repetition_penalty,
        length_penalty=args.length_penalty,
        static_cache=getattr(args, "static_cache", False),
        compile=getattr(args, "compile", False),
    )
    if getattr(args, "sample", False):
        options.update(num_beams=1, do_sample=True, top_p=args.top_p, top_k=args.top_k, temperature=args.temperature)
    try:
        return GenerationConfig(**options)
    except ValueError as e:  # name the flags, not the fields
        raise ValueError(re.sub(r"\b(" + "|".join(_FLAG_OF) + r")\b", lambda m: _FLAG_OF[m.group(1)], str(e))) from None


def sampling_generator(args: argparse.Namespace, device: torch.device | str) -> torch.Generator | None:
    """A generator seeded with ``--seed`` when ``--sample`` is given, else None."""
    if not getattr(args, "sample", False):
        return None
    return torch.Generator(device).manual_seed(args.seed)
