"""The optional packages of ``vlkit[search]``, imported when first needed with a clear error."""

from __future__ import annotations

import importlib
from types import ModuleType


class MissingExtraError(ImportError, ValueError):
    """A package of the ``search`` extra is not installed (a ValueError too: the CLI prints one line)."""


def require(module: str, package: str | None = None) -> ModuleType:
    """``import module``, or a MissingExtraError naming the package to install."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingExtraError(
            f"{package or module} is not installed; image search needs the search extra: pip install 'vlkit[search]'"
        ) from None
