"""One transcription job: the function every host runs (CLI, job server, Modal).

``run_transcribe(job)`` recognises the audio (chunk by chunk, see ``pipeline``), aligns
the script when one is given, re-times the words against the audio (``refine``: on by
default, skipped with a note where no aligner is available), and judges the alignment: a
script that matches too little of what was said is almost always the wrong script, so
below ``SCRIPT_WARN_SHARE`` the transcript carries a warning and below
``SCRIPT_FAIL_SHARE`` the job fails (exit 2) unless ``allow_script_mismatch``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from canvascast_cli.engines.cache import ModelCache
from canvascast_cli.engines.transcribe import SCRIPT_FAIL_SHARE, SCRIPT_WARN_SHARE
from canvascast_cli.engines.transcribe.pipeline import (
    DEFAULT_ENGINE,
    DEFAULT_MODEL,
    transcribe_file,
)
from canvascast_cli.engines.transcribe.result import Transcript
from canvascast_cli.errors import InvalidInput

Progress = Callable[[float, float], None]  # (seconds of audio done, seconds in all)


@dataclass(frozen=True)
class TranscribeJob:
    audio: Path
    engine: str = DEFAULT_ENGINE
    model: str = DEFAULT_MODEL
    language: str | None = None
    beam_size: int = 5
    script: tuple[str, ...] | None = None  # the narration's words, when known
    offset: float = 0.0
    compute_type: str | None = None
    threads: int | None = None
    allow_script_mismatch: bool = False
    refine: bool = True  # word timing refinement (refine.py), where available
    names_only: bool = False  # model must be a published name (remote jobs: never a path)

    def __post_init__(self) -> None:
        if not 1 <= self.beam_size <= 20:
            raise InvalidInput(f"--beam-size: {self.beam_size} is out of range; allowed: 1 to 20")
        if not 0 <= self.offset < 10 * 24 * 3600:
            raise InvalidInput(f"--offset: {self.offset:g} s; give 0 or more seconds (the "
                               "start of this piece in a longer recording)")


def run_transcribe(job: TranscribeJob, *, progress: Progress | None = None,
                   models: ModelCache | None = None) -> Transcript:
    """Transcribe ``job.audio``. ``models``: a long-lived host's cache of loaded models."""
    transcript = transcribe_file(
        job.audio, engine=job.engine, model=job.model, language=job.language,
        beam_size=job.beam_size, script=job.script, offset=job.offset,
        compute_type=job.compute_type, threads=job.threads, progress=progress,
        refine=job.refine, models=models, names_only=job.names_only)
    return judge_alignment(transcript, allow_mismatch=job.allow_script_mismatch)


def judge_alignment(transcript: Transcript, *, allow_mismatch: bool) -> Transcript:
    alignment = transcript.alignment
    if alignment is None or alignment.matched_share >= SCRIPT_WARN_SHARE:
        return transcript
    said = (f"--script matches only {alignment.matched} of its {alignment.script_words} "
            f"words ({alignment.matched_share:.0%}) to the speech")
    if alignment.matched_share < SCRIPT_FAIL_SHARE and not allow_mismatch:
        raise InvalidInput(f"{said}: is it this recording's script? The unmatched words "
                           "would get guessed times; pass --allow-script-mismatch to accept")
    warning = (f"{said}; {alignment.interpolated} words were timed by interpolation and "
               "may be far off")
    return replace(transcript, warnings=(*transcript.warnings, warning))
