"""Byte-pair encoding shared by the byte-level (GPT-2) and CLIP tokenizers.

* ``bytes_to_unicode``: GPT-2's reversible map of the 256 bytes to printable characters.
* ``BPEMerges``: applies a ranked merge list to one word (lowest rank first, as GPT-2, CLIP and HF
  ``tokenizers`` do).
* ``train_merges``: learns merges from word counts; each step merges the most frequent adjacent
  pair, and only the words holding that pair are re-counted.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Sequence
from functools import cache


@cache
def bytes_to_unicode() -> dict[int, str]:
    """Byte -> printable character: printable Latin-1 bytes map to themselves, the 68 others
    (control, space, soft hyphen, ...) to U+0100 onwards, in byte order (GPT-2's table)."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("\xa1"), ord("\xac") + 1), *range(ord("\xae"), ord("\xff") + 1)]
    table = {b: chr(b) for b in keep}
    n = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + n)
            n += 1
    return {b: table[b] for b in sorted(table, key=lambda b: ord(table[b]))}


_LONG_WORD = 48  # symbols; longer words go through the heap merge (n log n instead of n^2)


class BPEMerges:
    """A ranked merge list over token ids: ``merges[r] = (a, b, ab)`` merges the pair (a, b) into
    ``ab`` with rank r (lower merges first)."""

    def __init__(self, merges: Sequence[tuple[int, int, int]]):
        self.merges = [tuple(m) for m in merges]
        self.ranks: dict[tuple[int, int], tuple[int, int]] = {}
        for rank, (a, b, ab) in enumerate(self.merges):
            self.ranks.setdefault((a, b), (rank, ab))

    def __len__(self) -> int:
        return len(self.merges)

    def apply(self, word: list[int]) -> list[int]:
        """Merge ``word`` (a list of symbol ids) until no ranked pair is left."""
        if len(word) > _LONG_WORD:
            return self._apply_heap(word)
        ranks = self.ranks
        while len(word) > 1:
            best = None
            best_rank = 1 << 62
            for pair in zip(word, word[1:]):
                r = ranks.get(pair)
                if r is not None and r[0] < best_rank:
                    best_rank = r[0]
                    best = pair
            if best is None:
                break
            a, b = best
            ab = ranks[best][1]
            out = []
            i = 0
            n = len(word)
            while i < n:
                if i < n - 1 and word[i] == a and word[i + 1] == b:
                    out.append(ab)
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            word = out
        return word

    def _apply_heap(self, word: list[int]) -> list[int]:
        """Same result as ``apply`` for long words: a linked list of symbols and a heap of
        (rank, position) candidate merges; merging the leftmost lowest-rank pair first."""
        ranks = self.ranks
        sym = list(word)
        n = len(sym)
        nxt = list(range(1, n + 1))
        prv = list(range(-1, n - 1))
        alive = [True] * n
        heap = []
        for i in range(n - 1):
            r = ranks.get((sym[i], sym[i + 1]))
            if r is not None:
                heap.append((r[0], i, sym[i], sym[i + 1]))
        heapq.heapify(heap)
        while heap:
            rank, i, a, b = heapq.heappop(heap)
            j = nxt[i]
            if not alive[i] or j >= n or sym[i] != a or sym[j] != b:
                continue
            sym[i] = ranks[(a, b)][1]
            alive[j] = False
            nxt[i] = nxt[j]
            if nxt[j] < n:
                prv[nxt[j]] = i
            p = prv[i]
            if p >= 0:
                r = ranks.get((sym[p], sym[i]))
                if r is not None:
                    heapq.heappush(heap, (r[0], p, sym[p], sym[i]))
            q = nxt[i]
            if q < n:
                r = ranks.get((sym[i], sym[q]))
                if r is not None:
                    heapq.heappush(heap, (r[0], i, sym[i], sym[q]))
        return [s for s, ok in zip(sym, alive) if ok]


