"""Long recordings in parallel: cut at pauses, pieces transcribed at once, stitched.

A recording longer than ``PARALLEL_MIN_SECONDS`` on a CPU with more than one core is cut
into pieces at pauses (``audio.iter_chunks``: the middle of the longest quiet run near
each nominal cut, never inside a word) and the pieces are transcribed by worker
processes, each with its own model and one CTranslate2 thread: a single call with two
threads keeps ~1.75 of 2 cores busy, two single-threaded calls ~1.95 (see
docs/performance.md). Each worker refines its piece's words as the serial path does
(``pipeline.recognise_chunk``). The parent decodes the file once, writes each piece to a
temporary ``.npy`` file as soon as it is cut (the workers load their models meanwhile),
and holds no more than one piece's samples: memory does not grow with the recording.

``stitch`` joins the pieces on the recording's clock: pieces that overlap (a remote
fan-out may send overlapping pieces) keep each word on the side of the overlap's middle
its middle falls on; a word heard on both sides of a cut (the same word, touching or
overlapping in time) is kept once; segments are renumbered. Pieces cut in pauses do not
overlap, so this path's stitch only moves and renumbers.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from canvascast_cli.engines.transcribe.align import normalise
from canvascast_cli.engines.transcribe.audio import SAMPLE_RATE, iter_chunks
from canvascast_cli.engines.transcribe.models import ModelRef
from canvascast_cli.engines.transcribe.result import Segment, Word

# Below this length one process transcribes the whole: worker start-up (a Python, its
# imports and a model each, ~1 s) would not pay back, and one process's refinement runs
# in the core CTranslate2 leaves idle, hidden (bench/transcribe_speed_bench.py: at 1 min
# the serial path beat pieces; docs/performance.md).
PARALLEL_MIN_SECONDS = 180.0
# Pieces at most this long (faster-whisper's whole-input buffers stay ~0.25 GB), at least
# the shortest (one Whisper window: shorter pieces cost accuracy, docs/transcribe.md).
MAX_PIECE_SECONDS = 300.0
MIN_PIECE_SECONDS = 30.0
# A cut is searched for in this window before its nominal place (a quarter of the piece
# at most).
CUT_SEARCH_SECONDS = 20.0
# Two words with the same text this close across a cut are one word heard twice.
DUPLICATE_GAP_SECONDS = 0.1


@dataclass(frozen=True)
class Part:
    """One piece's transcription on the recording's clock: the piece's span, its
    segments (with their words), and per word why refinement kept its time (None when
    the words were refined or refinement did not run: then ``kept`` is None)."""

    start: float
    end: float
    segments: Sequence[Segment]
    kept: Sequence[str | None] | None = None


def default_workers(duration: float, *, cpus: int | None = None, gpu: bool = False) -> int:
    """How many worker processes transcribe a recording of ``duration`` seconds: 1 (the
    serial path) on a GPU, on one core, or below ``PARALLEL_MIN_SECONDS``; else one per
    core, no more than pieces of ``MIN_PIECE_SECONDS`` there are."""
    cpus = cpus if cpus is not None else (os.cpu_count() or 1)
    if gpu or cpus < 2 or duration < PARALLEL_MIN_SECONDS:
        return 1
    return max(1, min(cpus, int(duration // MIN_PIECE_SECONDS)))


def plan_pieces(duration: float, workers: int) -> tuple[float, float]:
    """``(chunk_seconds, search_seconds)`` for ``iter_chunks``: a multiple of ``workers``
    pieces of about equal length, none over ``MAX_PIECE_SECONDS``. A cut is searched for
    before its nominal place, so the nominal length is raised by half the search window:
    pieces come out about equal on average, and the last does not take a long tail."""
    count = workers * max(1, math.ceil(duration / (workers * MAX_PIECE_SECONDS)))
    length = max(duration / count, MIN_PIECE_SECONDS)
    search = min(CUT_SEARCH_SECONDS, length / 4)
    return length + search / 2, search


# ---------------------------------------------------------------------------------------
# Stitching


def stitch(parts: Sequence[Part]) -> tuple[list[Segment], list[str | None] | None]:
    """The parts' segments as one transcription: words in overlaps kept once, a word
    heard on both sides of a cut kept once, segments renumbered from 0. Also the per-word
    kept reasons, in the same order (None when any part has none)."""
    ordered = sorted(parts, key=lambda p: p.start)
    with_kept = all(p.kept is not None for p in ordered)
    # Where each overlap is split: its middle. Parts that do not overlap are not split.
    lows = [-math.inf] * len(ordered)
    highs = [math.inf] * len(ordered)
    for k in range(1, len(ordered)):
        previous, part = ordered[k - 1], ordered[k]
        if part.start < previous.end:
            lows[k] = highs[k - 1] = (part.start + previous.end) / 2
    segments: list[Segment] = []
    kept: list[str | None] = []
    for k, part in enumerate(ordered):
        reasons = iter(part.kept) if part.kept is not None else None
        for segment in part.segments:
            words, why = [], []
            for word in segment.words:
                reason = next(reasons) if reasons is not None else None
                middle = (word.start + word.end) / 2
                if lows[k] <= middle < highs[k]:
                    words.append(word)
                    why.append(reason)
            if segment.words and not words:
                continue  # every word of it belongs to the other part
            if not segment.words and not lows[k] <= (segment.start + segment.end) / 2 < highs[k]:
                continue
            if words and segments and segments[-1].words and k and segment is part.segments[0]:
                words, why = _join_cut(segments, kept, words, why)
                if not words:
                    continue
            changed = len(words) != len(segment.words) or any(
                a is not b for a, b in zip(words, segment.words, strict=False))
            if changed:
                segment = replace(segment, words=tuple(words),
                                  text=" ".join(w.word for w in words),
                                  start=min(segment.start, words[0].start) if words else
                                  segment.start,
                                  end=max(segment.end, words[-1].end) if words else segment.end)
            segments.append(replace(segment, id=len(segments)))
            kept += why
    return segments, (kept if with_kept else None)


def _join_cut(segments: list[Segment], kept: list[str | None], words: list[Word],
              why: list[str | None]) -> tuple[list[Word], list[str | None]]:
    """The first words of a part after the last segment kept so far: the same word on
    both sides of the cut becomes one; a word that starts before the previous one ended
    starts where it ended (words never overlap)."""
    last = segments[-1]
    before = last.words[-1]
    first = words[0]
    same = normalise(before.word) == normalise(first.word) and normalise(first.word)
    if same and first.start <= before.end + DUPLICATE_GAP_SECONDS:
        merged = replace(before, start=min(before.start, first.start),
                         end=max(before.end, first.end))
        if (first.probability or 0.0) > (before.probability or 0.0):
            merged = replace(first, start=merged.start, end=merged.end)
        segments[-1] = replace(last, words=(*last.words[:-1], merged),
                               end=max(last.end, merged.end))
        if kept:
            kept[-1] = kept[-1] if why[0] is not None else None
        return words[1:], why[1:]
    if first.start < before.end:
        words = [replace(first, start=before.end, end=max(first.end, before.end)), *words[1:]]
    return words, why


# ---------------------------------------------------------------------------------------
# The parallel path


@dataclass(frozen=True)
class PieceResult:
    """What a worker sends back for one piece: its segments on the piece's own clock."""

    index: int
    segments: list[Segment]
    language: str
    kept: list[str | None] | None
    refine_skipped: str | None
    aligner: str | None
    recognise_seconds: float
    refine_seconds: float
    wait_seconds: float
    load_seconds: float
    peak_mb: float | None
    # time.perf_counter() in the worker when its first word was decoded (the clock is the
    # machine's monotonic one on Linux and macOS, the same in every process)
    first_word: float | None = None


