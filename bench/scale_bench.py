"""Split-render benchmark: split vs unsplit here, then a model of many containers.

    python bench/scale_bench.py                  # the demo at 1080p30, 2 pieces, 4 rounds
    python bench/scale_bench.py --pieces 4 --size 720 --rounds 5

Side by side on this machine, interleaved: each round runs every measurement once, in an
order rotated from round to round, and the tables give the median of the rounds' ratios
to the same round's unsplit render (the machine is shared: absolute seconds drift, ratios
taken within a round much less).

- **unsplit**: ``canvascast``'s ordinary local render of ``examples/demo/timeline.json``.
- **pieces**: the same video as video-only pieces rendered one after the other (what each
  container does), the whole video as one video-only piece, and a 3-frame piece: the
  start-up each piece pays (fonts, stills, ffmpeg).
- **audio**: the whole mix made once and encoded to AAC (``split.make_audio``), as it is
  made beside the pieces.
- **join**: check the pieces and the audio, concat demuxer and the audio muxed in, both by
  stream copy, faststart: join overhead = join / unsplit. Also the join that makes the
  audio itself (what the host's join of piece blobs does, and what every join did
  before the audio was made beside the pieces).
- **split, local**: ``render_local`` (pieces on a process pool sized to the cores, the
  audio beside them, then the join): the wall time a ``--split`` render takes here.
- **seam PSNR**: the split render's frames against the unsplit render's, at the frames on
  either side of every seam (and over all frames).

Then a model of a 10-minute 1080p30 video on 1, 5, 10, 20 and 50 containers. A container
runs its job alone, so the model is built from the CPU shares (other jobs on this shared
machine stretch wall times, unevenly), anchored on the render's quiet speed in
docs/performance.md on both cores (one-threaded work: wall = CPU); with
``cost.GUESSES``' cold start (a guess: no Modal render cold start is measured in the
ledger or the notes yet) and stated transfer rates (no network);
cost = container-seconds x ``config.function_cost_per_second``. Printed twice: with cold
containers and with a warm pool; the last column is the join making the audio itself,
after the pieces (a host join given no audio blob). No timed assertions: this prints.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
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
# The demo's render speed on these 2 cores when quiet (docs/performance.md, Render: 37.9
# and 82.5 fps; cost.GUESSES uses the 1080p one): the model's one measured wall time.
QUIET_FPS = {"1080": 37.9, "720": 82.5}
MODEL_SECONDS = 10 * 60  # a 10-minute video
MODEL_FPS = 30
CONTAINERS = (1, 5, 10, 20, 50)
TINY = split.MIN_PIECE_FRAMES  # frames of the piece that measures a piece's start-up
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


def _cpu() -> float:
    """CPU seconds of this process and of its children that have ended (ffmpeg, the
    pool's workers and their ffmpeg): unlike wall time, barely moved by other jobs."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pieces", type=int, default=2)
    parser.add_argument("--size", choices=sorted(SIZES), default="1080")
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()

    timeline = load_timeline_file(DEMO)
    width, height = SIZES[args.size]
    timeline = timeline.model_copy(update={"output": OutputSpec(
        width=width, height=height, fps=timeline.output.fps,
        background=timeline.output.background)})
    total = timeline.total_frames
    seconds = total / timeline.output.fps
    ranges = split.plan(total, args.pieces)
    resolved = resolve_timeline(timeline, DEMO.parent)
    print(f"demo at {width}x{height}, {total} frames ({seconds:.1f} s), {len(ranges)} "
          f"pieces {ranges}, {args.rounds} interleaved rounds")

    times: dict[str, list[float]] = {}
    cpu: dict[str, list[float]] = {}
    loads: list[float] = []

    def measure(name: str, fn: Callable[[], object]) -> None:
        began, began_cpu = time.perf_counter(), _cpu()
        fn()
        times.setdefault(name, []).append(time.perf_counter() - began)
        cpu.setdefault(name, []).append(_cpu() - began_cpu)

    with tempfile.TemporaryDirectory(prefix="scale-bench-") as folder:
        work = Path(folder)
        pieces = [work / f"piece{n}.mp4" for n in range(len(ranges))]
        audio = work / "audio.m4a"

        def unsplit() -> None:
            measure("unsplit", lambda: render(resolved, work / "whole.mp4", overwrite=True))

        def one_piece() -> None:
            measure("one", lambda: render(
                resolved, work / "one.mp4", overwrite=True,
                options=RenderOptions(frame_range=(0, total), video_only=True)))

        def pieces_then_join() -> None:
            measure("pieces", lambda: [render(
                resolved, path, overwrite=True,
                options=RenderOptions(frame_range=frames, video_only=True))
                for path, frames in zip(pieces, ranges, strict=True)])
            measure("tiny", lambda: render(  # a piece's start-up, nearly alone
                resolved, work / "tiny.mp4", overwrite=True,
                options=RenderOptions(frame_range=(0, TINY), video_only=True)))
            measure("audio", lambda: split.make_audio(resolved, audio))
            measure("join", lambda: split.join(resolved, pieces, ranges,
                                               work / "joined.mp4", overwrite=True,
                                               audio=audio))
            measure("join_own_audio", lambda: split.join(
                resolved, pieces, ranges, work / "joined-own.mp4", overwrite=True))

        def split_local() -> None:
            job = RenderJob(timeline=timeline, base_dir=DEMO.parent,
                            output=work / "split.mp4", overwrite=True)
            measure("split", lambda: split.render_local(job, ranges))

        steps = [unsplit, one_piece, pieces_then_join, split_local]
        for r in range(args.rounds):
            loads.append(os.getloadavg()[0])
            order = steps[r % len(steps):] + steps[:r % len(steps)]
            for step in order:
                step()
            print(f"round {r + 1} (1-min load average at its start {loads[-1]:.1f}): "
                  + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items()), flush=True)

        all_psnr = _psnrs(work / "whole.mp4", work / "split.mp4")
        seams = sorted({s + d for s, _ in ranges[1:] for d in (-2, -1, 0, 1)})
        seam_psnr = min(all_psnr[n] for n in seams)
        size_whole = (work / "whole.mp4").stat().st_size
        size_split = (work / "split.mp4").stat().st_size
        size_audio = audio.stat().st_size
        input_bytes = sum(p.stat().st_size for p in {*resolved.images, resolved.narration,
                                                      resolved.music} if p)

    def ratios(name: str, of: dict[str, list[float]] = times) -> list[float]:
        """``name`` / the same round's unsplit render, round by round."""
        return [t / u for t, u in zip(of[name], of["unsplit"], strict=True)]

    def share(name: str) -> float:
        return statistics.median(ratios(name))

    unsplit_s = statistics.median(times["unsplit"])
    print()
    print(f"| measured here (median of {args.rounds} interleaved rounds) | wall: share of "
          "the unsplit render | rounds | CPU: share of the unsplit render's |")
    print("|---|---|---|---|")
    rows = [
        ("unsplit render", "unsplit"),
        (f"{len(ranges)} pieces, one after the other (video only)", "pieces"),
        ("the whole video as one video-only piece", "one"),
        (f"a {TINY}-frame video-only piece (a piece's start-up)", "tiny"),
        ("the audio: whole mix + AAC, once (made beside the pieces)", "audio"),
        ("**join** (check, concat + audio, both `-c copy`, faststart)", "join"),
        ("join that makes the audio itself (host; every join before)", "join_own_audio"),
        (f"split render here (pool of {len(ranges)}, audio beside, join)", "split"),
    ]
    for label, name in rows:
        print(f"| {label} | {share(name):.1%} | "
              f"{', '.join(f'{x:.1%}' for x in ratios(name))} | "
              f"{statistics.median(ratios(name, cpu)):.1%} |")
    print(f"\n(unsplit render: median {unsplit_s:.1f} s on this machine, for scale only; "
          f"1-min load averages at the rounds' starts: "
          f"{', '.join(f'{x:.1f}' for x in loads)} on {os.cpu_count()} cores. Other jobs "
          "slow the many-threaded renders more than the one-threaded audio and join, so "
          "on a loaded machine those shares come out low: compare the CPU column.)")
    print(f"seam PSNR (frames either side of each seam, vs unsplit): {seam_psnr:.1f} dB; "
          f"all frames: min {min(all_psnr):.1f} dB, mean {np.mean(all_psnr):.1f} dB")
    print(f"size: unsplit {size_whole / 1e6:.2f} MB, split {size_split / 1e6:.2f} MB "
          f"({size_split / size_whole - 1:+.1%})")

    # ---- the model ----------------------------------------------------------------
    # A container runs one job alone; this machine is shared, and other jobs stretch the
    # wall times above unevenly (the many-threaded renders more than the one-threaded
    # audio and join) and even the CPU seconds (hyperthreads shared with other jobs run
    # slower). Ratios of CPU seconds barely move, so the model is built from the CPU
    # column, anchored on one quiet figure:
    # - the unsplit render's wall: QUIET_FPS, on both cores (docs/performance.md: x264
    #   already uses both), so its CPU seconds are `cores` times its wall;
    # - a video-only piece is as parallel as the unsplit render: wall share = CPU share;
    # - the audio, the join and a piece's start-up run on about one thread: wall = CPU
    #   (an upper bound: ffmpeg overlaps decoding, filtering and encoding a little).
    def cpu_share(name: str) -> float:
        return statistics.median(ratios(name, cpu))

    frames = MODEL_SECONDS * MODEL_FPS
    cores = os.cpu_count() or 1
    per_frame_whole = 1 / QUIET_FPS[args.size]
    unsplit_quiet = total * per_frame_whole  # the demo's unsplit render, quiet, wall s
    startup = cpu_share("tiny") * unsplit_quiet * cores
    per_frame_piece = (cpu_share("one") * unsplit_quiet - startup) / total
    video_mb = size_split / total * frames / 1e6
    audio_mb = size_audio / seconds * MODEL_SECONDS / 1e6
    upload_s = input_bytes / 1e6 / CLIENT_MBPS
    download_s = video_mb / CLIENT_MBPS
    rate = function_cost_per_second(Settings(), "render_video")
    cold = GUESSES["render_video"].startup_seconds
    scale = frames / total  # every join and audio time scaled whole: an upper bound
    one_thread = unsplit_quiet * cores * scale  # a CPU share of it: one-thread wall s
    audio_s = cpu_share("audio") * one_thread + audio_mb / VOLUME_MBPS  # + its write
    # The join: the pieces and the audio read from the Volume, the result written back.
    join_s = cpu_share("join") * one_thread + (2 * video_mb + audio_mb) / VOLUME_MBPS
    join_mixing_s = cpu_share("join_own_audio") * one_thread + 2 * video_mb / VOLUME_MBPS
    print(f"\nmodel: a {MODEL_SECONDS // 60}-minute video, {frames} frames. The unsplit "
          f"render at {QUIET_FPS[args.size]:g} fps ({per_frame_whole * 1000:.1f} ms/frame, "
          f"docs/performance.md, quiet) on {cores} cores; from the CPU shares: "
          f"pieces {per_frame_piece * 1000:.1f} ms/frame + {startup:.1f} s start-up each; the "
          f"audio {audio_s:.1f} s (mix + AAC, its own container, beside the pieces); the "
          f"join {join_s:.1f} s (the Volume read and written, stream copies) on a container "
          f"a piece left warm, or {join_mixing_s:.1f} s when it makes the audio itself. "
          f"Cold start {cold:g} s (cost.GUESSES, a guess): once in wall time (the "
          f"containers start together), once per container in cost. Inputs up "
          f"{upload_s:.1f} s, the video ({video_mb:.0f} MB) down {download_s:.1f} s at "
          f"{CLIENT_MBPS:g} MB/s (assumed); the Volume at {VOLUME_MBPS:g} MB/s (assumed). "
          f"${rate * 3600:.3f}/container-hour.")
    for title, start in (("cold containers", cold),
                         ("warm pool (buffer_containers/min_containers >= containers + 1, "
                          "no cold start; the pool's idle time is billed apart, to no job)",
                          0.0)):
        print(f"\n{title}:\n")
        print("| containers | wall s | speed-up | render wall s (no client transfers) | "
              "speed-up | bound by | container-s | cost USD | cost vs 1 | audio made in "
              "the join instead: render speed-up, cost vs 1 |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        base_wall = base_inner = base_billed = 0.0
        for n in CONTAINERS:
            if n == 1:
                inner = mixing_inner = start + per_frame_whole * frames
                billed = mixing_billed = inner
                bound, label = "one render", "1"
            else:
                piece_s = startup + per_frame_piece * frames / n + video_mb / n / VOLUME_MBPS
                inner = start + max(piece_s, audio_s) + join_s
                billed = n * (start + piece_s) + (start + audio_s) + join_s
                mixing_inner = start + piece_s + join_mixing_s
                mixing_billed = n * (start + piece_s) + join_mixing_s
                bound = "pieces" if piece_s >= audio_s else "**audio**"
                label = f"{n} + 1 audio"
            wall = upload_s + inner + download_s
            if n == 1:
                base_wall, base_inner, base_billed = wall, inner, billed
            print(f"| {label} | {wall:.0f} | {base_wall / wall:.1f}x | {inner:.0f} | "
                  f"{base_inner / inner:.1f}x | {bound} | {billed:.0f} | {billed * rate:.4f} "
                  f"| {billed / base_billed - 1:+.1%} | {base_inner / mixing_inner:.1f}x, "
                  f"{mixing_billed / base_billed - 1:+.1%} |")


if __name__ == "__main__":
    main()
