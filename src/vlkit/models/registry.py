"""Model families and named presets.

A family is a model class with a frozen config dataclass and a ``model_type`` string; a preset is
a named function returning a config (``@register("bert-base")``). Dispatch is by exact key only.
"""
from __future__ import annotations

import dataclasses
import typing
from typing import Any, Callable

FAMILIES: dict[str, type] = {}  # model_type -> model class
PRESETS: dict[str, Callable[[], Any]] = {}  # preset name -> config factory


def register_family(model_cls: type) -> type:
    """Class decorator: makes a model class loadable from its saved ``model_type``."""
    key = model_cls.config_class.model_type
    FAMILIES[key] = model_cls
    return model_cls


def register(name: str) -> Callable:
    """Decorator for a function returning the config of a named size."""

    def wrap(fn: Callable[[], Any]) -> Callable[[], Any]:
        if name in PRESETS:
            raise ValueError(f"preset {name!r} is registered twice")
        PRESETS[name] = fn
        return fn

    return wrap


def list_models() -> list[str]:
    """Names accepted by :func:`create_model`."""
    return sorted(PRESETS)


def family_of(config) -> type:
    return FAMILIES[type(config).model_type]


def config_to_dict(config) -> dict:
    """The constructor fields of a (nested) config; derived fields are recomputed on load."""
    out = {}
    for f in dataclasses.fields(config):
        if f.init:
            value = getattr(config, f.name)
            out[f.name] = config_to_dict(value) if dataclasses.is_dataclass(value) else value
    return out


def config_from_dict(config_cls: type, data: dict) -> Any:
    """Build a (possibly nested) config dataclass from a dict, rejecting unknown fields."""
    hints = typing.get_type_hints(config_cls)
    names = {f.name for f in dataclasses.fields(config_cls) if f.init}
    unknown = set(data) - names
    if unknown:
        raise ValueError(f"{config_cls.__name__} has no fields {sorted(unknown)}; expected some of {sorted(names)}")
    kwargs = {}
    for key, value in data.items():
        sub = hints.get(key)
        if dataclasses.is_dataclass(sub) and isinstance(value, dict):
            value = config_from_dict(sub, value)
        elif isinstance(value, list) and typing.get_origin(sub) is tuple:
            value = tuple(value)
        kwargs[key] = value
    return config_cls(**kwargs)


def replace_config(config, **overrides) -> Any:
    """``dataclasses.replace`` that merges dict overrides into nested configs."""
    merged = {}
    for key, value in overrides.items():
        current = getattr(config, key, None)
        if isinstance(value, dict) and dataclasses.is_dataclass(current):
            value = replace_config(current, **value)
        merged[key] = value
    return dataclasses.replace(config, **merged)


def create_model(name: str, **overrides):
    """A randomly initialised model of a registered preset, with config fields overridden."""
    if name not in PRESETS:
        raise KeyError(f"unknown model {name!r}; vlkit.list_models() gives the {len(PRESETS)} known ones")
    config = replace_config(PRESETS[name](), **overrides)
    return family_of(config)(config)