@dataclass(frozen=True)
class PieceTask:
    index: int
    path: str  # a .npy of the piece's samples
    language: str | None
    beam_size: int
    refine: bool  # refine the recognised words (no script)
    refine_language: bool  # refinement wanted at all (then with a script: later)


# In each worker process: the recogniser, loaded once by the pool's initializer.
_worker: dict[str, Any] = {}


def _start_worker(ref: ModelRef, compute_type: str | None, threads: int) -> None:
    from canvascast_cli.engines.transcribe.engines import create_engine

    began = time.perf_counter()
    _worker["recogniser"] = create_engine(ref, compute_type=compute_type, threads=threads)
    _worker["load_seconds"] = time.perf_counter() - began


def _ready() -> float:
    """A no-op task: submitting one per worker starts them all at once (each loads its
    model while the parent decodes the first piece)."""
    return float(_worker.get("load_seconds", 0.0))


def _piece(task: PieceTask) -> PieceResult:
    from canvascast_cli.engines.transcribe.pipeline import recognise_chunk

    samples = np.load(task.path)
    done = recognise_chunk(_worker["recogniser"], samples, language=task.language,
                           beam_size=task.beam_size, refine=task.refine,
                           with_script=not task.refine and task.refine_language)
    return PieceResult(task.index, done.segments, done.language, done.kept, done.skipped,
                       done.aligner, done.recognise_seconds, done.refine_seconds,
                       done.wait_seconds, float(_worker.get("load_seconds", 0.0)), peak_rss_mb(),
                       done.first_word)


