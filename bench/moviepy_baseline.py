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
  over the whole video, at its volume, with ``afx.AudioFadeIn``/``afx.AudioFadeOut``;
  mixed by ``CompositeAudioClip`` (a plain sum, like canvascast's ``amix normalize=0``), at
  48 kHz like canvascast. MoviePy has no sidechain compressor, so **music ducking is
  skipped**: the baseline does less audio work than canvascast.
* Captions: one ``TextClip`` per caption line (canvascast's ``group_lines``), the caption
  style's colours (white text, black stroke by default), DejaVu Sans Bold at 6% of the
  height (or the style's size), bottom-centred at canvascast's margin, shown from the
  line's first word to its last word's end plus canvascast's linger (up to 0.6 s, never
  past the next line's start). MoviePy has no multi-colour text, so **there is no
  per-word highlight**: again the baseline does *less* work than canvascast.
* Encoding: ``write_videofile`` with libx264, the given preset and CRF, yuv420p, AAC,
  2 threads, through MoviePy's own ffmpeg (imageio-ffmpeg's binary). MoviePy 2.2 appends
  its own ``-pix_fmt yuva420p`` for libx264, which ffmpeg overrides to yuv420p.

``wall_seconds`` in the result times ``write_videofile`` alone (it renders every frame and
encodes audio and video); building the clips (decoding stills, cover-fitting, making
caption images) is excluded and reported separately as ``build_seconds``.

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

import canvascast_cli
from canvascast_cli.engines.render.captions import LINGER, group_lines
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


def caption_clips(words: Sequence[Word], timeline: Timeline) -> list[Any]:
    """One ``TextClip`` per caption line, bottom-centred, timed in video seconds."""
    captions = timeline.captions
    if captions is None:
        return []
    style = captions.style
    out_w, out_h = timeline.output.width, timeline.output.height
    size = style.size or max(8, round(out_h * 0.06))
    stroke = round(style.outline if style.outline is not None else max(1.0, size / 12))
    margin = style.margin if style.margin is not None else round(out_h * 0.07)
    spoken = [w for w in words if w.word.strip()]
    lines = group_lines(spoken, style.max_words_per_line)
    # MoviePy 2.x sizes a TextClip from the glyph box without the stroke and draws the
    # text a little low, so descenders and the stroke get cut off at the bottom
    # (github.com/Zulko/moviepy/issues/2268): the documented workaround is a margin.
    pad = (stroke, stroke, stroke, stroke + size // 3)  # left, top, right, bottom
    clips = []
    for n, line in enumerate(lines):
        next_start = lines[n + 1][0].start if n + 1 < len(lines) else math.inf
        end = max(line[-1].end, min(line[-1].end + LINGER, next_start))
        text = TextClip(
            font=str(FONT),
            text=" ".join(w.word.strip() for w in line),
            font_size=size,
            color=style.color,
            stroke_color=style.outline_color,
            stroke_width=stroke,
            method="caption",  # wraps a line too wide for the frame, like libass
            size=(round(out_w * 0.9), None),
            text_align="center",
            margin=pad,
        )
        ink_h = text.h - pad[3]  # the bottom padding is empty: keep canvascast's margin
        y = {"bottom": out_h - margin - ink_h, "top": margin,
             "center": (out_h - ink_h) / 2}[style.position]
        clips.append(text.with_start(line[0].start).with_end(end).with_position(("center", y)))
    return clips


def audio_clip(resolved: ResolvedTimeline) -> Any | None:
    """Narration + looped, faded music for the whole video (no ducking: see module doc)."""
    timeline = resolved.timeline
    total = timeline.duration
    tracks = []
    if timeline.narration is not None and resolved.narration is not None:
        narration = AudioFileClip(str(resolved.narration), fps=AUDIO_RATE)
        tracks.append(narration.with_effects([afx.MultiplyVolume(timeline.narration.volume)])
                      .with_start(timeline.narration.start))
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
        tracks.append(music.with_effects(effects))
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
