"""Audio file -> Transcript: decode, resolve the model, recognise, align to a script.

The same function runs locally and inside the Modal container. ``offset`` shifts every
time, so a long recording split into pieces (each transcribed on its own container) joins
back on one clock.

Memory stays flat with the recording's length: the file is checked in one decoding pass
that keeps no samples, then decoded again and recognised chunk by chunk (about
``chunk_seconds`` each, cut in pauses; see ``audio.iter_chunks``) with the model loaded
once. Only the current chunk's samples are held; segments and words are kept, moved onto
the recording's clock.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

from canvascast_cli.engines.transcribe.align import align_script, script_tokens
from canvascast_cli.engines.transcribe.audio import (
    DEFAULT_CHUNK_SECONDS,
    DEFAULT_SEARCH_SECONDS,
    iter_chunks,
    probe_audio,
)
from canvascast_cli.engines.transcribe.engines import create_engine
from canvascast_cli.engines.transcribe.models import resolve_model
from canvascast_cli.engines.transcribe.result import Segment, Transcript, Word
from canvascast_cli.errors import InvalidInput

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
) -> Transcript:
    """Transcribe ``audio_path``; ``progress(seconds_done, seconds_total)`` as it goes.

    ``chunk_seconds``/``search_seconds``: how the recording is cut for recognition
    (``audio.iter_chunks``); the defaults keep peak memory flat at any length.
    """
    if beam_size < 1 or beam_size > 20:
        raise InvalidInput(f"--beam-size: {beam_size} is out of range; allowed: 1 to 20")
    ref = resolve_model(engine, model)  # before decoding: a missing model fails at once
    info = probe_audio(audio_path)  # every input check, before the model loads
    began = time.perf_counter()
    recogniser = create_engine(ref, compute_type=compute_type, threads=threads)
    loaded = time.perf_counter()
    total = info.duration

    def report(done: float) -> None:
        if progress is not None:
            progress(min(done, total), total)

    report(0.0)
    segments: list[Segment] = []
    spoken: str | None = None
    for chunk in iter_chunks(audio_path, chunk_seconds=chunk_seconds,
                             search_seconds=search_seconds):
        start, end = chunk.start, chunk.end
        pieces, detected = recogniser.transcribe(chunk.samples, language=language,
                                                 beam_size=beam_size,
                                                 progress=_after(start, report))
        del chunk  # its samples go before the next chunk is decoded
        if spoken is None:
            # Like one call on the whole file: the language heard first holds throughout.
            spoken = detected
            language = language or detected
        segments += [_moved(piece, start, len(segments) + i) for i, piece in enumerate(pieces)]
        report(end)
    report(total)
    finished = time.perf_counter()
    words = tuple(w for s in segments for w in s.words)
    alignment = None
    if script is not None:
        aligned, alignment = align_script(script, words, total)
        words = tuple(aligned)
    transcript = Transcript(
        segments=tuple(segments), words=words, language=spoken or language or "en",
        duration=total, engine=ref.engine, model=ref.name, alignment=alignment,
        extra={"timing": {"load_seconds": round(loaded - began, 3),
                          "transcribe_seconds": round(finished - loaded, 3),
                          "realtime_factor": round(total / (finished - loaded), 2)
                          if finished > loaded else None}},
    )
    return transcript.shifted(offset)


def _after(start: float, report: Callable[[float], None]) -> Callable[[float], None]:
    """A chunk's progress (seconds into the chunk) as progress over the whole."""
    return lambda done: report(start + done)


def _moved(segment: Segment, seconds: float, segment_id: int) -> Segment:
    """A chunk's segment on the recording's clock, numbered among all the segments."""

    def move(w: Word) -> Word:
        return replace(w, start=w.start + seconds, end=w.end + seconds)

    return replace(segment, id=segment_id, start=segment.start + seconds,
                   end=segment.end + seconds, words=tuple(move(w) for w in segment.words))