def _refine_piece(path: str, words: list[Word], offset: float
                  ) -> tuple[list[Word], list[str | None], float]:
    """Script words re-timed against one piece (the second pass, in a worker)."""
    from canvascast_cli.engines.transcribe.refine import get_refiner

    samples = np.load(path)
    began = time.perf_counter()
    timed, reasons = get_refiner().refine(samples, words, offset=offset)
    return timed, reasons, time.perf_counter() - began


def peak_rss_mb() -> float | None:
    """This process's high-water resident memory (Linux), in MB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


@dataclass
class ParallelRun:
    """The stitched result of ``run_pieces`` and what it cost."""

    parts: list[Part]
    language: str
    skipped: str | None
    aligner: str | None
    refine_seconds: float
    wait_seconds: float
    load_seconds: float
    first_piece_seconds: float | None  # when the first word was decoded
    worker_peak_mb: list[float]
    pieces: list[tuple[str, float, float]]  # the .npy files kept for a second pass


def make_pool(workers: int, ref: ModelRef, compute_type: str | None, threads: int
              ) -> Executor:
    """Worker processes (spawned: no model or thread state is inherited), each loading
    ``ref`` once."""
    import multiprocessing

    return ProcessPoolExecutor(max_workers=workers,
                               mp_context=multiprocessing.get_context("spawn"),
                               initializer=_start_worker,
                               initargs=(ref, compute_type, threads))


def run_pieces(pool: Executor, workers: int, audio_path: Path, duration: float,
               folder: Path, *, language: str | None, beam_size: int, refine: bool,
               with_script: bool,
               report: Callable[[float], None], began: float,
               piece: Callable[[PieceTask], PieceResult] = _piece) -> ParallelRun:
    """Cut ``audio_path`` into pieces, transcribe them on ``pool``, return them in order
    on the recording's clock (unstitched). ``report(seconds done)`` as pieces finish."""
    warm = [pool.submit(_ready) for _ in range(workers)]
    chunk_seconds, search_seconds = plan_pieces(duration, workers)
    futures: list[tuple[Future[PieceResult], str, float, float]] = []
    for chunk in _pieces(audio_path, chunk_seconds, search_seconds):
        path = str(folder / f"piece-{chunk.index:04d}.npy")
        np.save(path, chunk.samples)
        task = PieceTask(chunk.index, path, language, beam_size,
                         refine=refine and not with_script, refine_language=refine)
        futures.append((pool.submit(piece, task), path, chunk.start, chunk.end))
        del chunk
    results: list[PieceResult] = []
    done = 0.0
    for future, _path, start, end in futures:
        result = future.result()
        results.append(result)
        done += end - start
        report(done)
    spoken = results[0].language
    if language is None and any(r.language != spoken for r in results):
        # Like one call on the whole file: the language heard first holds throughout.
        again = {i: pool.submit(piece, PieceTask(i, futures[i][1], spoken, beam_size,
                                                 refine=refine and not with_script,
                                                 refine_language=refine))
                 for i, r in enumerate(results) if r.language != spoken}
        for i, future in again.items():
            results[i] = future.result()
    loads = [f.result() for f in warm]
    # The first word decoded, in whichever worker; else when the first piece came back.
    heard = [r.first_word for r in results if r.first_word is not None]
    first = min(heard) - began if heard else None
    parts = []
    for result, (_future, _path, start, end) in zip(results, futures, strict=True):
        segments = [_moved(s, start) for s in result.segments]
        parts.append(Part(start, end, segments, result.kept))
    return ParallelRun(
        parts=parts, language=spoken,
        skipped=next((r.refine_skipped for r in results if r.refine_skipped), None),
        aligner=next((r.aligner for r in results if r.aligner), None),
        refine_seconds=sum(r.refine_seconds for r in results),
        wait_seconds=max(r.wait_seconds for r in results),
        load_seconds=max(loads + [r.load_seconds for r in results]),
        first_piece_seconds=first,
        worker_peak_mb=sorted({r.peak_mb for r in results if r.peak_mb is not None}),
        pieces=[(p, s, e) for _f, p, s, e in futures])


