"""Metrics of a run: one JSON object per line in ``<output_dir>/metrics.jsonl``.

Training records look like ``{"split": "train", "step": 10, "epoch": 0, "loss": 4.1, "lr": 1e-4,
"samples_per_s": 812.0, ...}``; evaluation records have ``"split": "validation"``; other events
(``"event": "data_skipped"``) carry their own fields. A resumed run first drops the records of
steps after its checkpoint, so the file reads as one uninterrupted run.

A run killed while writing a record leaves a torn last line: reading drops it (a resumed run
rewrites the file without it and says so); a damaged line before the last is an error naming the
file and the line.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any


class MetricsLog:
    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    def append(self, record: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps({k: _plain(v) for k, v in record.items()}) + "\n")

    def read(self) -> list[dict[str, Any]]:
        """The records, without a torn last line (see :meth:`read_checked`)."""
        return self.read_checked()[0]

    def read_checked(self) -> tuple[list[dict[str, Any]], bool]:
        """(records, whether a torn last line was dropped). A damaged line before the last raises
        a ValueError naming the file and the line."""
        if not self.path.is_file():
            return [], False
        try:
            lines = self.path.read_text(encoding="utf-8", errors="strict").splitlines()
        except UnicodeDecodeError as e:
            raise ValueError(f"{self.path} is not a UTF-8 metrics log ({e.reason} at byte {e.start})") from None
        numbered = [(n, line) for n, line in enumerate(lines, start=1) if line.strip()]
        records: list[dict[str, Any]] = []
        for i, (n, line) in enumerate(numbered):
            try:
                record = json.loads(line)
                problem = None if isinstance(record, dict) else "not a JSON object"
            except ValueError as e:
                problem = str(e)
            if problem is None:
                records.append(record)
            elif i == len(numbered) - 1:  # a run killed mid-write
                return records, True
            else:
                raise ValueError(f"{self.path}, line {n}: not a metrics record ({problem}); fix or delete the line")
        return records, False

    def truncate_after(self, step: int) -> bool:
        """Drop records of steps after ``step`` (written by a run that went on past its last
        checkpoint) and a torn last line; True when a torn line was dropped."""
        records, torn = self.read_checked()
        records = [r for r in records if r.get("step", 0) <= step]
        tmp = self.path.with_name(self.path.name + ".tmp")
        with tmp.open("w", encoding="utf-8") as f:
            for r in records:
                f.write(json.dumps(r) + "\n")
        os.replace(tmp, self.path)
        return torn

    def last_validation(self, step: int) -> dict[str, Any] | None:
        """The validation metrics logged at ``step`` (without ``split`` and ``step``), or None."""
        found = [r for r in self.read() if r.get("split") == "validation" and r.get("step") == step]
        if not found:
            return None
        return {k: v for k, v in found[-1].items() if k not in ("split", "step")}

    def reset(self) -> None:
        self.path.unlink(missing_ok=True)


def _plain(v: Any) -> Any:
    if hasattr(v, "item") and callable(v.item):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return v
