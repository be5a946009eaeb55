"""Helpers shared by the trainers: corpus reading and the progress bar."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence

import regex


def check_corpus_text(text) -> str:
    if not isinstance(text, str):
        raise TypeError(f"a training corpus must yield str, got {type(text).__name__}")
    return text


def count_words(texts: Iterable[str], specials: Sequence[str], split: Callable[[str], Iterable[str]]) -> Counter[str]:
    """How often each word occurs in ``texts``: the text between the ``specials`` (which are left
    out) cut into words by ``split``; a line that repeats is split once."""
    special_re = regex.compile("|".join(regex.escape(s) for s in specials)) if specials else None
    counter: Counter[str] = Counter()
    for text, k in Counter(map(check_corpus_text, texts)).items():
        for piece in special_re.split(text) if special_re is not None else [text]:
            for word in split(piece):
                counter[word] += k
    return counter


def read_corpus(paths: Iterable[str | os.PathLike]) -> Iterator[str]:
    """The lines of UTF-8 corpus files (line breaks kept), as HF ``tokenizers`` reads them."""
    for path in paths:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"corpus file {path} does not exist")
        try:
            with open(path, encoding="utf-8", newline="") as f:
                yield from f
        except UnicodeDecodeError as e:
            raise ValueError(f"corpus file {path} is not UTF-8 text: {e}") from None


class progress_bar:
    """``with progress_bar(progress, total, desc) as step:`` gives ``step(n)`` (or None): a tqdm
    bar when ``progress`` is True, the caller's callback when it is callable, else nothing."""

    def __init__(self, progress: bool | Callable[[int], None], total: int | None, desc: str, unit: str = "merge"):
        self.progress, self.total, self.desc, self.unit, self.bar = progress, total, desc, unit, None

    def __enter__(self) -> Callable[[int], None] | None:
        if callable(self.progress):
            return self.progress
        if self.progress:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=self.total, desc=self.desc, unit=self.unit)
            return self.bar.update
        return None

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.close()
