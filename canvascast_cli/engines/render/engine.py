"""Timeline -> H.264/AAC MP4, with one ffmpeg process per video.

Python makes the frames (float-precision Ken Burns warp of each still, crossfades) and
pipes them raw (I420) into ffmpeg, which burns in the captions with libass, mixes the
audio and encodes with x264. A writer thread feeds ffmpeg while the next frame is made.

The same function renders any frame range ``[start, end)`` of a timeline, so a long
render can later be split across containers and joined by stream copy.
"""

from __future__ import annotations

import hashlib
import os
import queue
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from canvascast_cli.engines.render.audio import build_audio_graph
from canvascast_cli.engines.render.captions import build_ass
from canvascast_cli.engines.render.compose import Compositor
from canvascast_cli.engines.render.ffmpeg import FFmpegProcess, ffmpeg_exe
from canvascast_cli.engines.render.frames import FrameBuffer
from canvascast_cli.errors import FFmpegError, Interrupted, InvalidInput
from canvascast_cli.timeline import ResolvedTimeline

PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower",
           "veryslow")
BUNDLED_FONT_DIR = Path(__file__).resolve().parents[2] / "assets" / "fonts"
_PIPE_DEPTH = 4  # frames in flight between the compositor and ffmpeg


@dataclass(frozen=True)
class RenderOptions:
    preset: str = "veryfast"
    crf: int = 20
    audio_bitrate: str = "192k"
    ffmpeg: str | None = None
    frame_range: tuple[int, int] | None = None  # [start, end) in frames; None = all


@dataclass(frozen=True)
class RenderResult:
    output: str
    duration: float
    frames: int
    width: int
    height: int
    fps: float
    size_bytes: int
    sha256: str
    render_seconds: float
    speed: float  # seconds of video per second of rendering ("x realtime")

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


ProgressCallback = Callable[[int, int], None]  # (frames encoded, total frames)


def render(
    resolved: ResolvedTimeline,
    output: Path,
    *,
    options: RenderOptions = RenderOptions(),
    overwrite: bool = False,
    on_progress: ProgressCallback | None = None,
) -> RenderResult:
    """Render to ``output`` atomically: a temporary file beside it, renamed when complete.

    A failed or interrupted render leaves nothing at ``output``; an existing ``output`` is
    only replaced when ``overwrite`` is true.
    """
    if options.preset not in PRESETS:
        raise InvalidInput(f"--preset: {options.preset!r} is not an x264 preset; "
                           f"allowed: {', '.join(PRESETS)}")
    if not 0 <= options.crf <= 51:
        raise InvalidInput(f"--crf: {options.crf} is out of range; allowed: 0 to 51")
    output = output.expanduser().absolute()
    if output.exists() and not overwrite:
        raise InvalidInput(f"{output} already exists; pass --overwrite to replace it")
    if output.exists() and output.is_dir():
        raise InvalidInput(f"{output} is a directory; give a file name ending in .mp4")
    if not output.parent.is_dir():
        raise InvalidInput(f"{output.parent}: output folder does not exist")

    total = resolved.timeline.total_frames
    start, end = options.frame_range or (0, total)
    if not 0 <= start < end <= total:
        raise InvalidInput(f"frame range {start}:{end} is outside the video's 0:{total} frames")

    fd, tmp_name = tempfile.mkstemp(dir=output.parent, prefix=f".{output.stem}.",
                                    suffix=".part.mp4")
    os.close(fd)
    tmp = Path(tmp_name)
    began = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory(prefix="canvascast-render-") as work:
            _encode(resolved, tmp, Path(work), options, start, end, on_progress)
        elapsed = time.perf_counter() - began
        digest, size = _sha256(tmp)
        if overwrite:
            os.replace(tmp, output)
        else:
            # link() refuses to clobber a file that appeared while we rendered.
            try:
                os.link(tmp, output)
            except FileExistsError:
                raise InvalidInput(
                    f"{output} appeared during the render; pass --overwrite to replace it"
                ) from None
            except OSError:
                os.replace(tmp, output)  # filesystems without hard links
            else:
                tmp.unlink()
    finally:
        if tmp.exists():
            tmp.unlink()

    fps = resolved.output.fps
    frames = end - start
    return RenderResult(
        output=str(output),
        duration=round(frames / fps, 6),
        frames=frames,
        width=resolved.output.width,
        height=resolved.output.height,
        fps=fps,
        size_bytes=size,
        sha256=digest,
        render_seconds=round(elapsed, 3),
        speed=round(frames / fps / elapsed, 3) if elapsed > 0 else 0.0,
    )


