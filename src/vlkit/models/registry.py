"""Model families and named presets.

A family is a model class with a frozen config dataclass and a ``model_type`` string; a preset is
a named function returning a config (``@register("bert-base")``). Dispatch is by exact key only.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable
from typing import Any

from ..registration import register_in

FAMILIES: dict[str, Any] = {}  # model_type -> model class (a vlkit.models.base.Model subclass)
PRESETS: dict[str, Callable[[], Any]] = {}  # preset name -> config factory


def register_family(model_cls: Any) -> Any:
    """Class decorator: makes a model class loadable from its saved ``model_type``."""
    key = model_cls.config_class.model_type
    FAMILIES[key] = model_cls
    return model_cls


def register(name: str) -> Callable:
    """Decorator for a function returning the config of a named size."""
    return register_in(PRESETS, name, "preset")


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


def _fits(value: Any, hint: Any) -> bool:
    """Whether ``value`` (as JSON gives it) is of the field type ``hint``; types not named here pass."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin is tuple:
        args = typing.get_args(hint)
        if not isinstance(value, (list, tuple)):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_fits(v, args[0]) for v in value)
        return len(value) == len(args) and all(_fits(v, a) for v, a in zip(value, args, strict=True))
    return True


def _type_name(hint: Any) -> str:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(_type_name(h) for h in typing.get_args(hint))
    if hint is type(None):
        return "null"
    if typing.get_origin(hint) is tuple:
        return f"a list of {len(typing.get_args(hint))} numbers" if float in typing.get_args(hint) else "a list"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(hint, str(hint))


def config_from_dict(config_cls: type, data: dict) -> Any:
    """Build a (possibly nested) config dataclass from a dict, rejecting unknown fields and values
    of the wrong type with a ValueError naming the field."""
    if not isinstance(data, dict):
        raise ValueError(f"{config_cls.__name__} fields must be a mapping, got {type(data).__name__} {data!r}")
    hints = typing.get_type_hints(config_cls)
    names = {f.name for f in dataclasses.fields(config_cls) if f.init}
    unknown = set(data) - names
    if unknown:
        raise ValueError(f"{config_cls.__name__} has no fields {sorted(unknown)}; expected some of {sorted(names)}")
    kwargs = {}
    for key, value in data.items():
        sub = hints.get(key)
        if isinstance(sub, type) and dataclasses.is_dataclass(sub) and not dataclasses.is_dataclass(value):
            if not isinstance(value, dict):
                raise ValueError(
                    f"{config_cls.__name__}.{key} must be a mapping of {sub.__name__} fields, got {value!r}"
                )
            value = config_from_dict(sub, value)
        else:
            value = _checked(config_cls, key, value, sub)
        kwargs[key] = value
    return config_cls(**kwargs)


def _checked(config_cls: type, key: str, value: Any, hint: Any) -> Any:
    """``value`` for field ``key`` (lists as tuples where the field is a tuple), or a ValueError."""
    if hint is None or dataclasses.is_dataclass(hint) or dataclasses.is_dataclass(value):
        return value
    if not _fits(value, hint):
        raise ValueError(f"{config_cls.__name__}.{key} must be {_type_name(hint)}, got {value!r}")
    return tuple(value) if isinstance(value, list) and typing.get_origin(hint) is tuple else value


def replace_config(config, **overrides) -> Any:
    """``dataclasses.replace`` that merges dict overrides into nested configs."""
    hints = typing.get_type_hints(type(config))
    merged = {}
    for key, value in overrides.items():
        current = getattr(config, key, None)
        if isinstance(value, dict) and dataclasses.is_dataclass(current):
            value = replace_config(current, **value)
        else:
            value = _checked(type(config), key, value, hints.get(key))
        merged[key] = value
    return dataclasses.replace(config, **merged)


def create_model(name: str, **overrides):
    """A randomly initialised model of a registered preset, with config fields overridden."""
    if name not in PRESETS:
        raise KeyError(f"unknown model {name!r}; vlkit.list_models() gives the {len(PRESETS)} known ones")
    config = replace_config(PRESETS[name](), **overrides)
    return family_of(config)(config)
