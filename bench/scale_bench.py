"""Split-render benchmark: split vs unsplit here, then a model of many containers.

    python bench/scale_bench.py                  # the demo at 1080p30, 2 pieces
    python bench/scale_bench.py --pieces 4 --size 720

In one run, side by side on this machine:

- **unsplit**: ``canvascast``'s ordinary local render of ``examples/demo/timeline.json``.
- **pieces**: the same video as video-only pieces rendered one after the other (what each
  container would do), then **join** (check the pieces, concat demuxer ``-c copy``, the
  audio mixed once and encoded to AAC, faststart): join overhead = join / unsplit.
- **split, local**: ``render_local`` (pieces on a process pool sized to the cores, then
  the join): the wall time a ``--split`` render takes here.
- **seam PSNR**: the split render's frames against the unsplit render's, at the frames on
  either side of every seam (and over all frames).

Then a model of a 10-minute 1080p30 video on 1, 5, 10, 20 and 50 containers, driven by
the per-frame and join times measured above, ``cost.GUESSES``' cold start, and stated
transfer rates; cost = container-seconds x ``config.function_cost_per_second``. No timed
assertions: this prints.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from canvascast_cli.config import Settings, function_cost_per_second  # noqa: E402
from canvascast_cli.dispatch.cost import GUESSES  # noqa: E402
from canvascast_cli.engines.render import split  # noqa: E402
from canvascast_cli.engines.render.engine import RenderOptions, render  # noqa: E402
from canvascast_cli.engines.render.inputs import resolve_timeline  # noqa: E402
from canvascast_cli.engines.render.job import RenderJob  # noqa: E402
from canvascast_cli.timeline import OutputSpec, load_timeline_file  # noqa: E402

DEMO = REPO / "examples" / "demo" / "timeline.json"
SIZES = {"1080": (1920, 1080), "720": (1280, 720)}
MODEL_FRAMES = 10 * 60 * 30  # a 10-minute video at 30 fps
CONTAINERS = (1, 5, 10, 20, 50)
# Stated, not measured here (no network on this machine): the client's link, and the
# Volume's throughput between containers.
CLIENT_MBPS = 10.0  # MB/s up and down
VOLUME_MBPS = 100.0  # MB/s a container writes or reads a piece


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 99.0 if mse == 0 else 10 * float(np.log10(255.0**2 / mse))


def _psnrs(a: Path, b: Path) -> list[float]:
    """PSNR of each frame of ``b`` against ``a``'s, decoded in step (1080p frames are
    6 MB each: never all in memory)."""
    import av

    with av.open(str(a)) as ca, av.open(str(b)) as cb:
        return [_psnr(x.to_ndarray(format="rgb24"), y.to_ndarray(format="rgb24"))
                for x, y in zip(ca.decode(video=0), cb.decode(video=0), strict=True)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pieces", type=int, default=2)
    parser.add_argument("--size", choices=sorted(SIZES), default="1080")
    args = parser.parse_args()

    timeline = load_timeline_file(DEMO)
    width, height = SIZES[args.size]
    timeline = timeline.model_copy(update={"output": OutputSpec(
        width=width, height=height, fps=timeline.output.fps,
        background=timeline.output.background)})
    total = timeline.total_frames
    ranges = split.plan(total, args.pieces)
    resolved = resolve_timeline(timeline, DEMO.parent)
    print(f"demo at {width}x{height}, {total} frames, {len(ranges)} pieces {ranges}")

    with tempfile.TemporaryDirectory(prefix="scale-bench-") as folder:
        work = Path(folder)
        began = time.perf_counter()
        whole = render(resolved, work / "whole.mp4")
        t_whole = time.perf_counter() - began

        began = time.perf_counter()  # the whole video as one video-only piece
        render(resolved, work / "one.mp4", options=RenderOptions(frame_range=(0, total),
                                                                  video_only=True))
        t_one = time.perf_counter() - began
        pieces, t_pieces = [], 0.0
        for n, frames in enumerate(ranges):
            path = work / f"piece{n}.mp4"
            began = time.perf_counter()
            render(resolved, path, options=RenderOptions(frame_range=frames, video_only=True))
            t_pieces += time.perf_counter() - began
            pieces.append(path)
        began = time.perf_counter()
        split.join(resolved, pieces, ranges, work / "joined.mp4")
        t_join = time.perf_counter() - began

        job = RenderJob(timeline=timeline, base_dir=DEMO.parent, output=work / "split.mp4")
        began = time.perf_counter()
        joined = split.render_local(job, ranges)
        t_split = time.perf_counter() - began

        all_psnr = _psnrs(Path(whole.output), Path(joined.output))
        seams = sorted({s + d for s, _ in ranges[1:] for d in (-2, -1, 0, 1)})
        seam_psnr = min(all_psnr[n] for n in seams)
        size_whole, size_split = whole.size_bytes, joined.size_bytes

    print()
    print("| measured here | seconds | share |")
    print("|---|---|---|")
    print(f"| unsplit render | {t_whole:.1f} | 100 % |")
    print(f"| {len(ranges)} pieces, one after the other (video only) | {t_pieces:.1f} | "
          f"{t_pieces / t_whole:.1%} |")
    print(f"| the whole video as one video-only piece | {t_one:.1f} | "
          f"{t_one / t_whole:.1%} |")
    print(f"| join (check, concat -c copy, audio mix + AAC, faststart) | {t_join:.2f} | "
          f"**{t_join / t_whole:.1%}** |")
    print(f"| split render here (pool of {len(ranges)} + join) | {t_split:.1f} | "
          f"{t_split / t_whole:.1%} |")
    print(f"\nseam PSNR (frames either side of each seam, vs unsplit): {seam_psnr:.1f} dB; "
          f"all frames: min {min(all_psnr):.1f} dB, mean {np.mean(all_psnr):.1f} dB")
    print(f"size: unsplit {size_whole / 1e6:.2f} MB, split {size_split / 1e6:.2f} MB "
          f"({size_split / size_whole - 1:+.1%})")

    # ---- the model ----------------------------------------------------------------
    settings = Settings()
    rate = function_cost_per_second(settings, "render_video")
    cold = GUESSES["render_video"].startup_seconds
    per_frame_whole = t_whole / total
    # t(pieces) = pieces x overhead + frames x per-frame (start-up: fonts, stills, ffmpeg)
    overhead = max(0.0, (t_pieces - t_one) / (len(ranges) - 1)) if len(ranges) > 1 else 0.0
    per_frame_piece = (t_one - overhead) / total
    join_per_frame = t_join / total
    video_mb = size_split / total * MODEL_FRAMES / 1e6
    upload_s = sum(p.stat().st_size for p in {*resolved.images, resolved.narration,
                                               resolved.music} if p) / 1e6 / CLIENT_MBPS
    download_s = video_mb / CLIENT_MBPS
    print(f"\nmodel: {MODEL_FRAMES} frames (10 min 1080p30 at this machine's per-frame "
          f"times: {per_frame_whole * 1000:.1f} ms unsplit, {per_frame_piece * 1000:.1f} ms "
          f"video only + {overhead:.1f} s per piece; join {join_per_frame * 1000:.2f} "
          f"ms/frame); cold start {cold:g} s "
          f"(cost.GUESSES); inputs up {upload_s:.1f} s, video down {download_s:.1f} s at "
          f"{CLIENT_MBPS:g} MB/s; pieces over the Volume at {VOLUME_MBPS:g} MB/s; "
          f"${rate * 3600:.3f}/container-hour")
    print()
    print("| containers | wall s | speed-up | render wall s (no client transfers) | speed-up "
          "| container-s | cost USD | cost vs 1 |")
    print("|---|---|---|---|---|---|---|---|")
    base_wall = base_inner = base_cost = 0.0
    for n in CONTAINERS:
        if n == 1:
            work_s = per_frame_whole * MODEL_FRAMES
            wall = upload_s + cold + work_s + download_s
            billed = cold + work_s
        else:
            piece_s = (overhead + per_frame_piece * MODEL_FRAMES / n
                       + video_mb / n / VOLUME_MBPS)
            join_s = join_per_frame * MODEL_FRAMES + video_mb / VOLUME_MBPS
            # The join runs on a container a piece just left warm.
            wall = upload_s + cold + piece_s + join_s + download_s
            billed = n * (cold + piece_s) + join_s
        cost = billed * rate
        inner = wall - upload_s - download_s
        if n == 1:
            base_wall, base_inner, base_cost = wall, inner, cost
        print(f"| {n} | {wall:.0f} | {base_wall / wall:.1f}x | {inner:.0f} | "
              f"{base_inner / inner:.1f}x | {billed:.0f} | {cost:.4f} | "
              f"{cost / base_cost - 1:+.1%} |")


if __name__ == "__main__":
    main()
