"""Render benchmark: canvascast vs the encoder's own limit vs MoviePy, side by side.

    python bench/render_bench.py                 # 1080p30 and 720p30, veryfast
    python bench/render_bench.py --repeat 3      # interleaved repeats, medians reported
    python bench/render_bench.py --sizes 1080 --no-moviepy       # skip MoviePy
    python bench/render_bench.py --moviepy-seconds 10            # MoviePy on a prefix

For each size, in one run:

- **render fps**: ``canvascast``'s local render of ``examples/demo/timeline.json``.
- **pure x264 fps**: the render's own frames, decoded to a raw file first, then encoded
  by the same ffmpeg with the same preset and CRF and nothing else (no captions, no audio,
  no frame making). This is the practical ceiling on this machine.
- **ratio** render fps / pure fps (target at 1080p30: >= 0.85).
- **MoviePy fps** on the same timeline (``bench/moviepy_baseline.py``: the same stills,
  motion, crossfades, word-highlighted captions, ducked music; whole timeline unless
  ``--moviepy-seconds``), and render fps / MoviePy fps (target >= 10x).
- **jitter**: std of the frame-to-frame shift (phase correlation) across the demo's
  constant pan (scene 3, ``pan_left`` over the city), for canvascast's frames as made
  (what the renderer controls), the same frames after x264 (what a viewer gets; x264's
  skip blocks and quarter-pel motion add their own), and MoviePy's frames as made.

Runs are interleaved (render, pure, render, pure, ...) so that machine noise hits both
sides alike; compare ratios, not absolute seconds. No timed assertions: this prints.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from canvascast_cli.engines.render.engine import PIPE_PIX_FMT, RenderOptions, render  # noqa: E402
from canvascast_cli.engines.render.ffmpeg import ffmpeg_exe  # noqa: E402
from canvascast_cli.engines.render.inputs import resolve_timeline  # noqa: E402
from canvascast_cli.timeline import OutputSpec, Timeline, load_timeline_file  # noqa: E402

DEMO = REPO / "examples" / "demo" / "timeline.json"
SIZES = {"1080": (1920, 1080), "720": (1280, 720)}
PAN_SCENE = 3  # pan_left over the city: a constant horizontal pan
JITTER_FRAMES = 60


def sized(timeline: Timeline, width: int, height: int) -> Timeline:
    output = OutputSpec(width=width, height=height, fps=timeline.output.fps,
                        background=timeline.output.background)
    return timeline.model_copy(update={"output": output})


def time_render(timeline: Timeline, out: Path, preset: str, crf: int) -> float:
    resolved = resolve_timeline(timeline, DEMO.parent)
    result = render(resolved, out, options=RenderOptions(preset=preset, crf=crf),
                    overwrite=True)
    return result.render_seconds


def decode_raw(video: Path, raw: Path) -> None:
    subprocess.run([ffmpeg_exe(), "-v", "error", "-y", "-i", str(video), "-f", "rawvideo",
                    "-pix_fmt", PIPE_PIX_FMT, str(raw)], check=True)


def pure_encode_command(raw: Path, width: int, height: int, fps: float, preset: str, crf: int,
                        out: Path) -> list[str]:
    # Same raw layout the render pipes, same encoder settings, nothing else.
    return [ffmpeg_exe(), "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", PIPE_PIX_FMT,
            "-video_size", f"{width}x{height}", "-framerate", f"{fps:g}", "-i", str(raw),
            "-c:v", "libx264", "-preset", preset, "-crf", str(crf), "-f", "mp4", str(out)]


def time_pure_encode(raw: Path, width: int, height: int, fps: float, preset: str, crf: int,
                     out: Path) -> float:
    args = pure_encode_command(raw, width, height, fps, preset, crf, out)
    began = time.perf_counter()
    subprocess.run(args, check=True)
    return time.perf_counter() - began


def scene_frames_of(video: Path, timeline: Timeline, scene: int) -> list[np.ndarray]:
    """Decoded frames of one scene, inside its crossfades (pure motion)."""
    import av

    from canvascast_cli.engines.render.compose import FramePlan

    span = FramePlan(timeline).spans[scene]
    fades = [s.fade_in for s in FramePlan(timeline).spans] + [0]
    first, last = span.start + span.fade_in, span.end - fades[scene + 1]
    frames = []
    with av.open(str(video)) as container:
        for n, frame in enumerate(container.decode(video=0)):
            if first <= n < last:
                frames.append(frame.to_ndarray(format="gray").astype(np.float64))
            elif n >= last:
                break
    return frames


def made_frames(timeline: Timeline, scene: int, count: int) -> list[np.ndarray]:
    """Luma of the first ``count`` frames of one scene's own motion, as the compositor
    makes them (before x264)."""
    from canvascast_cli.engines.render.compose import Compositor
    from canvascast_cli.engines.render.frames import FrameBuffer

    out = timeline.output
    compositor = Compositor(timeline, resolve_timeline(timeline, DEMO.parent).images)
    span = compositor.plan.spans[scene]
    frames = []
    for n in range(span.start + span.fade_in, span.start + span.fade_in + count):
        data = compositor.frame(n, FrameBuffer(out.width, out.height))
        frames.append(data[: out.width * out.height].reshape(out.height, out.width)
                      .astype(np.float64))
    compositor.close()
    return frames


def jitter(frames: list[np.ndarray]) -> tuple[float, float]:
    """(mean, std) of the horizontal frame-to-frame shift, by phase correlation."""
    gray = [f if f.ndim == 2 else cv2.cvtColor(f, cv2.COLOR_RGB2GRAY).astype(np.float64)
            for f in frames]
    window = cv2.createHanningWindow(gray[0].shape[::-1], cv2.CV_64F)
    shifts = [cv2.phaseCorrelate(a, b, window)[0][0] for a, b in itertools.pairwise(gray)]
    return float(np.mean(shifts)), float(np.std(shifts))


def bench_size(label: str, args: argparse.Namespace, work: Path) -> dict[str, object]:
    width, height = SIZES[label]
    timeline = sized(load_timeline_file(DEMO), width, height)
    frames = timeline.total_frames
    fps = timeline.output.fps
    ours = work / f"ours-{label}.mp4"
    raw = work / f"frames-{label}.yuv"
    render_times, pure_times = [], []
    for i in range(args.repeat):
        render_times.append(time_render(timeline, ours, args.preset, args.crf))
        if i == 0:
            decode_raw(ours, raw)
        pure_times.append(time_pure_encode(raw, width, height, fps, args.preset, args.crf,
                                           work / f"pure-{label}.mp4"))
        print(f"  {label}p run {i + 1}: render {render_times[-1]:.1f} s, "
              f"pure encode {pure_times[-1]:.1f} s", file=sys.stderr)
    raw.unlink()
    render_fps = frames / statistics.median(render_times)
    pure_fps = frames / statistics.median(pure_times)
    pan_mean, pan_std = jitter(made_frames(timeline, PAN_SCENE, JITTER_FRAMES))
    _, encoded_std = jitter(scene_frames_of(ours, timeline, PAN_SCENE)[:JITTER_FRAMES])
    row: dict[str, object] = {
        "size": f"{width}x{height}@{fps:g}",
        "frames": frames,
        "render_fps": round(render_fps, 2),
        "render_x_realtime": round(render_fps / fps, 3),
        "pure_encode_fps": round(pure_fps, 2),
        "ratio_vs_pure_encode": round(render_fps / pure_fps, 3),
        "pan_step_px": round(abs(pan_mean), 3),
        "jitter_px": round(pan_std, 4),
        "jitter_after_x264_px": round(encoded_std, 4),
    }
    if not args.no_moviepy:
        row.update(bench_moviepy(width, height, args, work, render_fps))
    return row


def bench_moviepy(width: int, height: int, args: argparse.Namespace, work: Path,
                  render_fps: float) -> dict[str, object]:
    try:
        from bench.moviepy_baseline import pan_frames_moviepy, render_moviepy
    except ImportError as exc:  # moviepy missing: pip install -e '.[bench]'
        print(f"  MoviePy skipped: {exc}", file=sys.stderr)
        return {"moviepy": "not installed (pip install -e '.[bench]')"}
    out = work / f"moviepy-{width}.mp4"
    stats = render_moviepy(DEMO, out, width=width, height=height,
                           seconds=args.moviepy_seconds, preset=args.preset, crf=args.crf)
    print(f"  MoviePy {width}x{height}: {stats['frames']} frames in "
          f"{stats['wall_seconds']:.1f} s", file=sys.stderr)
    mp_fps = float(stats["fps"])  # type: ignore[arg-type]
    frames = pan_frames_moviepy(DEMO, PAN_SCENE, JITTER_FRAMES, width, height)
    _, mp_jitter = jitter(frames)
    return {
        "moviepy_fps": round(mp_fps, 3),
        "moviepy_seconds_timed": stats["seconds_rendered"],
        "speedup_vs_moviepy": round(render_fps / mp_fps, 1),
        "moviepy_jitter_px": round(mp_jitter, 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", choices=sorted(SIZES), default=["1080", "720"])
    parser.add_argument("--repeat", type=int, default=2, help="interleaved runs per side")
    parser.add_argument("--preset", default="veryfast")
    parser.add_argument("--crf", type=int, default=20)
    parser.add_argument("--moviepy-seconds", type=float, default=None,
                        help="time MoviePy on this many seconds of the timeline (default: all)")
    parser.add_argument("--no-moviepy", action="store_true", help="skip the MoviePy baseline")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = parser.parse_args()

    rows = []
    with tempfile.TemporaryDirectory(prefix="canvascast-bench-") as tmp:
        for label in args.sizes:
            print(f"{label}p:", file=sys.stderr)
            rows.append(bench_size(label, args, Path(tmp)))
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    keys = list(dict.fromkeys(k for row in rows for k in row))
    width = max(len(k) for k in keys)
    print(f"{'':{width}}  " + "  ".join(f"{r['size']!s:>18}" for r in rows))
    for key in keys[1:]:
        print(f"{key:{width}}  " + "  ".join(f"{r.get(key, '-')!s:>18}" for r in rows))


if __name__ == "__main__":
    main()
