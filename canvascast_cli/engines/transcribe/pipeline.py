"""Audio file -> Transcript: decode, resolve the model, recognise, align to a script,
refine word times.

The same function runs locally and inside the Modal container. ``offset`` shifts every
time, so a long recording split into pieces (each transcribed on its own container) joins
back on one clock.

Memory stays flat with the recording's length: the file is checked in one decoding pass
that keeps no samples, then decoded again and recognised chunk by chunk (about
``chunk_seconds`` each, cut in pauses; see ``audio.iter_chunks``) with the model loaded
once. Only the current chunk's samples are held; segments and words are kept, moved onto
the recording's clock.

Word timing refinement (``refine``, see ``refine.py``) re-times each chunk's words with
that chunk's samples, before they are released: on a thread beside the recogniser, fed
each segment as it is decoded. With a script, the words to time are the script's, known
only once every chunk is recognised: they are refined in a second pass over the file,
chunk by chunk again, so memory stays flat either way.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from canvascast_cli.engines.cache import ModelCache, load
from canvascast_cli.engines.transcribe.align import align_script, script_tokens
from canvascast_cli.engines.transcribe.audio import (
    DEFAULT_CHUNK_SECONDS,
    DEFAULT_SEARCH_SECONDS,
    iter_chunks,
    probe_audio,
)
from canvascast_cli.engines.transcribe.engines import create_engine
from canvascast_cli.engines.transcribe.models import ModelRef, resolve_model
from canvascast_cli.engines.transcribe.parallel import default_workers
from canvascast_cli.engines.transcribe.result import Refinement, Segment, Transcript, Word
from canvascast_cli.errors import InvalidInput

if TYPE_CHECKING:
    from canvascast_cli.engines.transcribe.refine import Refiner, Stream

DEFAULT_ENGINE = "faster-whisper"
DEFAULT_MODEL = "tiny.en"


def read_script(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InvalidInput(f"--script: {path}: file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"--script: {path}: cannot read it as UTF-8 text ({exc})") from None
    tokens = script_tokens(text)
    if not tokens:
        raise InvalidInput(f"--script: {path} is empty: give the narration's text")
    return tokens


def transcribe_file(
    audio_path: Path,
    *,
    engine: str = DEFAULT_ENGINE,
    model: str = DEFAULT_MODEL,
    language: str | None = None,
    beam_size: int = 5,
    script: Sequence[str] | None = None,
    offset: float = 0.0,
    compute_type: str | None = None,
    threads: int | None = None,
    progress: Callable[[float, float], None] | None = None,
    chunk_seconds: float = DEFAULT_CHUNK_SECONDS,
    search_seconds: float = DEFAULT_SEARCH_SECONDS,
    refine: bool = False,
    models: ModelCache | None = None,
    names_only: bool = False,
    workers: int | None = None,
) -> Transcript:
    """Transcribe ``audio_path``; ``progress(seconds_done, seconds_total)`` as it goes.

    ``chunk_seconds``/``search_seconds``: how the recording is cut for recognition
    (``audio.iter_chunks``); the defaults keep peak memory flat at any length.
    ``refine``: re-time the words against the audio (``refine.py``) where an aligner is
    available for the language; the transcript's ``refinement`` says what it did, or
    why it was skipped. Off here, on in ``TranscribeJob`` (what every host runs).
    ``models``: where a long-lived host keeps the recogniser between jobs. ``names_only``:
    ``model`` must be a published name, never a path (a worker serving remote jobs).
    ``workers``: worker processes for a long recording (``parallel.py``); None: one per
    core on a CPU for recordings over ``PARALLEL_MIN_SECONDS`` (faster-whisper), 1: the
    serial path.
    """
    if beam_size < 1 or beam_size > 20:
        raise InvalidInput(f"--beam-size: {beam_size} is out of range; allowed: 1 to 20")
    # Before decoding: a missing model fails at once.
    ref = resolve_model(engine, model, names_only=names_only)
    info = probe_audio(audio_path)  # every input check, before the model loads
    began = time.perf_counter()
    if workers is None:
        # A host that keeps models (``models``: ``canvascast serve``, Modal) runs jobs side
        # by side and keeps its model loaded between them: one process per job, the cached
        # model (worker processes would each load their own, every job).
        workers = (default_workers(info.duration, gpu=_gpu())
                   if ref.engine == "faster-whisper" and models is None else 1)
    if workers > 1:
        return _transcribe_parallel(
            audio_path, ref, info.duration, workers, language=language,
            beam_size=beam_size, script=script, offset=offset, compute_type=compute_type,
            threads=threads, progress=progress, refine=refine, began=began)
    total = info.duration

    def report(done: float) -> None:
        if progress is not None:
            progress(min(done, total), total)

    report(0.0)
    segments: list[Segment] = []
    spoken: str | None = None
    refiner: Refiner | None = None
    skipped: str | None = None
    kept: list[str | None] = []
    refining = 0.0  # seconds the aligner worked (beside recognition, or after it)
    waiting = 0.0  # seconds the pipeline waited for it: what it added to the wall time
    first_word: float | None = None
    known = language or ("en" if ref.name.endswith(".en") else None)
    recogniser: Any = None
    loaded = began
    load_seconds = 0.0
    # The model and the aligner load on threads while the first chunk is decoded (the
    # input was checked first: a bad file fails before any model loads).
    loader = ThreadPoolExecutor(2, thread_name_prefix="canvascast-load")
    loading = loader.submit(_timed, load_recogniser, ref, compute_type=compute_type,
                            threads=threads, models=models)
    # Without a known language the aligner waits for the first chunk to say what is spoken.
    aligning = loader.submit(_load_refiner, known) if refine and known is not None else None
    chunks = iter_chunks(audio_path, chunk_seconds=chunk_seconds,
                         search_seconds=search_seconds)
    try:
        for chunk in chunks:
            if recogniser is None:  # the first chunk is decoded: now wait for the loads
                recogniser, load_seconds = loading.result()
                loaded = time.perf_counter()
                if aligning is not None:
                    refiner, skipped = aligning.result()
                    waiting += time.perf_counter() - loaded
            start, end = chunk.start, chunk.end
            done = recognise_chunk(recogniser, chunk.samples, language=language,
                                   beam_size=beam_size, refine=refine and script is None,
                                   with_script=refine and script is not None,
                                   refiner=refiner, skipped=skipped,
                                   progress=_after(start, report))
            del chunk  # the samples go before the next chunk is decoded
            if first_word is None and done.first_word is not None:
                first_word = done.first_word - began
            if spoken is None:
                # Like one call on the whole file: the language heard first holds.
                spoken = done.language
                language = language or done.language
            refiner, skipped = done.refiner, done.skipped
            kept += done.kept or []
            refining += done.refine_seconds
            waiting += done.wait_seconds
            segments += [_moved(piece, start, len(segments) + i)
                         for i, piece in enumerate(done.segments)]
            report(end)
    finally:
        loader.shutdown(wait=True)  # a load still running finishes; nothing is left behind
    report(total)
    finished = time.perf_counter()
    words = tuple(w for s in segments for w in s.words)
    alignment = None
    if script is not None:
        aligned, alignment = align_script(script, words, total)
        words = tuple(aligned)
        if refiner is not None:
            words, kept, refining = _refine_file(refiner, audio_path, words, total,
                                                 chunk_seconds, search_seconds)
            waiting += time.perf_counter() - finished
    recognising = finished - loaded - (0.0 if script is not None else waiting)
    refinement = None
    if refine:
        refinement = (Refinement(aligner=None, skipped=skipped) if refiner is None else
                      Refinement(aligner=refiner.name, kept=tuple(kept)))
    timing = {"load_seconds": round(load_seconds, 3),
              "transcribe_seconds": round(recognising, 3),
              "realtime_factor": round(total / recognising, 2) if recognising > 0 else None,
              "first_word_seconds": None if first_word is None else round(first_word, 3)}
    if refiner is not None:
        timing["refine_seconds"] = round(refining, 3)
        timing["refine_wait_seconds"] = round(waiting, 3)
    transcript = Transcript(
        segments=tuple(segments), words=words, language=spoken or language or "en",
        duration=total, engine=ref.engine, model=ref.name, alignment=alignment,
        extra={"timing": timing}, refinement=refinement,
    )
    return transcript.shifted(offset)


def _transcribe_parallel(audio_path: Path, ref: ModelRef, total: float, workers: int, *,
                         language: str | None, beam_size: int, script: Sequence[str] | None,
                         offset: float, compute_type: str | None, threads: int | None,
                         progress: Callable[[float, float], None] | None, refine: bool,
                         began: float) -> Transcript:
    """``transcribe_file`` for a long recording: pieces cut at pauses, transcribed by
    ``workers`` processes, stitched (``parallel.py``)."""
    from canvascast_cli.engines.transcribe import parallel

    def report(done: float) -> None:
        if progress is not None:
            progress(min(done, total), total)

    report(0.0)
    per_worker = threads or max(1, (os.cpu_count() or workers) // workers)
    known = language or ("en" if ref.name.endswith(".en") else None)
    with parallel.scratch_folder() as folder, \
            parallel.make_pool(workers, ref, compute_type, per_worker) as pool:
        run = parallel.run_pieces(pool, workers, audio_path, total, Path(folder),
                                  language=known, beam_size=beam_size, refine=refine,
                                  with_script=script is not None, report=report,
                                  began=began)
        segments, kept = parallel.stitch(run.parts)
        finished = time.perf_counter()
        words = tuple(w for s in segments for w in s.words)
        alignment = None
        refining, waiting = run.refine_seconds, run.wait_seconds
        if script is not None:
            aligned, alignment = align_script(script, words, total)
            words = tuple(aligned)
            if refine and run.aligner is not None:
                timed, kept, refining = parallel.refine_pieces(pool, run.pieces, words, total)
                words = tuple(timed)
                waiting = time.perf_counter() - finished
    report(total)
    ended = time.perf_counter()
    recognising = (finished if script is not None else ended) - began
    refinement = None
    if refine:
        refinement = (Refinement(aligner=None, skipped=run.skipped) if run.aligner is None
                      else Refinement(aligner=run.aligner, kept=tuple(kept or ())))
    timing: dict[str, Any] = {
        "load_seconds": round(run.load_seconds, 3),
        "transcribe_seconds": round(recognising, 3),
        "realtime_factor": round(total / recognising, 2) if recognising > 0 else None,
        "first_word_seconds": (None if run.first_piece_seconds is None
                               else round(run.first_piece_seconds, 3)),
        "workers": workers}
    if run.aligner is not None and refine:
        timing["refine_seconds"] = round(refining, 3)
        timing["refine_wait_seconds"] = round(waiting, 3)
    transcript = Transcript(
        segments=tuple(segments), words=words, language=run.language, duration=total,
        engine=ref.engine, model=ref.name, alignment=alignment, extra={"timing": timing},
        refinement=refinement)
    return transcript.shifted(offset)


def _gpu() -> bool:
    """Whether CTranslate2 sees a CUDA device (then one process uses it whole)."""
    try:
        import ctranslate2
    except ImportError:
        return False
    return bool(ctranslate2.get_cuda_device_count() > 0)


def load_recogniser(ref: ModelRef, *, compute_type: str | None = None,
                    threads: int | None = None, models: ModelCache | None = None) -> Any:
    """The recogniser for model ``ref``: from ``models`` when a host keeps one loaded
    (keyed by everything the loaded model depends on), else loaded now."""
    return load(models, ("whisper", ref.engine, str(ref.path), compute_type, threads),
                lambda: create_engine(ref, compute_type=compute_type, threads=threads))


@dataclass
class ChunkDone:
    """One chunk recognised (and its words refined, without a script)."""

    segments: list[Segment]  # on the chunk's clock
    language: str
    kept: list[str | None] | None  # per word, when refined
    refiner: Refiner | None
    skipped: str | None  # why refinement did not run
    recognise_seconds: float
    refine_seconds: float  # the aligner's work
    wait_seconds: float  # what refinement added: loading it, finishing after recognition
    first_word: float | None  # perf_counter() when the first word was decoded

    @property
    def aligner(self) -> str | None:
        return self.refiner.name if self.refiner is not None else None


def recognise_chunk(recogniser: Any, samples: Any, *, language: str | None, beam_size: int,
                    refine: bool, with_script: bool = False, refiner: Refiner | None = None,
                    skipped: str | None = None,
                    progress: Callable[[float], None] | None = None) -> ChunkDone:
    """Recognise one chunk's samples; with ``refine``, re-time its words with the same
    samples on a thread beside the recogniser, each segment as soon as it is decoded.
    ``refiner``: the one already loaded (else loaded here, once the language is known).
    ``with_script``: refinement is wanted later (script words): only load the aligner.
    The serial path runs it chunk after chunk; the parallel one in worker processes."""
    waiting = 0.0
    wanted = refine or with_script
    if wanted and refiner is None and skipped is None and language is not None:
        began = time.perf_counter()
        refiner, skipped = _load_refiner(language)
        waiting += time.perf_counter() - began
    # Without a script the words to refine are the recognised ones: refined while the
    # recogniser goes on (it leaves a core idle much of the time).
    stream = refiner.stream(samples) if refiner is not None and refine else None
    first: list[float] = []

    def seen(piece: Segment) -> None:
        if not first and piece.words:
            first.append(time.perf_counter())
        if stream is not None:
            stream.add(piece.words)

    began = time.perf_counter()
    try:
        pieces, detected = recogniser.transcribe(samples, language=language,
                                                 beam_size=beam_size, progress=progress,
                                                 on_segment=seen)
    except BaseException:
        if stream is not None:
            stream.close()  # its thread ends and the aligner is free again
        raise
    recognised = time.perf_counter()
    kept: list[str | None] | None = None
    refining = 0.0
    if wanted and refiner is None and skipped is None:
        refiner, skipped = _load_refiner(language or detected)  # a language found only now
        waiting += time.perf_counter() - recognised
    if refiner is not None and refine:
        began_refining = time.perf_counter()
        if stream is None:  # the first chunk of a language found only now
            stream = refiner.stream(samples)
            stream.add([w for piece in pieces for w in piece.words])
        timed, kept = stream.finish()
        pieces = _with_words(pieces, timed)
        refining = stream.seconds
        waiting += time.perf_counter() - began_refining
    return ChunkDone(pieces, detected, kept, refiner, skipped, recognised - began, refining,
                     waiting, first[0] if first else None)


def _timed(load: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Any, float]:
    """``load(*args, **kwargs)`` and the seconds it took."""
    began = time.perf_counter()
    return load(*args, **kwargs), time.perf_counter() - began


def _load_refiner(language: str | None) -> tuple[Refiner | None, str | None]:
    """The aligner for ``language``, or why there is none (pocketsphinx not installed,
    no model for the language): then refinement is skipped, not an error."""
    from canvascast_cli.engines.transcribe import refine

    reason = refine.unavailable(language)
    if reason is not None:
        return None, reason
    return refine.get_refiner(), None


def _feeder(stream: Stream) -> Callable[[Segment], None]:
    """Hands each decoded segment's words to the refinement stream."""
    return lambda piece: stream.add(piece.words)


