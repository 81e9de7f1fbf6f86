"""End-to-end render benchmark: ``canvascast render`` as a user runs it, against a pure
x264 encode of the same frames.

    python bench/render_e2e_bench.py                    # 3 rounds, veryfast, CRF 20
    python bench/render_e2e_bench.py --rounds 5
    python bench/render_e2e_bench.py --baseline /tmp/old-checkout   # A/B two versions
    python bench/render_e2e_bench.py --rounds 0 --first-frame 9      # start-up only

In each round, interleaved (the order rotates from round to round, so a drift in the
machine's speed hits every side alike):

- **render**: ``python -m canvascast_cli render examples/demo/timeline.json -o OUT --backend
  local --json`` in a fresh process, timed from process start to exit, with an empty
  ``CANVASCAST_HOME`` (a new user's empty cache and state: a cache miss, stored).
- **pure encode**: the render's own frames, decoded once beforehand to a raw NV12 file,
  encoded by the same ffmpeg with the same preset and CRF and nothing else (no captions,
  no audio, no frame making): ``bench/render_bench.py``'s method.
- **baseline** (with ``--baseline DIR``): the same render command run from another
  checkout (``-m`` imports the package from the working directory), to compare versions
  under the same load.

Reported, as medians over the rounds: wall seconds; the ratio pure / render, taken round
by round (render speed relative to the encoder's limit; target >= 0.9); CPU seconds (user
+ system, children included) and their ratio; the render's ``first_frame_seconds`` and
``render_seconds`` from its ``--json``; the time outside ``render()`` (wall -
render_seconds: interpreter, imports, CLI, input checks, exit); and the peak resident
memory (``ru_maxrss`` from ``wait4``) of the render's process tree (the larger of
canvascast and its ffmpeg) and of the pure encode's ffmpeg.

``--first-frame N`` adds N interleaved runs per version of a 30-frame render that print
the seconds from their process start to the first frame piped to ffmpeg (a hook on
``FrameWriter.write``, where every version hands its frames over; Linux), and their median.

Run it on an otherwise idle machine (the load average is printed before and after): when
other work competes for the cores, the render (several threads and ffmpeg's) wins a larger
share of them than the lone pure encode does, and the wall ratio flatters the render.

Bytecode: a user's installed package has its ``.pyc`` files; when the environment sets
``PYTHONDONTWRITEBYTECODE`` (every import would compile from source), it is dropped for the
render processes and an untimed warm-up run writes the caches. No timed assertions: this
prints.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.render_bench import DEMO, decode_raw, pure_encode_command  # noqa: E402
from canvascast_cli.timeline import load_timeline_file  # noqa: E402

# Run as ``python -c FIRST_FRAME_HOOK render ...``: canvascast, printing on stderr the
# seconds from its process start (/proc) to its first frame written to ffmpeg.
FIRST_FRAME_HOOK = """
import os, runpy, sys
from canvascast_cli.engines.render import ffmpeg

def since_start():
    with open("/proc/self/stat") as f:
        ticks = int(f.read().rsplit(")", 1)[1].split()[19])
    with open("/proc/uptime") as f:
        return float(f.read().split()[0]) - ticks / os.sysconf("SC_CLK_TCK")

write, seen = ffmpeg.FrameWriter.write, []

def first_write(self, data, owner):
    if not seen:
        seen.append(since_start())
        print(f"first_frame_from_start={seen[0]:.3f}", file=sys.stderr, flush=True)
    return write(self, data, owner)

