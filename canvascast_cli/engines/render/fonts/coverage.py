"""Which code points a font face covers: a set kept as sorted ranges, made from a font's
cmap (fontTools) or fontconfig's charset text."""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterable, Sequence


class Coverage:
    """A set of code points as sorted inclusive ranges (a CJK font's 45,000 are ~250)."""

    __slots__ = ("_ends", "_starts")

    def __init__(self, ranges: Iterable[Sequence[int]]) -> None:
        pairs = sorted((int(r[0]), int(r[1])) for r in ranges)
        self._starts = [a for a, _ in pairs]
        self._ends = [b for _, b in pairs]

    def __contains__(self, cp: object) -> bool:
        if not isinstance(cp, int):
            return False
        i = bisect.bisect_right(self._starts, cp) - 1
        return i >= 0 and cp <= self._ends[i]

    @classmethod
    def of(cls, codepoints: Iterable[int]) -> Coverage:
        ranges: list[list[int]] = []
        for cp in sorted(set(codepoints)):
            if ranges and cp == ranges[-1][1] + 1:
                ranges[-1][1] = cp
            else:
                ranges.append([cp, cp])
        return cls(ranges)

    @classmethod
    def parse_fontconfig(cls, text: str) -> Coverage:
        """fontconfig's charset text: ``20-7e a0-17f 2010`` (ascending: no sort needed)."""
        pairs = []
        for token in text.split():
            lo, _, hi = token.partition("-")
            try:
                pairs.append((int(lo, 16), int(hi or lo, 16)))
            except ValueError:
                continue
        if any(a[0] >= b[0] for a, b in itertools.pairwise(pairs)):
            return cls(pairs)
        coverage = cls(())
        coverage._starts = [a for a, _ in pairs]
        coverage._ends = [b for _, b in pairs]
        return coverage

    def ranges(self) -> list[list[int]]:
        return [[a, b] for a, b in zip(self._starts, self._ends, strict=True)]