def refine_pieces(pool: Executor, pieces: Sequence[tuple[str, float, float]],
                  words: Sequence[Word], total: float
                  ) -> tuple[list[Word], list[str | None], float]:
    """Script words (in time order) re-timed piece by piece on ``pool``: each piece times
    the words that start in it (the last piece: all the rest)."""
    jobs = []
    first = 0
    for k, (path, start, end) in enumerate(pieces):
        last = first
        final = k == len(pieces) - 1 or end >= total
        while last < len(words) and (final or words[last].start < end):
            last += 1
        if last > first:
            jobs.append(pool.submit(_refine_piece, path, list(words[first:last]), start))
        first = last
    out: list[Word] = []
    kept: list[str | None] = []
    seconds = 0.0
    for job in jobs:
        timed, reasons, spent = job.result()
        out += timed
        kept += reasons
        seconds += spent
    return out, kept, seconds


# ---------------------------------------------------------------------------------------
# Pieces as files: a remote fan-out sends each piece as its own job


# A remote fan-out: pieces of at least this much audio (a GPU container's cold start,
# ~30 s, stays a small share of each), and only for recordings of two pieces or more.
REMOTE_PIECE_SECONDS = 300.0


def remote_pieces(duration: float, max_containers: int) -> int:
    """How many jobs a remote transcription of ``duration`` seconds is cut into: one per
    ``REMOTE_PIECE_SECONDS``, at most ``max_containers``; 1 (one job) below two pieces."""
    return max(1, min(max_containers, int(duration // REMOTE_PIECE_SECONDS)))


def cut_to_files(audio_path: Path, duration: float, pieces: int, folder: Path
                 ) -> list[tuple[float, float, Path]]:
    """Cut the recording at pauses into about ``pieces`` pieces (as the local parallel
    path cuts it) and write each to ``folder`` as 16 kHz mono FLAC (lossless for what the
    recogniser hears: it decodes to 16 kHz mono anyway); ``(start, end, file)`` each.
    One piece's samples are held at a time."""
    import av

    chunk_seconds, search_seconds = plan_pieces(duration, pieces)
    out: list[tuple[float, float, Path]] = []
    for chunk in _pieces(audio_path, chunk_seconds, search_seconds):
        path = folder / f"piece-{chunk.index:04d}.flac"
        pcm = np.clip(np.rint(chunk.samples * 32768.0), -32768, 32767).astype(np.int16)
        with av.open(str(path), "w", format="flac") as container:
            stream = container.add_stream("flac", rate=SAMPLE_RATE, layout="mono")
            frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16",
                                               layout="mono")
            frame.sample_rate = SAMPLE_RATE
            for packet in stream.encode(frame):
                container.mux(packet)
            for packet in stream.encode(None):
                container.mux(packet)
        out.append((chunk.start, chunk.end, path))
        del chunk, pcm
    return out


def with_segment_words(segments: Sequence[Segment], words: Sequence[Word]
                       ) -> list[Segment]:
    """Segments with their words again (a transcript that came back as JSON lists its
    words apart): each word goes to the last segment starting at or before its middle."""
    out: list[list[Word]] = [[] for _ in segments]
    k = 0
    for word in words:
        middle = (word.start + word.end) / 2
        while k + 1 < len(segments) and segments[k + 1].start <= middle:
            k += 1
        if segments:
            out[k].append(word)
    return [replace(s, words=tuple(w)) for s, w in zip(segments, out, strict=True)]


def _pieces(audio_path: Path, chunk_seconds: float, search_seconds: float) -> Iterator[Any]:
    return iter_chunks(audio_path, chunk_seconds=chunk_seconds, search_seconds=search_seconds)


def scratch_folder() -> tempfile.TemporaryDirectory[str]:
    return tempfile.TemporaryDirectory(prefix="canvascast-pieces-")


def _moved(segment: Segment, seconds: float) -> Segment:
    def move(w: Word) -> Word:
        return replace(w, start=w.start + seconds, end=w.end + seconds)

    return replace(segment, start=segment.start + seconds, end=segment.end + seconds,
                   words=tuple(move(w) for w in segment.words))

