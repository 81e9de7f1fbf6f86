"""Audio file -> Transcript: decode, resolve the model, recognise, align to a script.

The same function runs locally and inside the Modal container. ``offset`` shifts every
time, so a long recording split into pieces (each transcribed on its own container) joins
back on one clock.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

from canvascast_cli.engines.transcribe.align import align_script, script_tokens
from canvascast_cli.engines.transcribe.audio import load_audio
from canvascast_cli.engines.transcribe.engines import create_engine
from canvascast_cli.engines.transcribe.models import resolve_model
from canvascast_cli.engines.transcribe.result import Transcript
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
) -> Transcript:
    """Transcribe ``audio_path``; ``progress(seconds_done, seconds_total)`` as it goes."""
    if beam_size < 1 or beam_size > 20:
        raise InvalidInput(f"--beam-size: {beam_size} is out of range; allowed: 1 to 20")
    ref = resolve_model(engine, model)  # before decoding: a missing model fails at once
    audio = load_audio(audio_path)
    began = time.perf_counter()
    recogniser = create_engine(ref, compute_type=compute_type, threads=threads)
    loaded = time.perf_counter()
    total = audio.duration

    def report(done: float) -> None:
        if progress is not None:
            progress(min(done, total), total)

    report(0.0)
    segments, spoken = recogniser.transcribe(audio.samples, language=language,
                                             beam_size=beam_size, progress=report)
    report(total)
    finished = time.perf_counter()
    words = tuple(w for s in segments for w in s.words)
    alignment = None
    if script is not None:
        aligned, alignment = align_script(script, words, audio.duration)
        words = tuple(aligned)
    transcript = Transcript(
        segments=tuple(segments), words=words, language=spoken, duration=audio.duration,
        engine=ref.engine, model=ref.name, alignment=alignment,
        extra={"timing": {"load_seconds": round(loaded - began, 3),
                          "transcribe_seconds": round(finished - loaded, 3),
                          "realtime_factor": round(audio.duration / (finished - loaded), 2)
                          if finished > loaded else None}},
    )
    return transcript.shifted(offset)
