"""Writing files and folders whole: each is written under a temporary name in the same place and
renamed into place, so an interrupted write never leaves half a file or half a folder; written
files get the normal permissions of a new file (``0o666 & ~umask``), whatever wrote them
(safetensors creates its files readable by their owner only)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


def read_json_object(
    path: str | os.PathLike, expected: str = "a JSON object", error: type[ValueError] = ValueError
) -> dict:
    """The JSON object in the UTF-8 file ``path``; an ``error`` naming the file and what was
    ``expected`` when it holds no valid JSON, or JSON of another type."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise error(f"{path} is not valid JSON ({e}); expected {expected}") from None
    if not isinstance(data, dict):
        raise error(f"{path} holds a JSON {type(data).__name__}; expected {expected}")
    return data


class OutputExistsError(FileExistsError, ValueError):
    """The output is already there and replacing it was not asked for."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def normal_mode(path: str | os.PathLike, folder: bool = False) -> None:
    """Give ``path`` the mode a new file (``0o666``) or folder (``0o777``) gets under the umask."""
    os.chmod(path, (0o777 if folder else 0o666) & ~_umask())


def write_file(path: str | os.PathLike, write: Callable[[Path], object]) -> Path:
    """``write(tmp)`` writes a temporary file beside ``path`` (``.NAME.tmp-PID``), which is flushed
    to disk and then replaces ``path``."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        normal_mode(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def write_text(path: str | os.PathLike, text: str) -> Path:
    return write_file(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


@contextmanager
def new_folder(out: str | os.PathLike, *, overwrite: bool = False) -> Iterator[Path]:
    """A temporary folder beside ``out`` to write into; on success it becomes ``out`` (replacing
    an existing ``out`` only with ``overwrite``), on failure it is removed and ``out`` is untouched.

        with new_folder("exported", overwrite=False) as tmp:
            (tmp / "config.json").write_text(...)
    """
    out = Path(out)
    if out.exists() and not overwrite:
        raise OutputExistsError(f"{out} already exists; choose another output or pass --overwrite to replace it")
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"{out} is a file; the output must be a folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        yield tmp
        normal_mode(tmp, folder=True)
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.replace(out, old / out.name)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
