"""How good a transcript is against the truth: word error rate and word-time errors.

Used by the tests and by ``bench/transcribe_bench.py``; words are compared normalised
(``align.normalise``: case, punctuation and accents ignored).
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from typing import Any

from canvascast_cli.engines.transcribe.align import normalise


def word_error_rate(reference: Sequence[str], hypothesis: Sequence[str]) -> float:
    """Word-level Levenshtein distance over the reference length."""
    ref = [t for t in (normalise(w) for w in reference) if t]
    hyp = [t for t in (normalise(w) for w in hypothesis) if t]
    if not ref:
        raise ValueError("the reference has no words")
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return prev[-1] / len(ref)


def timing_errors(truth: Sequence[Mapping[str, Any]], words: Sequence[Mapping[str, Any]]
                  ) -> tuple[list[float], list[float]]:
    """|start - true start| and |end - true end| for the recognised words paired with the
    truth by sequence alignment of their text (misrecognised words are left out)."""
    a = [normalise(str(w["word"])) for w in truth]
    b = [normalise(str(w["word"])) for w in words]
    starts, ends = [], []
    for block in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_matching_blocks():
        for k in range(block.size):
            t, w = truth[block.a + k], words[block.b + k]
            starts.append(abs(float(t["start"]) - float(w["start"])))
            ends.append(abs(float(t["end"]) - float(w["end"])))
    return starts, ends
