"""Annotation files: the rows of a CSV (with a header), TSV or JSONL file, and their text cells.

Files are UTF-8, with or without a byte-order mark (Excel's "CSV UTF-8" writes one); a file in
another encoding is an error naming the file, the byte offset and the line of the first byte that
is not UTF-8. JSONL files hold one JSON object per line.

Text cells are strings. In JSONL a cell may hold other JSON values; none is turned into text
with ``str()``: a number, a dict, a boolean is *not text* (the row is skipped, counted under a
"non-text ..." reason), ``null`` is an empty cell, and a list of strings is several texts (a
caption list gives one image-caption pair per caption, as several rows naming the same image
would; an answer list is the annotators' answers).
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Any

from .skips import Skipped, SkipReport, load_or_skip

IMAGE_KEYS = ("image", "filepath", "file", "path", "image_path")
CAPTION_KEYS = ("caption", "text", "title")
_BOM = b"\xef\xbb\xbf"


def read_utf8(path: str | os.PathLike) -> str:
    """The text of a UTF-8 file (a leading byte-order mark dropped); a ValueError naming the file,
    the byte offset and the line where it is not UTF-8."""
    path = Path(path)
    data = path.read_bytes()
    start = len(_BOM) if data.startswith(_BOM) else 0
    try:
        return data[start:].decode("utf-8")
    except UnicodeDecodeError as e:
        offset = start + e.start
        line = data.count(b"\n", 0, offset) + 1
        raise ValueError(
            f"{path}: not UTF-8 text: byte 0x{data[offset]:02x} at offset {offset} (line {line}); "
            "save the file as UTF-8"
        ) from None


def _jsonl_rows(path: Path, text: str) -> list[dict[str, Any]]:
    rows = []
    for n, line in enumerate(text.split("\n"), 1):  # not splitlines(): JSON strings may hold U+2028
        if line.strip():
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{n}: not a JSON object per line ({e})") from None
            if not isinstance(row, dict):
                raise ValueError(f"{path}:{n}: expected a JSON object, got {type(row).__name__}")
            rows.append(row)
    return rows


def read_annotations(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Rows of a ``.csv`` (with a header), ``.tsv`` or ``.jsonl`` annotation file as dicts."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"annotation file {path} does not exist")
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".tsv", ".jsonl", ".json"):
        raise ValueError(f"annotation file {path} must end in .csv, .tsv or .jsonl")
    text = read_utf8(path)
    if suffix in (".jsonl", ".json"):
        return _jsonl_rows(path, text)
    try:
        return list(csv.DictReader(io.StringIO(text, newline=""), delimiter="\t" if suffix == ".tsv" else ","))
    except csv.Error as e:
        raise ValueError(f"{path}: not a valid {suffix[1:].upper()} file ({e})") from None


def open_annotations(
    annotations: str | os.PathLike, root: str | os.PathLike | None
) -> tuple[Path, list[dict[str, Any]], Path]:
    """(annotation path, its rows, the image folder): ``root``, by default the annotation file's folder."""
    annotations = Path(annotations)
    rows = read_annotations(annotations)
    if not rows:
        raise ValueError(f"annotation file {annotations} has no rows")
    folder = Path(root) if root is not None else annotations.parent
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder {folder} does not exist")
    return annotations, rows, folder


def pick_key(available, wanted: str | None, candidates: tuple[str, ...], what: str, source: Path) -> str:
    """The column named ``wanted``, else the first of ``candidates`` present; a KeyError naming the file."""
    if wanted is not None:
        if wanted not in available:
            raise KeyError(f"{source}: no {what} column {wanted!r}; columns are {sorted(available)}")
        return wanted
    for key in candidates:
        if key in available:
            return key
    raise KeyError(
        f"{source}: no {what} column; expected one of {list(candidates)} (or pass {what}_key), found {sorted(available)}"
    )


def text_cell(value: Any) -> str | None:
    """A cell as stripped text (``None`` and missing give ``""``); None when it is not text."""
    if value is None:
        return ""
    return value.strip() if isinstance(value, str) else None


def text_list(value: Any, separator: str | None = None) -> list[str] | None:
    """A cell as a list of non-empty texts: a string (split at ``separator`` when given) or a JSON
    list of strings; None when it is not text (a number, a dict, a list holding anything else)."""
    if isinstance(value, list):
        if not all(isinstance(item, str) for item in value):
            return None
        items = value
    else:
        text = text_cell(value)
        if text is None:
            return None
        items = text.split(separator) if separator is not None else [text]
    return [item.strip() for item in items if item.strip()]


def image_file_problem(path: Path, rel: str) -> str | None:
    """Why an annotation row's image cannot be used before it is opened, or None."""
    if not rel or not path.is_file():
        return "missing file"
    if path.stat().st_size == 0:
        return "zero-size file"
    return None


def image_path(value: Any, root: Path) -> tuple[str, Path, str | None]:
    """(the cell as written, the path under ``root``, why it cannot be used or None)."""
    rel = text_cell(value)
    if rel is None:
        return f"<a JSON {type(value).__name__}>", root, "non-text image path"
    path = root / rel
    return rel, path, image_file_problem(path, rel)


class AnnotatedImages:
    """Base of the datasets read from an annotation file (:class:`vlkit.data.ImageTextFolder`,
    :class:`vlkit.data.vqa.VQAFolder`): rows become ``samples`` (tuples starting with the image
    path) or are left out with a reason (``skipped_at_load``); ``__getitem__`` decodes the image
    or returns a skip record (:func:`vlkit.data.skips.load_or_skip`).

    A subclass names ``what`` its samples are (for errors) and ``unit`` (for its repr), and defines
    ``choose_columns(columns)``, ``read_row(row) -> list of samples | Skipped`` and
    ``item_fields(index) -> dict`` (the item without its image)."""

    what = "samples"
    unit = "samples"

    def __init__(self, annotations: str | os.PathLike, root: str | os.PathLike | None, transform) -> None:
        self.annotations, rows, self.root = open_annotations(annotations, root)
        self.transform = transform
        self.rows_read = len(rows)
        self.samples: list[tuple] = []
        self.skipped_at_load: list[Skipped] = []
        self.choose_columns(rows[0].keys())
        for row in rows:
            kept = self.read_row(row)
            if isinstance(kept, Skipped):
                self.skipped_at_load.append(kept)
            else:
                self.samples += kept
        if not self.samples:
            report = SkipReport(list(self.skipped_at_load))
            raise ValueError(f"{self.annotations}: no usable {self.what} ({report.summary(len(rows))})")

    def choose_columns(self, columns) -> None:
        raise NotImplementedError

    def read_row(self, row: dict[str, Any]) -> list[tuple] | Skipped:
        raise NotImplementedError

    def item_fields(self, index: int) -> dict[str, Any]:
        raise NotImplementedError

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        path = self.samples[index][0]
        source = os.path.relpath(path, self.root)
        return load_or_skip(path, self.item_fields(index), transform=self.transform, source=source)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({str(self.annotations)!r}, {len(self)} {self.unit}, "
            f"{len(self.skipped_at_load)} skipped)"
        )
