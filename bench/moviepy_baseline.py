"""MoviePy 2.2 baseline: canvascast's render timeline written the way a MoviePy user would.

The benchmark compares canvascast's renderer against this ("at least 10x faster than
MoviePy"), so it renders the *same timeline* with idiomatic MoviePy and no handicaps:

* Scenes: one ``ImageClip`` per scene, cover-fitted to the output once (a constant
  ``resized`` on an ``ImageClip`` is applied once, not per frame), then Ken Burns motion
  with the usual recipe: ``.resized(lambda t: zoom)`` + ``.with_position(lambda t: ...)``
  inside a ``CompositeVideoClip`` of the output size. The geometry is canvascast's own
  (``motion.view_at``: zooms interpolated geometrically about the focus point, pans over
  the free margin at ``1 + amount``, easing), evaluated at the same progress
  ``frame / (frames - 1)``. Pans have a constant magnification, so they are resized once
  and only their position moves. MoviePy truncates sizes and positions to whole pixels;
  that is MoviePy's nature and is kept (no sub-pixel tricks), so its motion steps.
* Crossfades: scenes overlap exactly as in canvascast (scene ``i`` starts at the sum of
  the previous scenes' frames minus the crossfade frames) and the incoming scene gets
  ``vfx.CrossFadeIn``. The fade is applied *before* a zoom's time-varying resize so that
  MoviePy resizes the fade mask with the picture (``Resize`` follows the mask; a mask made
  after the resize keeps the size of frame 0 and would leave a transparent strip along
  the right and bottom edges of a zoom-in). The blend ramps ``t / duration`` (MoviePy)
  rather than canvascast's ``(j + 1) / (X + 1)``.
* Audio: narration at its start offset and volume; music looped with ``afx.AudioLoop``
  over the whole video, at its volume, with ``afx.AudioFadeIn``/``afx.AudioFadeOut``,
  then ducked under the narration (when ``music.ducking``); mixed by
  ``CompositeAudioClip`` (a plain sum, like canvascast's ``amix normalize=0``), at 48 kHz
  like canvascast. MoviePy has no sidechain compressor, so the ducking is the usual
  MoviePy recipe, a time-varying gain applied with ``music.transform``: the narration's
  RMS envelope (10 ms windows, computed once with numpy) marks speech where it exceeds
  canvascast's compressor threshold (0.015, after the narration's volume); the music dips
  by a fixed 12 dB there, with linear-in-dB ramps of 20 ms (attack) and 350 ms (release)
  like the compressor's. The gain curve is tabulated once on a 1 ms grid and read per
  audio chunk with ``np.interp`` (vectorised). Unlike the compressor, the depth does not
  follow the narration's loudness: ffmpeg's ``sidechaincompress`` (ratio 8) takes off
  more under loud speech.
* Captions: word-highlighted like canvascast's, from the same display segments
  (``captions.segments``: line, lit word, start, end; non-overlapping). MoviePy's
  ``TextClip`` has a single colour, so each line is laid out by hand with Pillow's font
  metrics (``ImageFont.getlength`` of each word and of a space), centred, wrapped into
  rows if wider than the frame less canvascast's 5% side margins, bottom-aligned at
  canvascast's margin (7% of the height; or top/centre per the style): one ``TextClip``
  per word in the base colour, made once per line and shown for the line's lifetime,
  plus one ``TextClip`` of the lit word in the highlight colour, made once per lit
  segment and shown over it at the same position for the segment's duration. Black
  stroke (the style's outline colour), DejaVu Sans Bold at 6% of the height (or the
  style's size) as Pillow's em size: libass sizes a font by ascent + descent, so
  canvascast's text is about 14% smaller than the baseline's (the baseline draws a bit
  *more* text area). The caption style's ``font`` and ``bold`` are not followed (always
  DejaVu Sans Bold).
* Encoding: ``write_videofile`` with libx264, the given preset and CRF, yuv420p, AAC,
  2 threads, through MoviePy's own ffmpeg (imageio-ffmpeg's binary). MoviePy 2.2 appends
  its own ``-pix_fmt yuva420p`` for libx264, which ffmpeg overrides to yuv420p.

``wall_seconds`` in the result times ``write_videofile`` alone (it renders every frame and
encodes audio and video); building the clips (decoding stills, cover-fitting, making
caption images, the narration's envelope and the ducking curve) is excluded and reported
separately as ``build_seconds``.

Usage::

    python bench/moviepy_baseline.py examples/demo/timeline.json out.mp4 \\
        [--width W --height H --seconds S]
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from moviepy import (
    AudioFileClip,
    CompositeAudioClip,
    CompositeVideoClip,
    ImageClip,
    TextClip,
    afx,
    vfx,
)
from PIL import ImageFont

import canvascast_cli
from canvascast_cli.engines.render.captions import Segment, segments
from canvascast_cli.engines.render.inputs import resolve_timeline
from canvascast_cli.engines.render.motion import View, view_at
from canvascast_cli.timeline import (
    Motion,
    ResolvedTimeline,
    Timeline,
    Word,
    crossfade_frames,
    load_timeline_file,
    parse_timeline,
    scene_frames,
)

FONT = Path(canvascast_cli.__file__).parent / "assets" / "fonts" / "DejaVuSans-Bold.ttf"
AUDIO_RATE = 48000  # canvascast mixes at 48 kHz
# Music ducking, after canvascast's sidechain compressor (threshold 0.015, ratio 8,
# attack 20 ms, release 350 ms), which takes about 12 dB off the music under speech.
DUCK_DB = -12.0
DUCK_THRESHOLD = 0.015  # narration RMS (after its volume) that counts as speech
DUCK_BLOCK = 0.010  # seconds per RMS window of the narration envelope
DUCK_ATTACK = 0.020
DUCK_RELEASE = 0.350


# ---------------------------------------------------------------------------------------
# Timeline loading


def load(timeline_path: Path, width: int | None = None, height: int | None = None
         ) -> ResolvedTimeline:
    """Parse and resolve ``timeline_path``, with the output size optionally overridden."""
    timeline = load_timeline_file(timeline_path)
    if width is not None or height is not None:
        data = timeline.model_dump()
        data["output"]["width"] = width or timeline.output.width
        data["output"]["height"] = height or timeline.output.height
        timeline = parse_timeline(data, source=str(timeline_path))
    return resolve_timeline(timeline, timeline_path.parent)


def _hex_rgb(color: str) -> tuple[int, int, int]:
    return int(color[1:3], 16), int(color[3:5], 16), int(color[5:7], 16)


def _cover_size(img_w: int, img_h: int, out_w: int, out_h: int) -> tuple[int, int]:
    """The cover-fitted size canvascast prepares a still at (``frames.prepare_image``)."""
    scale = max(out_w / img_w, out_h / img_h)

    def even(value: float) -> int:
        return max(2, 2 * round(value / 2))

    return max(out_w, even(img_w * scale)), max(out_h, even(img_h * scale))


def _duration_for(frames: int, fps: float) -> float:
    """Seconds for which MoviePy writes exactly ``frames`` frames.

    MoviePy writes ``int(duration * fps)`` frames; ``frames / fps`` can land a hair below
    a whole number, so nudge it up by ulps until the count is exact.
    """
    seconds = frames / fps
    while int(seconds * fps) < frames:
        seconds = math.nextafter(seconds, math.inf)
    return seconds


# ---------------------------------------------------------------------------------------
# Clips


def scene_clip(image: Path, motion: Motion, frames: int, fps: float, out_w: int, out_h: int,
               *, fade_in: float = 0.0) -> Any:
    """One scene's still with Ken Burns motion, positioned for an ``out_w`` x ``out_h``
    composite; starts at clip time 0 and lasts ``frames`` frames.

    ``fade_in`` (seconds) adds ``vfx.CrossFadeIn``; the clip must then be composited.
    """
    still = ImageClip(str(image))
    src_w, src_h = still.size
    img_w, img_h = _cover_size(src_w, src_h, out_w, out_h)
    clip = still.resized((img_w, img_h)).with_duration(frames / fps)  # once: ImageClip

    last = (frames - 1) / fps  # clip time of the scene's last frame: progress 1

    def view(t: float) -> View:
        p = min(1.0, max(0.0, t / last)) if frames > 1 else 0.0
        return view_at(motion, p, img_w, img_h, out_w, out_h)

    def position(t: float) -> tuple[float, float]:
        # Prepared-image point x lands on output pixel (x - left) * zoom.
        v = view(t)
        return -v.left * v.zoom, -v.top * v.zoom

    zooms = motion.type in ("zoom_in", "zoom_out")
    if motion.type != "none" and not zooms:
        clip = clip.resized(1.0 + motion.amount)  # pans: constant magnification, once
    if fade_in > 0:
        clip = clip.with_effects([vfx.CrossFadeIn(fade_in)])
    if zooms:
        clip = clip.resized(lambda t: view(t).zoom)
    return clip.with_position(position)


def _caption_lines(segs: Sequence[Segment]) -> list[list[Segment]]:
    """Group ``segments`` into the runs during which one caption line stays on screen."""
    lines: list[list[Segment]] = []
    for seg in segs:
        if lines and lines[-1][-1].words == seg.words and lines[-1][-1].end == seg.start:
            lines[-1].append(seg)
        else:
            lines.append([seg])
    return lines


def caption_clips(words: Sequence[Word], timeline: Timeline) -> list[Any]:
    """Word-highlighted captions: per caption line, one white ``TextClip`` per word laid out
    left to right (Pillow's font metrics), shown for the line's lifetime, plus one
    highlight-coloured ``TextClip`` of the lit word on top of it for each lit segment."""
    captions = timeline.captions
    if captions is None:
        return []
    style = captions.style
    out_w, out_h = timeline.output.width, timeline.output.height
    size = style.size or max(8, round(out_h * 0.06))
    stroke = round(style.outline if style.outline is not None else max(1.0, size / 12))
    margin = style.margin if style.margin is not None else round(out_h * 0.07)
    max_width = out_w - 2 * round(out_w * 0.05)  # canvascast's side margins (5% each)
    font = ImageFont.truetype(str(FONT), size)
    ascent, descent = font.getmetrics()
    space = font.getlength(" ")
    # MoviePy 2.x sizes a TextClip from the glyph box without the stroke and draws the
    # text a little low, so descenders and the stroke get cut off at the bottom
    # (github.com/Zulko/moviepy/issues/2268): the documented workaround is a margin.
    pad = (stroke, stroke, stroke, stroke + size // 3)  # left, top, right, bottom
    # A label TextClip puts its pen origin (left end of the baseline) at this offset.
    origin_x, origin_y = pad[0] + stroke, pad[1] + stroke + ascent

    def word_clip(text: str, color: str) -> Any:
        return TextClip(font=str(FONT), text=text, font_size=size, color=color,
                        stroke_color=style.outline_color, stroke_width=stroke,
                        method="label", margin=pad)

    clips = []
    for line in _caption_lines(segments(words, style.max_words_per_line)):
        texts = line[0].words
        widths = [font.getlength(text) for text in texts]
        # Rows: the words that fit in the frame's width (libass wraps a too-long line).
        rows: list[list[int]] = [[]]
        for i, width in enumerate(widths):
            row = rows[-1]
            if row and sum(widths[j] for j in row) + space * len(row) + width > max_width:
                rows.append([])
            rows[-1].append(i)
        # Baselines: the last row's descent (plus stroke) sits at canvascast's margin.
        line_h = ascent + descent
        block_h = len(rows) * line_h + 2 * stroke
        top = {"bottom": out_h - margin - block_h, "top": margin,
               "center": (out_h - block_h) / 2}[style.position]
        positions: dict[int, tuple[int, int]] = {}
        for r, row in enumerate(rows):
            baseline = top + stroke + ascent + r * line_h
            row_w = sum(widths[j] for j in row) + space * (len(row) - 1)
            x = (out_w - row_w) / 2  # centred
            for j in row:
                positions[j] = (round(x - origin_x), round(baseline - origin_y))
                x += widths[j] + space
        start, end = line[0].start, line[-1].end
        for i, text in enumerate(texts):  # the line in the base colour, once
            clips.append(word_clip(text, style.color).with_start(start).with_end(end)
                         .with_position(positions[i]))
        for seg in line:  # the lit word on top, in the highlight colour
            if seg.lit is not None:
                clips.append(word_clip(texts[seg.lit], style.highlight_color)
                             .with_start(seg.start).with_end(seg.end)
                             .with_position(positions[seg.lit]))
    return clips


def speech_spans(narration: Any, volume: float, start: float) -> np.ndarray:
    """``(n, 2)`` array of the [start, end) video seconds where the narration (at its
    ``volume``, starting at ``start``) is louder than the ducking threshold, from its RMS
    envelope in ``DUCK_BLOCK`` windows, computed once with numpy."""
    block = round(DUCK_BLOCK * AUDIO_RATE)
    energy = []  # mean square per block, chunk by chunk
    rest = np.zeros(0)
    # 1 s chunks: a chunk larger than the reader's buffer (200000 samples) comes back wrong.
    for chunk in narration.iter_chunks(chunksize=AUDIO_RATE, fps=AUDIO_RATE):
        mono = np.asarray(chunk, dtype=np.float64).reshape(len(chunk), -1).mean(axis=1)
        mono = np.concatenate((rest, mono))
        whole = len(mono) - len(mono) % block
        energy.append((mono[:whole].reshape(-1, block) ** 2).mean(axis=1))
        rest = mono[whole:]
    if len(rest):
        energy.append([(rest**2).mean()])
    loud = np.sqrt(np.concatenate(energy)) * volume > DUCK_THRESHOLD
    edges = np.flatnonzero(np.diff(np.concatenate(([0], loud.astype(np.int8), [0]))))
    return edges.reshape(-1, 2) * (block / AUDIO_RATE) + start


def ducking_gain(spans: np.ndarray, total: float) -> Any:
    """A vectorised ``gain(t)`` that dips to ``DUCK_DB`` over each speech span: linear
    ramps in dB, ``DUCK_ATTACK`` down from the span's start, ``DUCK_RELEASE`` back up from
    its end (a span shorter than the attack dips less), like a compressor's envelope.

    The curve is tabulated once on a 1 ms grid and read with ``np.interp``."""
    step = 0.001
    grid = np.arange(0.0, total + 2 * step, step)
    depth = np.zeros_like(grid)  # 0: full music, 1: ducked by DUCK_DB
    for a, b in spans:  # one vectorised trapezoid per span
        lo, hi = np.searchsorted(grid, [a, b + DUCK_RELEASE])
        t = grid[lo:hi]
        ramp = np.minimum((t - a) / DUCK_ATTACK, 1.0 - (t - b) / DUCK_RELEASE)
        np.maximum(depth[lo:hi], np.clip(ramp, 0.0, 1.0), out=depth[lo:hi])
    curve = 10.0 ** (DUCK_DB * depth / 20.0)

    def gain(t: Any) -> Any:
        return np.interp(t, grid, curve)

    return gain


def duck(music: Any, gain: Any) -> Any:
    """``music`` multiplied by the time-varying ``gain(t)`` (``t`` scalar or array)."""
    def frame(get_frame: Any, t: Any) -> Any:
        g = gain(t)
        return get_frame(t) * (g[:, None] if np.ndim(g) else g)

    return music.transform(frame)


def audio_clip(resolved: ResolvedTimeline) -> Any | None:
    """Narration + looped, faded music ducked under the narration, for the whole video."""
    timeline = resolved.timeline
    total = timeline.duration
    tracks = []
    narration = None
    narr_spec = timeline.narration
    if narr_spec is not None and resolved.narration is not None:
        narration = AudioFileClip(str(resolved.narration), fps=AUDIO_RATE)
        tracks.append(narration.with_effects([afx.MultiplyVolume(narr_spec.volume)])
                      .with_start(narr_spec.start))
    music_spec = timeline.music
    if music_spec is not None and resolved.music is not None:
        music = AudioFileClip(str(resolved.music), fps=AUDIO_RATE)
        if music_spec.loop:
            music = music.with_effects([afx.AudioLoop(duration=total)])
        elif music.duration > total:
            music = music.with_duration(total)
        effects: list[Any] = [afx.MultiplyVolume(music_spec.volume)]
        if music_spec.fade_in > 0:
            effects.append(afx.AudioFadeIn(min(music_spec.fade_in, music.duration)))
        if music_spec.fade_out > 0:
            effects.append(afx.AudioFadeOut(min(music_spec.fade_out, music.duration)))
        music = music.with_effects(effects)
        if music_spec.ducking and narration is not None and narr_spec is not None:
            spans = speech_spans(narration, narr_spec.volume, narr_spec.start)
            music = duck(music, ducking_gain(spans, total))
        tracks.append(music)
    if not tracks:
        return None
    return CompositeAudioClip(tracks).with_duration(total)


def build_video(resolved: ResolvedTimeline) -> Any:
    """The whole timeline as one ``CompositeVideoClip`` (with audio), output-sized."""
    timeline = resolved.timeline
    out, fps = timeline.output, timeline.output.fps
    fades = [0, *crossfade_frames(timeline)]
    layers, start = [], 0
    for i, (scene, image) in enumerate(zip(timeline.scenes, resolved.images, strict=True)):
        start -= fades[i]
        frames = scene_frames(scene.duration, fps)
        clip = scene_clip(image, scene.motion, frames, fps, out.width, out.height,
                          fade_in=fades[i] / fps)
        layers.append(clip.with_start(start / fps))
        start += frames
    layers += caption_clips(resolved.words, timeline)
    # An opaque background colour: the composite needs no mask of its own (faster).
    video = CompositeVideoClip(layers, size=(out.width, out.height),
                               bg_color=_hex_rgb(out.background))
    audio = audio_clip(resolved)
    if audio is not None:
        video = video.with_audio(audio)
    return video.with_duration(_duration_for(timeline.total_frames, fps))


# ---------------------------------------------------------------------------------------
# Entry points


def render_moviepy(timeline_path: Path, output: Path, *, width: int | None = None,
                   height: int | None = None, seconds: float | None = None,
                   preset: str = "veryfast", crf: int = 20) -> dict[str, Any]:
    """Render ``timeline_path`` (optionally only its first ``seconds``) to ``output``.

    Returns ``seconds_rendered`` (video seconds), ``frames``, ``wall_seconds`` (the
    ``write_videofile`` call only: every frame rendered plus audio and video encoding;
    clip building excluded), ``fps`` (frames / wall_seconds) and ``build_seconds``.
    """
    timeline_path, output = Path(timeline_path), Path(output)
    t0 = time.perf_counter()
    resolved = load(timeline_path, width, height)
    timeline = resolved.timeline
    fps = timeline.output.fps
    frames = timeline.total_frames
    if seconds is not None:
        frames = max(1, min(frames, scene_frames(seconds, fps)))
    video = build_video(resolved)
    if frames < timeline.total_frames:
        video = video.with_duration(_duration_for(frames, fps))  # audio follows
    build = time.perf_counter() - t0

    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="moviepy-") as tmp:
        t1 = time.perf_counter()
        video.write_videofile(
            str(output),
            fps=fps,
            codec="libx264",
            preset=preset,
            ffmpeg_params=["-crf", str(crf), "-pix_fmt", "yuv420p"],
            audio_codec="aac",
            audio_fps=AUDIO_RATE,
            temp_audiofile_path=tmp,
            threads=2,
            logger=None,
        )
        wall = time.perf_counter() - t1
    video.close()
    return {
        "seconds_rendered": frames / fps,
        "frames": frames,
        "wall_seconds": wall,
        "fps": frames / wall,
        "build_seconds": build,
    }


def pan_frames_moviepy(timeline_path: Path, scene_index: int, n_frames: int, width: int,
                       height: int) -> list[np.ndarray]:
    """The first ``n_frames`` RGB frames (HxWx3 uint8) of one scene's motion alone: the
    same clip ``render_moviepy`` composites, without crossfade or captions."""
    resolved = load(Path(timeline_path), width, height)
    timeline = resolved.timeline
    fps = timeline.output.fps
    scene = timeline.scenes[scene_index]
    frames = scene_frames(scene.duration, fps)
    clip = scene_clip(resolved.images[scene_index], scene.motion, frames, fps, width, height)
    video = CompositeVideoClip([clip], size=(width, height),
                               bg_color=_hex_rgb(timeline.output.background))
    video = video.with_duration(frames / fps)
    return [video.get_frame(k / fps).astype(np.uint8) for k in range(min(n_frames, frames))]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("timeline", type=Path)
    parser.add_argument("output", type=Path)
    parser.add_argument("--width", type=int)
    parser.add_argument("--height", type=int)
    parser.add_argument("--seconds", type=float, help="render only the first S seconds")
    parser.add_argument("--preset", default="veryfast")
    parser.add_argument("--crf", type=int, default=20)
    args = parser.parse_args(argv)
    result = render_moviepy(args.timeline, args.output, width=args.width, height=args.height,
                            seconds=args.seconds, preset=args.preset, crf=args.crf)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
