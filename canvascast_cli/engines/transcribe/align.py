"""Time a known script from recognised words.

CanvasCast knows what the narrator was asked to say. With ``--script`` the output words
are the script's words — its spelling, punctuation and casing — each timed from the
recognised word it aligns with. Alignment is in two passes:

1. exact matches of normalised tokens (``difflib.SequenceMatcher``, no junk heuristic)
   anchor the sequences;
2. inside each gap between anchors, a small Needleman-Wunsch alignment pairs words that
   are similar enough (a misheard "colour"/"color", "CanvasCast"/"Canvas Cast" — a
   script word may also take two adjacent recognised words whose concatenation matches).

Script words with no recognised match are placed between their timed neighbours, sharing
the gap in proportion to their length. Recognised words the script lacks are dropped.
"""

from __future__ import annotations

import difflib
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

from canvascast_cli.engines.transcribe.result import Alignment, Word

SIMILAR = 0.72  # difflib ratio above which two different tokens count as the same word



def normalise(token: str) -> str:
    """Lower case, accents and punctuation removed, curly apostrophes straightened."""
    token = unicodedata.normalize("NFKD", token.replace("\u2019", "'"))
    token = "".join(c for c in token if not unicodedata.combining(c))
    return re.sub(r"[^\w']+", "", token.lower()).strip("'")


def script_tokens(text: str) -> list[str]:
    return text.split()


@dataclass(frozen=True)
class _Pair:
    script: int
    recognised: tuple[int, ...]  # one or two recognised word indexes


def align_script(script: Sequence[str], recognised: Sequence[Word], duration: float
                 ) -> tuple[list[Word], Alignment]:
    """The script's tokens, timed; and how many were matched or interpolated."""
    s_norm = [normalise(t) for t in script]
    r_norm = [normalise(w.word) for w in recognised]
    pairs = _anchor_and_fill(s_norm, r_norm)
    times: list[tuple[float, float] | None] = [None] * len(script)
    probs: list[float | None] = [None] * len(script)
    used: set[int] = set()
    for pair in pairs:
        first, last = recognised[pair.recognised[0]], recognised[pair.recognised[-1]]
        times[pair.script] = (first.start, last.end)
        known = [p for i in pair.recognised if (p := recognised[i].probability) is not None]
        probs[pair.script] = min(known) if known else None
        used.update(pair.recognised)
    matched = sum(t is not None for t in times)
    filled = _interpolate(script, times, duration)
    words = [Word(token, start, end, probs[i])
             for i, (token, (start, end)) in enumerate(zip(script, filled, strict=True))]
    return words, Alignment(script_words=len(script), matched=matched,
                            interpolated=len(script) - matched,
                            dropped=len(recognised) - len(used))


def _anchor_and_fill(s: list[str], r: list[str]) -> list[_Pair]:
    matcher = difflib.SequenceMatcher(a=s, b=r, autojunk=False)
    pairs: list[_Pair] = []
    si = ri = 0
    for block in matcher.get_matching_blocks():  # ends with a (len, len, 0) sentinel
        pairs += _fill_gap(s, r, si, block.a, ri, block.b)
        pairs += [_Pair(block.a + k, (block.b + k,)) for k in range(block.size)]
        si, ri = block.a + block.size, block.b + block.size
    return pairs


def _similar(a: str, b: str) -> float:
    if not a or not b:
        return 0.0
    return difflib.SequenceMatcher(a=a, b=b, autojunk=False).ratio()


def _fill_gap(s: list[str], r: list[str], s0: int, s1: int, r0: int, r1: int) -> list[_Pair]:
    """Needleman-Wunsch over one gap; a match scores its similarity, skips score 0."""
    n, m = s1 - s0, r1 - r0
    if n == 0 or m == 0:
        return []
    # score[i][j]: best total similarity aligning s[s0:s0+i] with r[r0:r0+j]
    score = [[0.0] * (m + 1) for _ in range(n + 1)]
    move: list[list[tuple[int, int] | None]] = [[None] * (m + 1) for _ in range(n + 1)]
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            best, step = score[i - 1][j], (1, 0)  # script word unmatched
            if score[i][j - 1] > best:
                best, step = score[i][j - 1], (0, 1)  # recognised word dropped
            sim = _similar(s[s0 + i - 1], r[r0 + j - 1])
            if sim >= SIMILAR and score[i - 1][j - 1] + sim > best:
                best, step = score[i - 1][j - 1] + sim, (1, 1)
            if j >= 2:  # one script word spoken as two recognised ones ("Canvas Cast")
                joined = r[r0 + j - 2] + r[r0 + j - 1]
                sim2 = _similar(s[s0 + i - 1], joined)
                if sim2 >= SIMILAR and score[i - 1][j - 2] + sim2 > best:
                    best, step = score[i - 1][j - 2] + sim2, (1, 2)
            score[i][j], move[i][j] = best, step
    pairs = []
    i, j = n, m
    while i > 0 and j > 0:
        taken = move[i][j]
        assert taken is not None
        di, dj = taken
        if di == 1 and dj >= 1:
            pairs.append(_Pair(s0 + i - 1, tuple(range(r0 + j - dj, r0 + j))))
        i, j = i - di, j - dj
    return pairs[::-1]


def _interpolate(script: Sequence[str], times: list[tuple[float, float] | None],
                 duration: float) -> list[tuple[float, float]]:
    """Fill unmatched words between the timed neighbours, by character length."""
    times = list(times)
    i = 0
    n = len(times)
    while i < n:
        if times[i] is not None:
            i += 1
            continue
        j = i
        while j < n and times[j] is None:
            j += 1
        prev = times[i - 1] if i > 0 else None
        following = times[j] if j < n else None
        begin = prev[1] if prev is not None else 0.0
        finish = following[0] if following is not None else max(begin, duration)
        finish = max(finish, begin)
        weights = [max(1, len(script[k])) for k in range(i, j)]
        total = sum(weights)
        t = begin
        for k, weight in zip(range(i, j), weights, strict=True):
            span = (finish - begin) * weight / total
            times[k] = (t, t + span)
            t += span
        i = j
    return [t for t in times if t is not None]
