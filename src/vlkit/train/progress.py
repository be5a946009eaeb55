"""Progress of a run for people: a tqdm bar on a terminal, plain periodic lines otherwise.

When stderr is not a terminal (a log file, CI, ``nohup``), a bar would write a ``\\r`` update per
step; :class:`Progress` then prints one line per logged step instead, at most every ``every`` steps
(about 20 lines a run), and always at the last.
"""

from __future__ import annotations

import sys
from typing import TextIO

from tqdm.auto import tqdm


class Progress:
    """``update()`` once per step, ``show(step, values)`` at each logged step, ``close()`` at the end.
    Lines of the run's story go to stdout with ``tqdm.write`` (above the bar)."""

    def __init__(
        self, *, total: int, initial: int, enabled: bool, stream: TextIO | None = None, lines: int = 20
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.total, self.enabled = total, enabled
        self.plain = enabled and not _isatty(self.stream)
        self.every = max(1, total // max(lines, 1))
        self.next_line = initial + self.every
        self.bar = None
        if enabled and not self.plain:
            self.bar = tqdm(total=total, initial=initial, desc="train", dynamic_ncols=True, file=self.stream)

    def update(self) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def show(self, step: int, values: dict[str, str]) -> None:
        """The values of a logged step: the bar's postfix, or a plain line when one is due."""
        if self.bar is not None:
            self.bar.set_postfix(values)
        elif self.plain and (step >= self.next_line or step >= self.total):
            self.stream.write(f"step {step}/{self.total}: " + ", ".join(f"{k} {v}" for k, v in values.items()) + "\n")
            self.stream.flush()
            self.next_line = step + self.every

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _isatty(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())