ffmpeg.FrameWriter.write = first_write
sys.argv = ["canvascast", *sys.argv[1:]]
runpy.run_module("canvascast_cli", run_name="__main__", alter_sys=True)
"""


@dataclass(frozen=True)
class Run:
    wall: float  # seconds, process start to exit
    cpu: float  # CPU seconds (user + system) of the process and its waited-for children
    max_rss_mb: float  # ru_maxrss of the process and its waited-for children
    stdout: str
    stderr: str


def run(command: list[str], *, cwd: Path, env: dict[str, str] | None = None) -> Run:
    """Run ``command`` to completion; its wall time and peak memory (``wait4``)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        began = time.perf_counter()
        proc = subprocess.Popen(command, cwd=cwd, env=env, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - began
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if proc.returncode != 0:
            raise SystemExit(f"{command[:4]}... failed ({proc.returncode}):\n"
                             f"{err.read().decode(errors='replace')[-3000:]}")
        return Run(wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024,
                   out.read().decode(), err.read().decode(errors="replace"))


def render(checkout: Path, out: Path, args: argparse.Namespace, work: Path, *,
           first_frame: bool = False) -> tuple[Run, dict[str, Any]]:
    """``canvascast render`` of the demo from ``checkout`` in a fresh process; with
    ``first_frame``, its first 30 frames under ``FIRST_FRAME_HOOK``."""
    out.unlink(missing_ok=True)
    python = [sys.executable, "-c", FIRST_FRAME_HOOK] if first_frame else [
        sys.executable, "-m", "canvascast_cli"]
    command = [*python, "render", str(DEMO.relative_to(REPO)), "-o", str(out),
               "--backend", "local", "--json", "--preset", args.preset, "--crf",
               str(args.crf), *(["--frames", "0:30"] if first_frame else [])]
    with tempfile.TemporaryDirectory(prefix="home-", dir=work) as home:
        env = {**os.environ, "CANVASCAST_HOME": home}
        if not args.no_bytecode:
            env.pop("PYTHONDONTWRITEBYTECODE", None)
        done = run(command, cwd=checkout, env=env)
    return done, json.loads(done.stdout)


def first_frame_seconds(checkout: Path, args: argparse.Namespace, work: Path) -> float:
    done, _ = render(checkout, work / "first.mp4", args, work, first_frame=True)
    line = next(x for x in done.stderr.splitlines() if x.startswith("first_frame_from_start="))
    return float(line.partition("=")[2])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--preset", default="veryfast")
    parser.add_argument("--crf", type=int, default=20)
    parser.add_argument("--baseline", type=Path, default=None,
                        help="another checkout whose render is timed alongside")
    parser.add_argument("--no-bytecode", action="store_true",
                        help="keep PYTHONDONTWRITEBYTECODE for the renders (imports compile)")
    parser.add_argument("--first-frame", type=int, default=0, metavar="N",
                        help="also time process start to first frame, N runs per version")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()

    timeline = load_timeline_file(DEMO)
    out_spec = timeline.output
    sides = ["render", "pure"] + (["baseline"] if args.baseline else [])
    times: dict[str, list[Run]] = {side: [] for side in sides}
    reports: dict[str, list[dict[str, Any]]] = {"render": [], "baseline": []}
    print(f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}; {timeline.total_frames} "
          f"frames {out_spec.width}x{out_spec.height}; {args.preset}, CRF {args.crf}",
          file=sys.stderr)
    checkouts = {"render": REPO, **({"baseline": args.baseline} if args.baseline else {})}
    firsts: dict[str, list[float]] = {side: [] for side in checkouts}
    with tempfile.TemporaryDirectory(prefix="canvascast-e2e-") as tmp:
        work = Path(tmp)
        # Warm-up (untimed): OS caches, bytecode; its frames become the pure encode's input.
        for checkout in checkouts.values():
            render(checkout, work / "warm.mp4", args, work, first_frame=not args.rounds)
        if args.rounds:
            raw = work / "frames.yuv"
            decode_raw(work / "warm.mp4", raw)
            pure = pure_encode_command(raw, out_spec.width, out_spec.height, out_spec.fps,
                                       args.preset, args.crf, work / "pure.mp4")
        for n in range(args.rounds):
            order = sides[n % len(sides):] + sides[: n % len(sides)]
            for side in order:
                if side == "pure":
                    (work / "pure.mp4").unlink(missing_ok=True)
                    times[side].append(run(pure, cwd=work))
                    continue
                done, report = render(checkouts[side], work / f"{side}.mp4", args, work)
                times[side].append(done)
                reports[side].append(report)
            print(f"  round {n + 1}: " + ", ".join(
                f"{side} {times[side][-1].wall:.2f} s" for side in sides), file=sys.stderr)
        for n in range(args.first_frame):
            for side in list(checkouts)[n % 2:] + list(checkouts)[: n % 2]:
                firsts[side].append(first_frame_seconds(checkouts[side], args, work))
            print(f"  first frame {n + 1}: " + ", ".join(
                f"{side} {firsts[side][-1]:.3f} s" for side in checkouts), file=sys.stderr)

    print(f"load {os.getloadavg()[0]:.2f}", file=sys.stderr)
    rows: dict[str, dict[str, object]] = {}
    for side in sides:
        rows[side] = summary(times[side], times["pure"], reports.get(side, []))
        if firsts.get(side):
            rows[side]["first_frame_from_start_s"] = round(statistics.median(firsts[side]), 3)
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    keys = list(dict.fromkeys(k for row in rows.values() for k in row))
    width = max(map(len, keys), default=0)
    print(f"{'':{width}}  " + "  ".join(f"{side:>10}" for side in sides))
    for key in keys:
        print(f"{key:{width}}  " + "  ".join(f"{rows[s].get(key, '-')!s:>10}" for s in sides))


def summary(runs: list[Run], pure: list[Run], reports: list[dict[str, Any]]
            ) -> dict[str, object]:
    if not runs:
        return {}
    row: dict[str, object] = {
        "wall_s": round(statistics.median(r.wall for r in runs), 2),
        "cpu_s": round(statistics.median(r.cpu for r in runs), 2),
        "peak_rss_mb": round(statistics.median(r.max_rss_mb for r in runs), 1),
    }
    if reports:
        # Round by round: the pure encode of the same round shares its machine state.
        row["ratio_vs_pure"] = round(statistics.median(
            p.wall / r.wall for r, p in zip(runs, pure, strict=True)), 3)
        row["cpu_ratio_vs_pure"] = round(statistics.median(
            p.cpu / r.cpu for r, p in zip(runs, pure, strict=True)), 3)
        row["render_seconds"] = round(statistics.median(
            float(rep["render_seconds"]) for rep in reports), 2)
        row["outside_render_s"] = round(statistics.median(
            r.wall - float(rep["render_seconds"]) for r, rep in zip(runs, reports,
                                                                     strict=True)), 2)
        firsts = [rep.get("first_frame_seconds") for rep in reports]
        if all(f is not None for f in firsts):  # a version that reports it
            row["first_frame_s"] = round(statistics.median(float(f) for f in firsts), 3)
    return row


if __name__ == "__main__":
    main()