def ffmpeg_command(
    resolved: ResolvedTimeline,
    destination: Path,
    options: RenderOptions,
    start: int,
    end: int,
    *,
    captions_file: str | None,
    fonts_dir: str | None,
) -> list[str]:
    """The whole ffmpeg invocation for frames ``[start, end)`` read raw from stdin."""
    out = resolved.output
    fps = out.fps
    rate = out.rate
    video_chain = ("[0:v]setparams=color_primaries=bt709:color_trc=bt709:colorspace=bt709:"
                   "range=tv")
    if captions_file:
        video_chain += f",subtitles=filename={captions_file}"
        if fonts_dir:
            video_chain += f":fontsdir={fonts_dir}"
    audio = build_audio_graph(resolved, 1, start / fps, end / fps)
    graph = ";".join([video_chain + "[vout]", *audio.filters])
    return [
        ffmpeg_exe(options.ffmpeg), "-hide_banner", "-loglevel", "error", "-nostats",
        "-progress", "pipe:1",
        "-f", "rawvideo", "-pix_fmt", "yuv420p", "-video_size", f"{out.width}x{out.height}",
        "-framerate", f"{rate.numerator}/{rate.denominator}", "-i", "pipe:0",
        *audio.inputs,
        "-filter_complex", graph,
        "-map", "[vout]", "-map", audio.label,
        "-c:v", "libx264", "-preset", options.preset, "-crf", str(options.crf),
        "-pix_fmt", "yuv420p", "-colorspace", "bt709", "-color_primaries", "bt709",
        "-color_trc", "bt709", "-color_range", "tv",
        "-c:a", "aac", "-b:a", options.audio_bitrate, "-ar", "48000", "-ac", "2",
        "-frames:v", str(end - start),
        "-movflags", "+faststart",
        "-f", "mp4", "-y", str(destination),
    ]


def _encode(
    resolved: ResolvedTimeline,
    destination: Path,
    work: Path,
    options: RenderOptions,
    start: int,
    end: int,
    on_progress: ProgressCallback | None,
) -> None:
    out = resolved.output
    captions_file = fonts_dir = None
    if resolved.words:
        fonts = work / "fonts"
        fonts.mkdir()
        family = _install_font(resolved, fonts)
        ass = build_ass(resolved.words, resolved.timeline.captions.style,  # type: ignore[union-attr]
                        width=out.width, height=out.height, font_family=family,
                        time_offset=start / out.fps)
        (work / "captions.ass").write_text(ass, encoding="utf-8")
        captions_file, fonts_dir = "captions.ass", "fonts"

    args = ffmpeg_command(resolved, destination, options, start, end,
                          captions_file=captions_file, fonts_dir=fonts_dir)
    frames_total = end - start

    def progress(block: dict[str, str]) -> None:
        if on_progress is not None and block.get("frame", "").isdigit():
            on_progress(min(int(block["frame"]), frames_total), frames_total)

    compositor = Compositor(resolved.timeline, resolved.images)
    proc = FFmpegProcess(args, cwd=work, on_progress=progress)
    pool: queue.Queue[FrameBuffer] = queue.Queue()
    for _ in range(_PIPE_DEPTH):
        pool.put(FrameBuffer(out.width, out.height))
    pending: queue.Queue[tuple[np.ndarray, FrameBuffer] | None] = queue.Queue(_PIPE_DEPTH)
    broken = threading.Event()

    def writer() -> None:
        # Runs beside the compositor: while ffmpeg drains one frame, the next is made.
        stdin = proc.stdin
        while True:
            item = pending.get()
            if item is None:
                return
            data, buf = item
            if not broken.is_set():
                try:
                    stdin.write(memoryview(data))
                except (BrokenPipeError, OSError):
                    broken.set()  # ffmpeg died: finish() reports why
            pool.put(buf)

    thread = threading.Thread(target=writer, name="ffmpeg-writer", daemon=True)
    thread.start()
    finished = False
    try:
        for n in range(start, end):
            if broken.is_set():
                break
            buf = pool.get()
            pending.put((compositor.frame(n, buf), buf))
        pending.put(None)
        thread.join()
        proc.finish()
        finished = True
        if on_progress is not None:
            on_progress(frames_total, frames_total)
    except KeyboardInterrupt:
        raise Interrupted("render interrupted; nothing was written") from None
    finally:
        if not finished:
            proc.kill()
            pending.put(None)
        compositor.close()
    if broken.is_set():  # pragma: no cover - finish() raises first when ffmpeg failed
        raise proc.error()


def _install_font(resolved: ResolvedTimeline, fonts: Path) -> str:
    """Put the caption font where libass looks (``fontsdir``); return its family name."""
    style = resolved.timeline.captions.style  # type: ignore[union-attr]
    font = style.font
    if font.lower().endswith((".ttf", ".otf", ".ttc")):
        path = Path(font).expanduser()
        if not path.is_absolute():
            path = resolved.base_dir / path
        if not path.is_file():
            raise InvalidInput(f"captions.style.font: font file not found: {path}")
        from PIL import ImageFont

        try:
            family = ImageFont.truetype(str(path), 12).getname()[0]
        except OSError as exc:
            raise InvalidInput(f"captions.style.font: {path} is not a font ({exc})") from None
        shutil.copy(path, fonts / path.name)
    else:
        family = font
        for bundled in BUNDLED_FONT_DIR.glob("*.ttf"):
            shutil.copy(bundled, fonts / bundled.name)
    if "," in family or any(ord(c) < 32 for c in family):
        raise InvalidInput(f"captions.style.font: {family!r} cannot contain commas or "
                           "control characters")
    return family


def _sha256(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


__all__ = ["PRESETS", "FFmpegError", "RenderOptions", "RenderResult", "ffmpeg_command", "render"]