def merge_pair(
    words: list[list[int]],
    counts: Sequence[int],
    where: dict[tuple[int, int], set[int]],
    pair_count: dict[tuple[int, int], int],
    a: int,
    b: int,
    ab: int,
) -> tuple[set[tuple[int, int]], int]:
    """Replace the pair (a, b) by ``ab`` in the words that hold it, updating the counts of the
    neighbouring pairs in place. Returns the pairs that gained occurrences and the number of
    merges made (weighted by word counts).

    Left to right, as HF's trainer does: at an occurrence with left neighbour x (already
    rewritten when it was itself a merge) the pair (x, a) loses and (x, ab) gains; with right
    neighbour y, (b, y) loses and (ab, y) gains. The index ``where`` may keep words that no
    longer hold a pair: such a word is simply left unchanged.
    """
    gained: set[tuple[int, int]] = set()
    merged = 0
    for wi in where.pop((a, b), ()):
        w = words[wi]
        n = len(w)
        try:
            i = w.index(a)
        except ValueError:
            continue
        c = counts[wi]
        out = w[:i]
        found = False
        while i < n:
            if i + 1 < n and w[i] == a and w[i + 1] == b:
                found = True
                merged += c
                if out:
                    x = out[-1]
                    pair_count[(x, a)] -= c
                    p = (x, ab)
                    pair_count[p] = pair_count.get(p, 0) + c
                    gained.add(p)
                    where.setdefault(p, set()).add(wi)
                if i + 2 < n:
                    y = w[i + 2]
                    pair_count[(b, y)] -= c
                    p = (ab, y)
                    pair_count[p] = pair_count.get(p, 0) + c
                    gained.add(p)
                    where.setdefault(p, set()).add(wi)
                out.append(ab)
                i += 2
            else:
                out.append(w[i])
                i += 1
        if found:
            words[wi] = out
    pair_count.pop((a, b), None)
    return gained, merged


def train_merges(
    words: Sequence[list[int]],
    counts: Sequence[int],
    num_merges: int,
    new_token: Callable[[int, int], int],
    min_frequency: int = 0,
    progress: Callable[[int], None] | None = None,
) -> list[tuple[int, int, int]]:
    """Learn up to ``num_merges`` merges from ``words`` (symbol-id lists) seen ``counts`` times.

    Each step takes the most frequent adjacent pair (ties: the smallest pair of ids, as HF
    ``tokenizers``' trainer does), asks ``new_token(a, b)`` for the merged symbol's id and
    rewrites only the words that hold the pair (``merge_pair``). A max-heap of (count, pair)
    with lazy deletion finds the next pair: counts of existing pairs only ever fall, so a stale
    entry is re-pushed with its current count when popped. Stops early when no pair occurs
    ``max(min_frequency, 1)`` times.
    """
    words = [list(w) for w in words]
    pair_count: dict[tuple[int, int], int] = {}
    where: dict[tuple[int, int], set[int]] = {}
    for wi, (w, c) in enumerate(zip(words, counts)):
        for pair in zip(w, w[1:]):
            pair_count[pair] = pair_count.get(pair, 0) + c
            s = where.get(pair)
            if s is None:
                where[pair] = {wi}
            else:
                s.add(wi)
    heap = [(-c, a, b) for (a, b), c in pair_count.items()]
    heapq.heapify(heap)
    merges: list[tuple[int, int, int]] = []
    floor = max(min_frequency, 1)
    while heap and len(merges) < num_merges:
        negc, a, b = heapq.heappop(heap)
        actual = pair_count.get((a, b), 0)
        if actual != -negc:
            if actual > 0:
                heapq.heappush(heap, (-actual, a, b))
            continue
        if actual < floor:
            break
        ab = new_token(a, b)
        merges.append((a, b, ab))
        gained, _ = merge_pair(words, counts, where, pair_count, a, b, ab)
        for p in gained:
            c = pair_count[p]
            if c > 0:
                heapq.heappush(heap, (-c, p[0], p[1]))
        if progress is not None:
            progress(1)
    return merges
