"""Named registries: a decorator adding a factory to a table under a name given once."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def register_in(table: dict[str, T], name: str, what: str) -> Callable[[T], T]:
    """Decorator putting the decorated object in ``table`` under ``name``; a name registered
    twice is a ValueError naming it (``what``: the kind of name, e.g. "preset")."""

    def wrap(obj: T) -> T:
        if name in table:
            raise ValueError(f"{what} {name!r} is registered twice")
        table[name] = obj
        return obj

    return wrap