def _with_words(pieces: list[Segment], words: list[Word]) -> list[Segment]:
    """The segments with their words replaced, in order (each segment's span still holds
    its words)."""
    out = []
    i = 0
    for piece in pieces:
        timed = tuple(words[i: i + len(piece.words)])
        i += len(piece.words)
        start = min([piece.start, *(w.start for w in timed)])
        end = max([piece.end, *(w.end for w in timed)])
        out.append(replace(piece, start=start, end=end, words=timed))
    return out


def _refine_file(refiner: Refiner, audio_path: Path, words: Sequence[Word], total: float,
                 chunk_seconds: float, search_seconds: float
                 ) -> tuple[tuple[Word, ...], list[str | None], float]:
    """``words`` (in time order) re-timed in a second pass over the file: each chunk's
    samples time the words that start in it (the last chunk: all the rest), so only one
    chunk is held at a time. Also the seconds the aligner worked."""
    out: list[Word] = []
    kept: list[str | None] = []
    seconds = 0.0
    first = 0
    for chunk in iter_chunks(audio_path, chunk_seconds=chunk_seconds,
                             search_seconds=search_seconds):
        last = first
        final = chunk.end >= total
        while last < len(words) and (final or words[last].start < chunk.end):
            last += 1
        if last > first:
            began = time.perf_counter()
            timed, reasons = refiner.refine(chunk.samples, words[first:last],
                                            offset=chunk.start)
            seconds += time.perf_counter() - began
            out += timed
            kept += reasons
        first = last
    return tuple(out), kept, seconds


def _after(start: float, report: Callable[[float], None]) -> Callable[[float], None]:
    """A chunk's progress (seconds into the chunk) as progress over the whole."""
    return lambda done: report(start + done)


def _moved(segment: Segment, seconds: float, segment_id: int) -> Segment:
    """A chunk's segment on the recording's clock, numbered among all the segments."""

    def move(w: Word) -> Word:
        return replace(w, start=w.start + seconds, end=w.end + seconds)

    return replace(segment, id=segment_id, start=segment.start + seconds,
                   end=segment.end + seconds, words=tuple(move(w) for w in segment.words))
