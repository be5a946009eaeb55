"""Small, declarative tools for mapping checkpoint keys: name tables that work both ways, regex
renames, fusing and splitting projections that one layout stores apart and the other together."""

from __future__ import annotations

import re

import torch

StateDict = dict[str, torch.Tensor]


def rename_keys(state_dict: StateDict, rules: list[tuple[str, str]], drop: tuple[str, ...] = ()) -> StateDict:
    """Apply the first rule whose pattern fully matches each key (``re`` syntax, ``\\1`` groups).

    Keys matching a ``drop`` pattern are left out; keys no rule matches are kept unchanged, so a
    layout mismatch surfaces later as named unexpected keys rather than being silently lost.
    """
    compiled = [(re.compile(p), r) for p, r in rules]
    dropped = [re.compile(p) for p in drop]
    out = {}
    for key, value in state_dict.items():
        if any(d.fullmatch(key) for d in dropped):
            continue
        for pattern, repl in compiled:
            if pattern.fullmatch(key):
                key = pattern.sub(repl, key)
                break
        out[key] = value
    return out


def fuse(state_dict: StateDict, name: str, parts: tuple[str, ...]) -> StateDict:
    """Concatenate ``<prefix>.<name>.<part>.<weight|bias>`` along dim 0 into ``<prefix>.<name>.<...>``,
    in the order of ``parts`` (e.g. q, k, v -> qkv)."""
    pattern = re.compile(rf"(.*)\.{name}\.({'|'.join(parts)})\.(weight|bias)")
    groups: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    out = {}
    for key, value in state_dict.items():
        m = pattern.fullmatch(key)
        if m:
            groups.setdefault((m[1], m[3]), {})[m[2]] = value
        else:
            out[key] = value
    for (prefix, kind), found in groups.items():
        if set(found) != set(parts):
            raise ValueError(f"{prefix}: found {sorted(found)} of the projections {parts} ({kind}), need all")
        out[f"{prefix}.{name}.{kind}"] = torch.cat([found[p] for p in parts], dim=0)
    return out


def split(state_dict: StateDict, name: str, parts: tuple[str, ...]) -> StateDict:
    """Inverse of :func:`fuse`: ``<prefix>.<name>.weight`` -> ``<prefix>.<name>.<part>.weight``."""
    pattern = re.compile(rf"(.*)\.{name}\.(weight|bias)")
    out = {}
    for key, value in state_dict.items():
        m = pattern.fullmatch(key)
        if m:
            for part, chunk in zip(parts, value.chunk(len(parts), dim=0)):
                out[f"{m[1]}.{name}.{part}.{m[2]}"] = chunk.contiguous()
        else:
            out[key] = value
    return out


def transpose(state_dict: StateDict, pattern: str) -> StateDict:
    """Transpose the matrices whose key matches (GPT-2 stores Conv1D weights as (in, out))."""
    p = re.compile(pattern)
    return {k: (v.t().contiguous() if p.fullmatch(k) and v.dim() == 2 else v) for k, v in state_dict.items()}


def pair_rules(pairs: list[tuple[str, str]], reverse: bool = False) -> list[tuple[str, str]]:
    """:func:`rename_keys` rules from a table of (outside name, vlkit name) pairs, read either way.

    In a name, ``#`` stands for a layer index; a trailing ``.weight`` or ``.bias`` of a key is
    carried over, so one pair maps a whole ``nn.Linear`` or ``nn.LayerNorm``. The first pair that
    matches a key wins, in both directions.
    """
    rules = []
    for outside, vlkit in pairs:
        src, dst = (vlkit, outside) if reverse else (outside, vlkit)
        n = src.count("#")
        pattern = r"(\d+)".join(re.escape(part) for part in src.split("#")) + r"(\.weight|\.bias)?"
        repl = "".join(part + (rf"\g<{i + 1}>" if i < n else "") for i, part in enumerate(dst.split("#")))
        rules.append((pattern, repl + rf"\g<{n + 1}>"))
    return rules


def prefixed(pairs: list[tuple[str, str]], outside: str = "", vlkit: str = "") -> list[tuple[str, str]]:
    """The pairs with ``outside`` put before every outside name and ``vlkit`` before every vlkit name."""
    return [(outside + a, vlkit + b) for a, b in pairs]


def add_prefix(state_dict: StateDict, prefix: str, keep: tuple[str, ...] = ()) -> StateDict:
    """``prefix`` put before every key that has neither it nor one of the ``keep`` prefixes
    (a bare ``BertModel`` read as the ``bert.`` part of ``BertForPreTraining``)."""
    return {(k if k.startswith((prefix, *keep)) else prefix + k): v for k, v in state_dict.items()}


def strip_prefix(state_dict: StateDict, prefix: str) -> StateDict:
    """Inverse of :func:`add_prefix`: ``prefix`` taken off the keys that have it."""
    return {(k[len(prefix) :] if k.startswith(prefix) else k): v for k, v in state_dict.items()}


def fields_from_hf(hf: dict | None, fields: tuple) -> dict:
    """vlkit config fields from an HF config section by a table of (vlkit field, HF field, HF
    default) rows; a field the section omits or gives as null takes the default."""
    given = {k: v for k, v in (hf or {}).items() if v is not None}
    return {name: given.get(hf_name, default) for name, hf_name, default in fields}


def fields_to_hf(config, fields: tuple) -> dict:
    """The HF config fields of ``config`` by the same table."""
    return {hf_name: getattr(config, name) for name, hf_name, _ in fields}
