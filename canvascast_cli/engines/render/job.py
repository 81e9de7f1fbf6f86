"""One render job, start to finish: the function every host runs (CLI, job server, Modal).

``run_render(job)`` checks the destination, resolves and checks every input, refuses to
overwrite one of them, and renders. It takes a typed job and a progress callback and
returns a typed result; it never imports the CLI.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from canvascast_cli.atomic import check_destination
from canvascast_cli.config import Settings
from canvascast_cli.engines.render.engine import RenderOptions, RenderResult, render
from canvascast_cli.engines.render.inputs import InputLimits, font_files, resolve_timeline
from canvascast_cli.errors import InvalidInput
from canvascast_cli.timeline import ResolvedTimeline, Timeline

if TYPE_CHECKING:
    import httpx

OUTPUT_SUFFIXES = (".mp4", ".m4v")
Progress = Callable[[float, float], None]  # (frames done, frames in all)


@dataclass(frozen=True)
class RenderJob:
    timeline: Timeline
    base_dir: Path  # relative input paths are read from here
    output: Path
    options: RenderOptions = field(default_factory=RenderOptions)
    overwrite: bool = False
    limits: InputLimits = field(default_factory=InputLimits)
    # Render caption characters no font has (as boxes, with a warning) instead of failing.
    allow_missing_glyphs: bool = False

    @property
    def frames(self) -> int:
        start, end = self.options.frame_range or (0, self.timeline.total_frames)
        return end - start


def input_limits(settings: Settings) -> InputLimits:
    """Download bounds from modal.toml's ``[inputs]``."""
    inputs = settings.inputs
    return InputLimits(download_timeout=inputs.download_timeout,
                       download_max_bytes=inputs.download_max_mb * 1024 * 1024)


def check_job(job: RenderJob) -> Path:
    """What can be checked without touching the inputs; returns the absolute output."""
    output = check_destination(job.output, overwrite=job.overwrite, what="-o",
                               suffixes=OUTPUT_SUFFIXES)
    total = job.timeline.total_frames
    if job.options.frame_range is not None:
        start, end = job.options.frame_range
        if not 0 <= start < end <= total:
            raise InvalidInput(f"--frames: {start}:{end} is not a range inside the video's "
                               f"0:{total} frames (START < END <= {total})")
    return output


def run_render(job: RenderJob, *, progress: Progress | None = None,
               transport: httpx.BaseTransport | None = None) -> RenderResult:
    """Render ``job``. ``transport``: what image URLs are fetched through (a job API's
    worker passes one that reaches public addresses only)."""
    output = check_job(job)
    resolved = resolve_timeline(job.timeline, job.base_dir, limits=job.limits,
                                allow_missing_glyphs=job.allow_missing_glyphs,
                                transport=transport)
    refuse_overwriting_an_input(output, resolved)
    return render(resolved, output, options=job.options, overwrite=job.overwrite,
                  on_progress=progress)


def input_paths(resolved: ResolvedTimeline) -> list[Path]:
    """Every local file the render reads."""
    paths = [*resolved.images, resolved.narration, resolved.music]
    captions = resolved.timeline.captions
    if captions is not None:
        if captions.transcript is not None:
            paths.append(_local(captions.transcript, resolved.base_dir))
        paths += font_files(captions.style, resolved.base_dir)
    return [p for p in paths if p is not None]


def refuse_overwriting_an_input(output: Path, resolved: ResolvedTimeline) -> None:
    refuse_overwriting(output, input_paths(resolved))


def refuse_overwriting(output: Path, inputs: Iterable[Path]) -> None:
    """InvalidInput when ``output`` exists and is one of ``inputs`` (the same file)."""
    if not output.exists():
        return
    for path in inputs:
        try:
            same = os.path.samefile(path, output)
        except OSError:
            same = False
        if same:
            raise InvalidInput(f"-o: {output} is one of the render's own inputs ({path}); "
                               "write the video somewhere else")


def _local(ref: str, base_dir: Path) -> Path:
    path = Path(ref).expanduser()
    return path if path.is_absolute() else base_dir / path
