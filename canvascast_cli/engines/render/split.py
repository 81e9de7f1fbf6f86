"""Split renders: a video cut into frame ranges rendered apart, then joined by stream copy.

Each piece is frames ``[start, end)`` rendered as video only (``RenderOptions.video_only``)
with the same pinned x264 settings (``engine.STITCHABLE``: closed GOP, headers from the
settings alone), so every piece starts on an IDR frame and carries the same SPS/PPS. The
audio (narration, music, ducking) is made once, for the whole video, by its own ffmpeg
(``audio_command``): the mix built as PCM in one filtergraph, exactly as an unsplit render
builds it, and encoded to AAC once, in the same command, into an audio-only MP4. It runs
while the pieces render (``render_local`` starts it next to the pool); never per piece,
so there are no AAC priming gaps at the seams.

The join checks every piece (its frame count, an IDR first, the same SPS/PPS as the
others) and the audio (AAC, as long as the video), concatenates the pieces with ffmpeg's
concat demuxer, puts each timestamp back on the frame grid (the demuxer adds each
piece's duration in microseconds, which drifts a tick after ~50 pieces at 29.97 fps),
and muxes the audio in — video and audio both by stream copy, nothing encoded — into a
faststart MP4 like the unsplit render's. Given no audio (the host's join of piece blobs),
the join mixes and encodes it in its own ffmpeg command, as every join once did. The
video's frames are the pieces' frames, bit for bit; its pts equal the unsplit render's.
Its bytes do not: x264 codes each piece's first frame as an IDR where the unsplit render
has a P or B frame.

Where pieces run: ``render_local`` renders them in a pool of worker processes sized to
the cores, retrying a failed piece alone, and the audio in its own ffmpeg beside them;
remotely each piece is its own job and the join a job on the host
(``canvascast_cli.server.work``), so pieces never travel to the client. A host that makes
the audio as a job of its own (``make_audio``) next to the pieces passes it to ``join``
as ``audio``.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import multiprocessing
import os
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

from canvascast_cli.errors import CanvasCastError, Interrupted, InvalidInput, JobFailed

# A piece other than the last needs 3 frames: x264 (B-pyramid) starts a piece's decode
# timestamps two frames early only once it has 3 frames; a shorter piece in the middle
# would step the joined stream's DTS backwards.
MIN_PIECE_FRAMES = 3
# --split auto on a remote backend: at least this much video per piece, so a container's
# cold start (~5 s, cost.GUESSES) stays a small share of the piece's work.
AUTO_MIN_SECONDS = 60.0
PIECE_ATTEMPTS = 2  # tries of one piece (first included) in a local split render

Split = int | Literal["auto"]


def parse_split(value: str | int | None) -> Split:
    """``--split``/``[render] split``: ``auto`` or a whole number of pieces >= 1."""
    if value is None:
        return 1
    if isinstance(value, int):
        number = value
    else:
        text = value.strip().lower()
        if text == "auto":
            return "auto"
        if not text.isdigit():
            raise InvalidInput(f"--split: {value!r} is not auto or a number of pieces")
        number = int(text)
    if not 1 <= number <= 1000:
        raise InvalidInput(f"--split: {number} is out of range; allowed: auto, 1 to 1000")
    return number


def auto_pieces(frames: int, fps: float, *, local: bool, max_containers: int,
                cpus: int | None = None) -> int:
    """How many pieces ``--split auto`` makes: the cores here for a local render; on a
    remote backend one piece per ``AUTO_MIN_SECONDS`` of video, at most
    ``max_containers`` (modal.toml's ``[functions.render_video]``)."""
    if local:
        return max(1, cpus if cpus is not None else (os.cpu_count() or 1))
    return max(1, min(max_containers, int(frames / fps // AUTO_MIN_SECONDS)))


def plan(total: int, pieces: int) -> list[tuple[int, int]]:
    """``[start, end)`` ranges covering frames ``0..total``: equal pieces of
    ``ceil(total / pieces)`` frames (at least ``MIN_PIECE_FRAMES``), the last one what
    is left (it may be shorter, down to one frame). Fewer pieces when the video is short."""
    if total < 1 or pieces < 1:
        raise InvalidInput(f"cannot split {total} frames into {pieces} pieces")
    size = max(math.ceil(total / pieces), MIN_PIECE_FRAMES if pieces > 1 else 1)
    return [(start, min(start + size, total)) for start in range(0, total, size)]


def check_plan(ranges: Sequence[tuple[int, int]], total: int) -> None:
    """Ranges that join into the whole video: contiguous from 0 to ``total``, none
    empty, every one but the last at least ``MIN_PIECE_FRAMES`` long."""
    if not ranges:
        raise InvalidInput("a split render needs at least one piece")
    expected = 0
    for n, (start, end) in enumerate(ranges):
        if start != expected or end <= start:
            raise InvalidInput(f"piece {n}: frames {start}:{end} do not follow on from "
                               f"frame {expected}")
        if n < len(ranges) - 1 and end - start < MIN_PIECE_FRAMES:
            raise InvalidInput(f"piece {n}: frames {start}:{end}: a piece before the last "
                               f"needs at least {MIN_PIECE_FRAMES} frames")
        expected = end
    if expected != total:
        raise InvalidInput(f"the pieces end at frame {expected}, the video at {total}")


# ---------------------------------------------------------------------------------------
# Checking pieces


@dataclass(frozen=True)
class PieceInfo:
    """What the join needs to know of a piece (from its container, no decoding)."""

    frames: int
    width: int
    height: int
    extradata: bytes  # the avcC record: the SPS and PPS every piece must share
    time_base: Fraction
    first_is_idr: bool
    dts_increasing: bool
    has_audio: bool


def inspect_piece(path: Path) -> PieceInfo:
    """Read ``path``'s video packets (PyAV); JobFailed when it is not an H.264 MP4."""
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise JobFailed(f"{path.name} has no video stream")
            stream = container.streams.video[0]
            codec = stream.codec_context
            extradata = bytes(codec.extradata or b"")
            dts: list[int | None] = []
            first = b""  # only the first packet's bytes are kept: a piece can be 100 MB
            for packet in container.demux(stream):
                if packet.size:
                    if not dts:
                        first = bytes(packet)
                    dts.append(packet.dts)
            info = PieceInfo(
                frames=len(dts), width=codec.width, height=codec.height,
                extradata=extradata, time_base=Fraction(stream.time_base or 0),
                first_is_idr=bool(dts) and _is_idr(first, extradata),
                dts_increasing=all(a is not None and b is not None and a < b
                                   for a, b in itertools.pairwise(dts)),
                has_audio=bool(container.streams.audio))
    except av.error.FFmpegError as exc:
        raise JobFailed(f"{path.name} is not a readable video ({exc})") from None
    return info


def _is_idr(sample: bytes, extradata: bytes) -> bool:
    """Whether an MP4 (length-prefixed) H.264 sample holds an IDR slice (NAL type 5)."""
    size = (extradata[4] & 3) + 1 if len(extradata) > 4 else 4
    at = 0
    while at + size <= len(sample):
        length = int.from_bytes(sample[at: at + size], "big")
        at += size
        if length <= 0 or at >= len(sample):
            return False
        if sample[at] & 0x1F == 5:
            return True
        at += length
    return False


def check_pieces(paths: Sequence[Path | None], ranges: Sequence[tuple[int, int]]
                 ) -> list[PieceInfo]:
    """Every piece there, whole and joinable; JobFailed listing each problem otherwise."""
    problems: list[str] = []
    infos: list[PieceInfo] = []
    for n, (path, (start, end)) in enumerate(zip(paths, ranges, strict=True)):
        name = f"piece {n} (frames {start}:{end})"
        if path is None or not path.is_file():
            problems.append(f"{name}: missing")
            continue
        try:
            info = inspect_piece(path)
        except JobFailed as exc:
            problems.append(f"{name}: {exc.message}")
            continue
        if info.frames != end - start:
            problems.append(f"{name}: has {info.frames} frames, not {end - start}")
        if not info.first_is_idr:
            problems.append(f"{name}: does not start on an IDR frame")
        if not info.dts_increasing:
            problems.append(f"{name}: its decode timestamps do not increase")
        if info.has_audio:
            problems.append(f"{name}: has audio (pieces are video only)")
        if infos and (info.extradata, info.width, info.height, info.time_base) != (
                infos[0].extradata, infos[0].width, infos[0].height, infos[0].time_base):
            problems.append(f"{name}: its SPS/PPS, size or time base differ from piece 0's "
                            "(rendered with other settings)")
        infos.append(info)
    if problems:
        raise JobFailed(f"cannot join the split render: {len(problems)} problem(s) with "
                        "its pieces", details=problems)
    return infos


# ---------------------------------------------------------------------------------------
# The audio: the whole mix, encoded once


def audio_command(resolved: Any, path: Path, options: Any) -> list[str]:
    """The ffmpeg command that writes the whole video's audio to ``path``: the mix
    (narration, music, ducking: ``build_audio_graph`` over the whole video, as an unsplit
    render builds it) encoded once to AAC (``aac_args``) in an audio-only MP4."""
    from canvascast_cli.engines.render.audio import build_audio_graph
    from canvascast_cli.engines.render.engine import aac_args
    from canvascast_cli.engines.render.ffmpeg import ffmpeg_exe

    out = resolved.output
    audio = build_audio_graph(resolved, 0, 0.0, resolved.timeline.total_frames / out.fps)
    return [ffmpeg_exe(options.ffmpeg), "-hide_banner", "-loglevel", "error", "-nostats",
            "-nostdin", *audio.inputs, "-filter_complex", ";".join(audio.filters),
            "-map", audio.label, "-vn", *aac_args(options), "-f", "mp4", "-y", str(path)]


def make_audio(resolved: Any, path: Path, *, options: Any = None) -> Path:
    """Write the whole video's audio to ``path`` (``audio_command``) and return it: for a
    host that makes it as a job of its own while the pieces render, then hands it to
    ``join(..., audio=path)``. Written atomically; Ctrl-C leaves nothing."""
    from canvascast_cli.atomic import staged
    from canvascast_cli.engines.render.engine import RenderOptions
    from canvascast_cli.engines.render.ffmpeg import FFmpegProcess

    options = options or RenderOptions()
    with staged(path, suffix=".part.m4a") as tmp:
        _finish(FFmpegProcess(audio_command(resolved, tmp, options)))
    return path


def _finish(proc: Any) -> None:
    """Wait for ``proc`` (FFmpegError if it failed); killed if anything interrupts."""
    try:
        proc.finish()
    except KeyboardInterrupt as exc:
        from canvascast_cli.signals import signal_number

        raise Interrupted("render interrupted; nothing was written",
                          signum=signal_number(exc)) from None
    finally:
        proc.kill()


def check_audio(path: Path, seconds: float) -> None:
    """``path`` holds the audio of a ``seconds``-long video: one AAC stream, no video,
    as long as the video to within an AAC frame; JobFailed otherwise."""
    import av

    try:
        with av.open(str(path)) as container:
            streams = container.streams
            if len(streams) != 1 or not streams.audio:
                raise JobFailed(f"{path.name} is not an audio-only file (one audio stream)")
            stream = streams.audio[0]
            codec = stream.codec_context.name
            length = float((stream.duration or 0) * (stream.time_base or 0))
    except av.error.FFmpegError as exc:
        raise JobFailed(f"{path.name} is not readable audio ({exc})") from None
    if codec != "aac":
        raise JobFailed(f"{path.name}: its audio is {codec}, not AAC")
    if abs(length - seconds) > 1024 / 48000 + 1e-3:
        raise JobFailed(f"{path.name}: {length:.3f} s of audio for a {seconds:.3f} s video")


# ---------------------------------------------------------------------------------------
# The join


def join(resolved: Any, pieces: Sequence[Path | None], ranges: Sequence[tuple[int, int]],
         output: Path, *, options: Any = None, overwrite: bool = False,
         began: float | None = None, audio: Path | None = None) -> Any:
    """Check ``pieces`` (frames ``ranges`` of ``resolved``) and ``audio`` (the whole
    video's, from ``make_audio``/``audio_command``), then concatenate the pieces and mux
    the audio in, both by stream copy, writing ``output`` atomically. Without ``audio``
    (the host's join of piece blobs) the same mix is made and encoded in the join's own
    ffmpeg command. Returns the ``RenderResult`` of the whole video (``render_seconds``
    from ``began``)."""
    from canvascast_cli.atomic import check_destination, staged
    from canvascast_cli.engines.render.audio import build_audio_graph
    from canvascast_cli.engines.render.engine import (
        RenderOptions,
        RenderResult,
        _sha256,
        aac_args,
    )
    from canvascast_cli.engines.render.ffmpeg import FFmpegProcess, ffmpeg_exe

    options = options or RenderOptions()
    began = time.perf_counter() if began is None else began
    total = resolved.timeline.total_frames
    check_plan(ranges, total)
    output = check_destination(output, overwrite=overwrite, what="-o")
    infos = check_pieces(pieces, ranges)
    out = resolved.output
    if audio is None:
        graph = build_audio_graph(resolved, 1, 0.0, total / out.fps)
        sound = [*graph.inputs, "-filter_complex", ";".join(graph.filters),
                 "-map", "0:v", "-map", graph.label, "-c:v", "copy", *aac_args(options)]
    else:
        check_audio(audio, total / out.fps)
        sound = ["-i", str(audio.absolute()), "-map", "0:v", "-map", "1:a", "-c", "copy"]
    step = Fraction(out.rate.denominator, out.rate.numerator) / infos[0].time_base
    with staged(output, overwrite=overwrite, suffix=".part.mp4") as tmp, \
            tempfile.TemporaryDirectory(prefix="canvascast-join-") as work:
        folder = Path(work)
        lines = []
        for n, piece in enumerate(pieces):
            assert piece is not None
            link = folder / f"piece-{n:04d}.mp4"
            try:
                os.symlink(piece.absolute(), link)
            except OSError:
                import shutil

                shutil.copyfile(piece, link)
            lines.append(f"file '{link.name}'\n")
        (folder / "pieces.txt").write_text("".join(lines), encoding="utf-8")
        # Each timestamp back on the frame grid (see the module's docstring).
        grid = (["-bsf:v", f"setts=pts=round(PTS/{step.numerator})*{step.numerator}:"
                 f"dts=round(DTS/{step.numerator})*{step.numerator}"]
                if step.denominator == 1 else [])
        _finish(FFmpegProcess([
            ffmpeg_exe(options.ffmpeg), "-hide_banner", "-loglevel", "error", "-nostats",
            "-nostdin", "-f", "concat", "-safe", "0", "-i", "pieces.txt", *sound, *grid,
            "-movflags", "+faststart", "-f", "mp4", "-y", str(tmp),
        ], cwd=folder))
        joined = inspect_piece(tmp)
        if joined.frames != total or not joined.dts_increasing:
            raise JobFailed(f"the joined video has {joined.frames} frames (expected {total})"
                            + ("" if joined.dts_increasing else
                               " and decode timestamps that do not increase"))
        digest, size = _sha256(tmp)
    elapsed = time.perf_counter() - began
    plan_fonts = getattr(resolved, "fonts", None)
    warnings: tuple[str, ...] = ()
    missing: tuple[Any, ...] = ()
    if plan_fonts is not None:
        from canvascast_cli.engines.render.engine import MissingChar
        from canvascast_cli.engines.render.fonts.messages import missing_warning

        warnings = plan_fonts.warnings + ((missing_warning(plan_fonts),)
                                          if plan_fonts.missing else ())
        missing = tuple(MissingChar.of(g) for g in plan_fonts.missing)
    return RenderResult(
        output=str(output), duration=round(total / out.fps, 6), frames=total,
        width=out.width, height=out.height, fps=out.fps, size_bytes=size, sha256=digest,
        render_seconds=elapsed,
        speed=round(total / out.fps / elapsed, 3) if elapsed > 0 else 0.0,
        missing_glyphs=missing, warnings=warnings)


# ---------------------------------------------------------------------------------------
# Local: pieces in a pool of worker processes, then the join here

PieceFn = Callable[[Any, Path, Any, int], Any]  # (resolved, path, options, index) -> result
Progress = Callable[[float, float], None]

_QUEUE: Any = None  # the worker's progress queue (set by _init_worker)


def _init_worker(queue: Any) -> None:
    global _QUEUE
    _QUEUE = queue


def render_piece(resolved: Any, path: Path, options: Any, index: int) -> Any:
    """Render one piece (``options.frame_range``, video only) to ``path``; progress goes
    to the pool's queue as (index, frames done)."""
    from canvascast_cli.engines.render.engine import render

    def report(done: int, _total: int) -> None:
        if _QUEUE is not None:
            _QUEUE.put((index, done))

    return render(resolved, path, options=options, overwrite=True, on_progress=report)


def _run_piece(piece: PieceFn, resolved: Any, path: Path, options: Any, index: int) -> Any:
    if _QUEUE is not None:
        _QUEUE.put((index, 0))  # a retried piece starts again from nothing
    return piece(resolved, path, options, index)


def render_local(job: Any, ranges: Sequence[tuple[int, int]], *,
                 workers: int | None = None, progress: Progress | None = None,
                 piece: PieceFn = render_piece, attempts: int = PIECE_ATTEMPTS,
                 note: Callable[[str], None] = lambda _m: None) -> Any:
    """Render ``job`` (a ``RenderJob`` of the whole video) in pieces ``ranges`` on a pool
    of ``workers`` processes (default: the cores) while the audio is made beside them
    (``audio_command``, its own ffmpeg), then join them into ``job.output``. A piece
    that fails is tried again alone (up to ``attempts`` tries); bad input and
    interruptions are not retried. ``progress`` counts frames across all pieces."""
    from canvascast_cli.engines.render.inputs import resolve_timeline
    from canvascast_cli.engines.render.job import check_job, refuse_overwriting_an_input

    output = check_job(job)
    if job.options.frame_range is not None:
        raise InvalidInput("--split renders the whole video; it cannot be combined with "
                           "--frames")
    total = job.timeline.total_frames
    check_plan(ranges, total)
    began = time.perf_counter()
    resolved = resolve_timeline(job.timeline, job.base_dir, limits=job.limits,
                                allow_missing_glyphs=job.allow_missing_glyphs)
    refuse_overwriting_an_input(output, resolved)
    workers = max(1, min(len(ranges), workers or os.cpu_count() or 1))
    from canvascast_cli.engines.render.ffmpeg import FFmpegProcess

    with tempfile.TemporaryDirectory(prefix="canvascast-split-") as work:
        paths = [Path(work) / f"piece-{n:04d}.mp4" for n in range(len(ranges))]
        audio = Path(work) / "audio.m4a"
        # The audio, once, in its own ffmpeg while the pool renders the pieces: the join
        # is then only stream copies.
        making = FFmpegProcess(audio_command(resolved, audio, job.options))
        try:
            _pieces(resolved, job.options, ranges, paths, workers, progress, piece,
                    attempts, note)
            _finish(making)
        finally:
            making.kill()  # at once when a piece failed or Ctrl-C
        return join(resolved, paths, ranges, output, options=job.options,
                    overwrite=job.overwrite, began=began, audio=audio)


def _pieces(resolved: Any, options: Any, ranges: Sequence[tuple[int, int]],
            paths: Sequence[Path], workers: int, progress: Progress | None, piece: PieceFn,
            attempts: int, note: Callable[[str], None]) -> None:
    context = multiprocessing.get_context("spawn")  # never fork a process with threads
    queue = context.SimpleQueue()
    total = sum(end - start for start, end in ranges)
    done = [0] * len(ranges)

    def drain() -> None:
        while True:
            item = queue.get()
            if item is None:
                return
            index, frames = item
            done[index] = frames
            if progress is not None:
                progress(float(sum(done)), float(total))

    reader = threading.Thread(target=drain, name="split-progress", daemon=True)
    reader.start()
    tries = [0] * len(ranges)
    left = set(range(len(ranges)))
    try:
        while left:
            with ProcessPoolExecutor(max_workers=min(workers, len(left)), mp_context=context,
                                     initializer=_init_worker, initargs=(queue,)) as pool:
                running: dict[Future[Any], int] = {}

                def submit(n: int, pool: ProcessPoolExecutor = pool,
                           running: dict[Future[Any], int] = running) -> None:
                    tries[n] += 1
                    options_n = replace(options, frame_range=ranges[n], video_only=True)
                    running[pool.submit(_run_piece, piece, resolved, paths[n], options_n,
                                        n)] = n

                for n in sorted(left):
                    submit(n)
                broken = False
                while running and not broken:
                    finished, _ = wait(running, return_when=FIRST_COMPLETED)
                    for future in finished:
                        n = running.pop(future)
                        try:
                            future.result()
                        except BrokenProcessPool:
                            broken = True  # every piece still running is lost: new pool
                            continue
                        except (InvalidInput, Interrupted):
                            raise
                        except (CanvasCastError, OSError) as exc:
                            if tries[n] >= attempts:
                                raise
                            message = getattr(exc, "message", str(exc))
                            note(f"piece {n} (frames {ranges[n][0]}:{ranges[n][1]}) failed "
                                 f"({message}); trying it again")
                            submit(n)
                            continue
                        left.discard(n)
                if broken:
                    for n in left:
                        if tries[n] >= attempts:
                            raise JobFailed(f"piece {n} (frames {ranges[n][0]}:"
                                            f"{ranges[n][1]}): its worker process died")
                    note("a worker process died; trying its pieces again")
    finally:
        queue.put(None)
        reader.join(timeout=5)
        with contextlib.suppress(Exception):
            queue.close()
