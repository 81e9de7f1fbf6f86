"""Local render, end to end: real ffmpeg, tiny timelines (320x180 at 10 fps)."""

from __future__ import annotations

import hashlib
import http.server
import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.helpers import (
    Cli,
    decode_audio,
    decode_frames,
    probe,
    small_output,
    textured_image,
    tone_wav,
    write_timeline,
)


def _files(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


# ---------------------------------------------------------------------------------------
# The basics: duration, streams, JSON result


def test_render_duration_streams_and_json(cli: Cli, media: Path) -> None:
    path = write_timeline(media, {
        "output": small_output(),
        "scenes": [
            {"image": "img0.jpg", "duration": 1.5, "motion": "zoom_in",
             "transition": {"type": "crossfade", "duration": 0.5}},
            {"image": "img1.jpg", "duration": 1.5, "motion": "pan_left"},
            {"image": "img2.jpg", "duration": 1.0},
        ],
        "narration": "narration.wav",
    })
    result = cli("render", path, "-o", "out.mp4", "--json")
    assert result.exit_code == 0, result.stderr
    body = result.json()
    expected_frames = 15 + 15 + 10 - 5
    assert body["frames"] == expected_frames
    assert body["duration"] == pytest.approx(3.5)
    out = Path(body["output"])
    data = out.read_bytes()
    assert body["sha256"] == hashlib.sha256(data).hexdigest()
    assert body["size_bytes"] == len(data)
    assert body["backend"] == "local" and body["speed"] > 0
    assert body["cost"]["modal_equivalent_usd"] > 0
    info = probe(out)
    assert info.has_video and info.has_audio
    assert info.video_frames == expected_frames
    assert (info.width, info.height, info.pix_fmt) == (320, 180, "yuv420p")
    assert abs(info.video_duration - 3.5) <= 0.1  # within one frame at 10 fps
    assert abs(info.audio_duration - 3.5) <= 0.1
    # No temporary file left beside the output, and normal (umask) permissions.
    assert [p.name for p in out.parent.iterdir() if ".part" in p.name] == []
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask


def test_faststart_moov_before_mdat(cli: Cli, media: Path) -> None:
    path = write_timeline(media, {"output": small_output(),
                                  "scenes": [{"image": "img0.jpg", "duration": 1}]})
    assert cli("render", path, "-o", "fs.mp4").exit_code == 0
    head = Path("fs.mp4").read_bytes()
    assert 0 <= head.find(b"moov") < head.find(b"mdat")


def test_silent_timeline_still_has_audio_track(cli: Cli, media: Path) -> None:
    path = write_timeline(media, {"output": small_output(),
                                  "scenes": [{"image": "img0.jpg", "duration": 2}]})
    assert cli("render", path, "-o", "s.mp4").exit_code == 0
    info = probe(Path("s.mp4"))
    assert info.has_audio and abs(info.audio_duration - 2.0) <= 0.1


# ---------------------------------------------------------------------------------------
# Motion quality


def _gray(frame: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY).astype(np.float64)


def _shifts(frames: list[np.ndarray]) -> np.ndarray:
    window = cv2.createHanningWindow(frames[0].shape[1::-1], cv2.CV_64F)
    out = []
    for a, b in itertools.pairwise(frames):
        (dx, dy), _ = cv2.phaseCorrelate(_gray(a), _gray(b), window)
        out.append((dx, dy))
    return np.array(out)


def _best_shift(a: np.ndarray, b: np.ndarray, candidates: np.ndarray) -> float:
    """The horizontal shift of ``b`` against ``a`` by brute force (unbiased, slow)."""
    ga, gb = _gray(a).astype(np.float32), _gray(b).astype(np.float32)
    errors = []
    for d in candidates:
        moved = cv2.warpAffine(ga, np.float32([[1, 0, -d], [0, 1, 0]]), ga.shape[::-1],
                               flags=cv2.INTER_CUBIC)
        errors.append(float(((moved - gb)[20:-20, 20:-60] ** 2).mean()))
    return float(candidates[int(np.argmin(errors))])


def test_constant_pan_moves_by_a_constant_subpixel_step(cli: Cli, media: Path) -> None:
    path = write_timeline(media, {
        "output": small_output(),
        "scenes": [{"image": "img0.jpg", "duration": 4,
                    "motion": {"type": "pan_right", "amount": 0.2, "easing": "linear"}}],
    })
    assert cli("render", path, "-o", "pan.mp4", "--crf", "12").exit_code == 0
    frames = decode_frames(Path("pan.mp4"))
    shifts = _shifts(frames)
    # 480 px image on a 320 px frame at 1.2x: the view travels 320 - 320/1.2 = 53.3 source
    # px = 64 output px over 39 frame steps: 1.64 px per frame, never a whole number.
    # Phase correlation's sub-pixel estimate is biased (a constant offset for a constant
    # step) but its spread is the jitter; the step itself is checked by brute force.
    dx = -shifts[:, 0]
    assert np.std(dx) < 0.1, np.round(dx, 3)
    assert np.max(np.abs(shifts[:, 1])) < 0.1
    travel = _best_shift(frames[5], frames[25], np.arange(31.0, 35.0, 0.01))
    assert travel / 20 == pytest.approx(64 / 39, abs=0.01)


def test_compositor_frames_are_subpixel_exact(media: Path) -> None:
    """Before x264: the frame-to-frame step of a pan is constant to a few hundredths."""
    from canvascast_cli.engines.render.compose import Compositor
    from canvascast_cli.engines.render.frames import FrameBuffer
    from canvascast_cli.timeline import parse_timeline

    t = parse_timeline({"output": {"width": 320, "height": 180, "fps": 25},
                        "scenes": [{"image": str(media / "img1.jpg"), "duration": 3,
                                    "motion": {"type": "pan_down", "amount": 0.3}}]})
    comp = Compositor(t, [media / "img1.jpg"])
    frames = []
    for n in range(t.total_frames):
        buf = FrameBuffer(320, 180)
        y = comp.frame(n, buf)[: 320 * 180].reshape(180, 320)
        frames.append(cv2.cvtColor(y, cv2.COLOR_GRAY2RGB))
    comp.close()
    dy = -_shifts(frames)[:, 1]
    assert np.std(dy) < 0.03, np.round(dy, 3)
    assert np.abs(_shifts(frames)[:, 0]).max() < 0.05


def test_zoom_frames_all_differ(cli: Cli, media: Path) -> None:
    path = write_timeline(media, {"output": small_output(), "scenes": [
        {"image": "img2.jpg", "duration": 2, "motion": {"type": "zoom_out", "amount": 0.3}}]})
    assert cli("render", path, "-o", "z.mp4").exit_code == 0
    frames = decode_frames(Path("z.mp4"))
    diffs = [np.abs(a.astype(int) - b.astype(int)).mean() for a, b in itertools.pairwise(frames)]
    assert min(diffs) > 0.2, diffs
    # Zooming out: the centre shows more of the picture, so edges move towards the middle.
    first, last = _gray(frames[0]), _gray(frames[-1])
    assert not np.allclose(first, last)


def test_crossfade_blends(cli: Cli, media: Path) -> None:
    textured_image(media / "red.png", color=(220, 20, 20))
    textured_image(media / "blue.png", color=(20, 20, 220))
    path = write_timeline(media, {"output": small_output(), "scenes": [
        {"image": "red.png", "duration": 2, "transition": {"type": "crossfade", "duration": 1}},
        {"image": "blue.png", "duration": 2}]})
    assert cli("render", path, "-o", "x.mp4", "--crf", "10").exit_code == 0
    frames = decode_frames(Path("x.mp4"))
    assert len(frames) == 30
    red = [float(f[60:120, 100:220, 0].mean()) for f in frames]
    blue = [float(f[60:120, 100:220, 2].mean()) for f in frames]
    assert red[5] > 200 and blue[5] < 40  # before the crossfade (frames 10-19)
    assert red[25] < 40 and blue[25] > 200  # after
    fade = red[10:20]
    assert all(a > b for a, b in itertools.pairwise(fade)), fade  # falls steadily
    mid = frames[15][60:120, 100:220].reshape(-1, 3).mean(axis=0)
    assert 90 < mid[0] < 150 and 90 < mid[2] < 150  # a real blend, not a cut


# ---------------------------------------------------------------------------------------
# Captions


def _caption_pixels(frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Masks of highlight-yellow and plain-white pixels in the caption band."""
    band = frame[110:180].astype(int)
    r, g, b = band[..., 0], band[..., 1], band[..., 2]
    yellow = (r > 200) & (g > 160) & (b < 90)
    white = (r > 200) & (g > 200) & (b > 200)
    return yellow, white


def test_caption_highlights_the_word_being_spoken(cli: Cli, media: Path) -> None:
    textured_image(media / "grey.png", color=(90, 90, 90))
    path = write_timeline(media, {
        "output": small_output(),
        "scenes": [{"image": "grey.png", "duration": 4}],
        "captions": {"words": [{"word": "MMMM", "start": 0.5, "end": 1.2},
                               {"word": "WWWW", "start": 1.6, "end": 2.4}],
                     "style": {"highlight_color": "#FFD400", "size": 24}},
    })
    assert cli("render", path, "-o", "c.mp4", "--crf", "10").exit_code == 0
    frames = decode_frames(Path("c.mp4"))

    def lit(n: int) -> tuple[int, int, int]:
        yellow, white = _caption_pixels(frames[n])
        left, right = yellow[:, :160].sum(), yellow[:, 160:].sum()
        return int(left), int(right), int(white.sum())

    # t=0.2: nothing said yet, no caption.
    assert lit(2) == (0, 0, 0)
    # t=0.8: first word lit (left half yellow), second word white.
    left, right, white = lit(8)
    assert left > 30 and right == 0 and white > 30
    # t=1.4: a 0.4 s pause, longer than the bridge: nothing lit, line still shown.
    left, right, white = lit(14)
    assert left == 0 and right == 0 and white > 60
    # t=2.0: second word lit, first white.
    left, right, white = lit(20)
    assert left == 0 and right > 30 and white > 30
    # t=2.7: after the last word, the line lingers unlit; t=3.5: gone.
    left, right, white = lit(27)
    assert left == right == 0 and white > 60
    assert lit(35) == (0, 0, 0)


def test_caption_text_is_escaped(cli: Cli, media: Path) -> None:
    """Override-looking text shows literally: it must not turn the caption red."""
    textured_image(media / "grey.png", color=(90, 90, 90))
    path = write_timeline(media, {
        "output": small_output(),
        "scenes": [{"image": "grey.png", "duration": 2}],
        "captions": {"words": [{"word": "{\\c&H0000FF&}x\\N", "start": 0.2, "end": 1.8}],
                     "style": {"highlight_color": "#FFFFFF", "size": 20}},
    })
    assert cli("render", path, "-o", "e.mp4", "--crf", "10").exit_code == 0
    frame = decode_frames(Path("e.mp4"))[10][110:180].astype(int)
    red = (frame[..., 0] > 180) & (frame[..., 1] < 80) & (frame[..., 2] < 80)
    white = (frame[..., 0] > 200) & (frame[..., 1] > 200) & (frame[..., 2] > 200)
    assert red.sum() == 0 and white.sum() > 100


def test_captions_from_transcript_file_with_narration_offset(cli: Cli, media: Path) -> None:
    textured_image(media / "grey.png", color=(90, 90, 90))
    (media / "words.json").write_text(
        '{"segments": [], "words": [{"word": "MMMM", "start": 0.2, "end": 0.8}]}')
    path = write_timeline(media, {
        "output": small_output(),
        "scenes": [{"image": "grey.png", "duration": 3}],
        "narration": {"path": "narration.wav", "start": 1.0},
        "captions": {"transcript": "words.json", "style": {"size": 24}},
    })
    assert cli("render", path, "-o", "t.mp4", "--crf", "10").exit_code == 0
    frames = decode_frames(Path("t.mp4"))
    assert _caption_pixels(frames[5])[0].sum() == 0  # word time 0.5 s: not yet (offset 1 s)
    assert _caption_pixels(frames[15])[0].sum() > 30  # 1.5 s = word time 0.5 + 1.0


# ---------------------------------------------------------------------------------------
# Audio


def _onsets(samples: np.ndarray, rate: int = 48000, threshold: float = 0.2) -> list[float]:
    loud = np.flatnonzero(np.abs(samples) > threshold)
    onsets, last = [], -1e9
    for i in loud:
        if i - last > rate * 0.2:
            onsets.append(i / rate)
        last = i
    return onsets


def test_audio_stays_in_sync_with_cuts(cli: Cli, media: Path) -> None:
    textured_image(media / "black.png", color=(0, 0, 0))
    textured_image(media / "white.png", color=(255, 255, 255))
    tone_wav(media / "clicks.wav", 4.0, clicks=(1.0, 2.6))
    path = write_timeline(media, {
        "output": {"width": 320, "height": 180, "fps": 25},
        "scenes": [{"image": "black.png", "duration": 1.0},
                   {"image": "white.png", "duration": 1.6},
                   {"image": "black.png", "duration": 1.4}],
        "narration": "clicks.wav",
    })
    assert cli("render", path, "-o", "sync.mp4").exit_code == 0
    frames = decode_frames(Path("sync.mp4"))
    bright = [float(f.mean()) > 128 for f in frames]
    cuts = [i / 25 for i in range(1, len(bright)) if bright[i] != bright[i - 1]]
    onsets = _onsets(decode_audio(Path("sync.mp4")))
    assert cuts == pytest.approx([1.0, 2.6], abs=1e-9)
    assert len(onsets) == 2
    for cut, onset in zip(cuts, onsets, strict=True):
        assert abs(cut - onset) < 1 / 25, (cuts, onsets)  # within one frame


def test_music_ducks_under_narration(cli: Cli, media: Path) -> None:
    rate = 16000
    import wave

    t = np.arange(int(6 * rate)) / rate
    speech = np.where((t >= 2) & (t < 4), 0.5 * np.sin(2 * np.pi * 1000 * t), 0.0)
    with wave.open(str(media / "speech.wav"), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((speech * 32767).astype("<i2").tobytes())
    tone_wav(media / "music.wav", 6.0, freq=300.0)

    def level_300hz(path: Path, start: float, end: float) -> float:
        audio = decode_audio(path)[int(start * 48000): int(end * 48000)]
        spectrum = np.abs(np.fft.rfft(audio * np.hanning(len(audio))))
        freqs = np.fft.rfftfreq(len(audio), 1 / 48000)
        return float(spectrum[(freqs > 280) & (freqs < 320)].max())

    levels = {}
    for ducking in (True, False):
        path = write_timeline(media, {
            "output": small_output(), "scenes": [{"image": "img0.jpg", "duration": 6}],
            "narration": "speech.wav",
            "music": {"path": "music.wav", "volume": 0.5, "ducking": ducking, "fade_out": 0},
        }, name=f"duck{ducking}.json")
        out = Path(f"duck{ducking}.mp4")
        assert cli("render", path, "-o", out).exit_code == 0
        levels[ducking] = (level_300hz(out, 0.5, 1.5), level_300hz(out, 2.5, 3.5))
    quiet_before, during = levels[True]
    assert during < 0.5 * quiet_before, levels  # ducked by more than 6 dB
    plain_before, plain_during = levels[False]
    assert plain_during == pytest.approx(plain_before, rel=0.1)  # no ducking: steady


# ---------------------------------------------------------------------------------------
# Frame ranges (the pieces of a split render)


def test_frame_ranges_join_to_the_whole(cli: Cli, media: Path) -> None:
    path = write_timeline(media, {
        "output": small_output(),
        "scenes": [{"image": "img0.jpg", "duration": 2, "motion": "zoom_in",
                    "transition": {"type": "crossfade", "duration": 0.5}},
                   {"image": "img1.jpg", "duration": 2, "motion": "pan_up"}],
        "narration": "narration.wav",
    })
    assert cli("render", path, "-o", "whole.mp4", "--crf", "8").exit_code == 0
    assert cli("render", path, "-o", "a.mp4", "--frames", "0:18", "--crf", "8").exit_code == 0
    assert cli("render", path, "-o", "b.mp4", "--frames", "18:35", "--crf", "8").exit_code == 0
    whole = decode_frames(Path("whole.mp4"))
    pieces = decode_frames(Path("a.mp4")) + decode_frames(Path("b.mp4"))
    assert len(whole) == len(pieces) == 35
    def diff(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.abs(a.astype(int) - b.astype(int)).mean())

    for n, piece in enumerate(pieces):
        same = diff(whole[n], piece)
        assert same < 2.5, n  # the same picture, up to x264's (different) choices
        # ...and frame-exact: closer to its own frame than to either neighbour.
        for m in (n - 1, n + 1):
            if 0 <= m < len(whole):
                assert same < diff(whole[m], piece), (n, m)
    a, b = probe(Path("a.mp4")), probe(Path("b.mp4"))
    assert abs(a.audio_duration - 1.8) <= 0.05 and abs(b.audio_duration - 1.7) <= 0.05
    bad = cli("render", path, "-o", "c.mp4", "--frames", "30:99")
    assert bad.exit_code == 2 and "not a range inside the video's 0:35 frames" in bad.stderr


# ---------------------------------------------------------------------------------------
# Inputs from the network


@pytest.fixture
def http_server(media: Path) -> Iterator[str]:
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):  # type: ignore[no-untyped-def]
            super().__init__(*a, directory=str(media), **kw)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_image_from_url(cli: Cli, media: Path, http_server: str) -> None:
    path = write_timeline(media, {"output": small_output(), "scenes": [
        {"image": f"{http_server}/img0.jpg", "duration": 1}]})
    result = cli("render", path, "-o", "u.mp4")
    assert result.exit_code == 0, result.stderr
    missing = write_timeline(media, {"output": small_output(), "scenes": [
        {"image": "img0.jpg", "duration": 1}, {"image": f"{http_server}/nope.jpg", "duration": 1}]},
        name="missing.json")
    result = cli("render", missing, "-o", "v.mp4")
    assert result.exit_code == 2
    assert f"scenes[1].image: {http_server}/nope.jpg answered HTTP 404" in result.stderr
    assert not Path("v.mp4").exists()


# ---------------------------------------------------------------------------------------
# Bad input: exit 2, a message naming the field, nothing written


def _bad(cli, media: Path, data: dict, *expected: str) -> None:  # type: ignore[no-untyped-def,type-arg]
    path = write_timeline(media, data, name="bad.json")
    before = _files(Path.cwd())
    result = cli("render", path, "-o", "bad.mp4")
    assert result.exit_code == 2, result.stderr
    for text in expected:
        assert text in result.stderr, result.stderr
    assert _files(Path.cwd()) == before  # nothing written, no temporary left


def test_missing_image_names_scene_and_path(cli: Cli, media: Path) -> None:
    _bad(cli, media, {"output": small_output(), "scenes": [
        {"image": "img0.jpg", "duration": 1}, {"image": "gone.png", "duration": 1}]},
        f"scenes[1].image: file not found: {media / 'gone.png'}")


def test_corrupt_and_truncated_images(cli: Cli, media: Path) -> None:
    (media / "text.jpg").write_text("this is not an image")
    data = (media / "img0.jpg").read_bytes()
    (media / "cut.jpg").write_bytes(data[: len(data) // 2])
    _bad(cli, media, {"output": small_output(), "scenes": [
        {"image": "text.jpg", "duration": 1}, {"image": "cut.jpg", "duration": 1}]},
        "scenes[0].image:", "is not an image Pillow can read",
        "scenes[1].image:", "is corrupt or truncated")


def test_missing_and_non_audio_narration(cli: Cli, media: Path) -> None:
    _bad(cli, media, {"output": small_output(), "scenes": [{"image": "img0.jpg", "duration": 1}],
                      "narration": "nope.wav"},
         f"narration.path: file not found: {media / 'nope.wav'}")
    _bad(cli, media, {"output": small_output(), "scenes": [{"image": "img0.jpg", "duration": 1}],
                      "music": "img0.jpg"},
         "music.path:", "has no audio stream")


def test_words_outside_the_video(cli: Cli, media: Path) -> None:
    _bad(cli, media, {"output": small_output(), "scenes": [{"image": "img0.jpg", "duration": 2}],
                      "captions": {"words": [{"word": "fine", "start": 0.1, "end": 0.5},
                                             {"word": "late", "start": 1.8, "end": 2.6}]}},
         "captions.words[1] ('late'): 1.800-2.600 s is outside the video (0-2.000 s)")


def test_missing_transcript_and_font(cli: Cli, media: Path) -> None:
    _bad(cli, media, {"output": small_output(), "scenes": [{"image": "img0.jpg", "duration": 2}],
                      "captions": {"transcript": "nope.json"}},
         "captions.transcript: transcript file not found")
    _bad(cli, media, {"output": small_output(), "scenes": [{"image": "img0.jpg", "duration": 2}],
                      "captions": {"words": [{"word": "a", "start": 0, "end": 1}],
                                   "style": {"font": "fonts/missing.ttf"}}},
         "captions.style.font: font file not found")


def test_existing_output_is_kept_unless_overwrite(cli: Cli, media: Path) -> None:
    path = write_timeline(media, {"output": small_output(),
                                  "scenes": [{"image": "img0.jpg", "duration": 1}]})
    Path("keep.mp4").write_bytes(b"precious")
    result = cli("render", path, "-o", "keep.mp4")
    assert result.exit_code == 2 and "already exists; pass --overwrite" in result.stderr
    assert Path("keep.mp4").read_bytes() == b"precious"
    assert cli("render", path, "-o", "keep.mp4", "--overwrite").exit_code == 0
    assert probe(Path("keep.mp4")).video_frames == 10


def test_output_folder_missing(cli: Cli, media: Path) -> None:
    path = write_timeline(media, {"output": small_output(),
                                  "scenes": [{"image": "img0.jpg", "duration": 1}]})
    result = cli("render", path, "-o", "no/such/dir/out.mp4")
    assert result.exit_code == 2 and "output folder" in result.stderr
    assert "does not exist" in result.stderr


def test_ffmpeg_failure_exits_1_with_its_last_lines(cli: Cli, media: Path, tmp_path: Path) -> None:
    fake = tmp_path / "ffmpeg"
    fake.write_text("#!/bin/sh\ncat > /dev/null\necho 'line one' >&2\n"
                    "echo 'Error: x264 exploded' >&2\nexit 1\n")
    fake.chmod(0o755)
    path = write_timeline(media, {"output": small_output(),
                                  "scenes": [{"image": "img0.jpg", "duration": 1}]})
    before = _files(Path.cwd())
    result = cli("render", path, "-o", "f.mp4", "--ffmpeg", fake, "--json")
    assert result.exit_code == 1
    err = result.json()["error"]
    assert err["code"] == "FFMPEG_FAILED"
    assert err["details"][-1] == "Error: x264 exploded"
    assert _files(Path.cwd()) == before


def test_ffmpeg_path_that_is_not_executable(cli: Cli, media: Path) -> None:
    path = write_timeline(media, {"output": small_output(),
                                  "scenes": [{"image": "img0.jpg", "duration": 1}]})
    result = cli("render", path, "-o", "f.mp4", "--ffmpeg", "/nonexistent/ffmpeg")
    assert result.exit_code == 2 and "--ffmpeg: /nonexistent/ffmpeg is not an executable" in (
        result.stderr)


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143),
                                             (signal.SIGHUP, 129)])
def test_interrupt_leaves_nothing(media: Path, isolated_env: Path, tmp_path: Path,
                                  signum: int, code: int) -> None:
    """Ctrl-C, SIGTERM and SIGHUP all end a render cleanly: one JSON error, exit 128+N, no
    partial file beside the output, no temporary folder left behind."""
    textured_image(media / "big.jpg", 1920, 1080)
    path = write_timeline(media, {"output": {"width": 1280, "height": 720, "fps": 30},
                                  "scenes": [{"image": "big.jpg", "duration": 60,
                                              "motion": "zoom_in"}]})
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    env = {**os.environ, "TMPDIR": str(scratch)}
    proc = subprocess.Popen([sys.executable, "-m", "canvascast_cli", "--json", "render",
                             str(path), "-o", "int.mp4"], cwd=isolated_env, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    # Wait until the render is under way: its temporary file has data.
    while time.monotonic() < deadline:
        parts = [p for p in isolated_env.iterdir() if p.name.endswith(".part.mp4")]
        if parts and parts[0].stat().st_size > 0:
            break
        time.sleep(0.05)
    else:
        proc.kill()
        pytest.fail("render never started writing")
    proc.send_signal(signum)
    stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == code, stderr
    error = json.loads(stdout)["error"]
    assert error["code"] == "INTERRUPTED" and "interrupted" in error["message"]
    assert not any(p.name.endswith(".mp4") for p in isolated_env.iterdir())
    assert list(scratch.iterdir()) == []  # the canvascast-render-* work folder is gone


# ---------------------------------------------------------------------------------------
# Output conventions


def test_plain_mode_prints_path_on_stdout_and_notes_on_stderr(cli: Cli, media: Path) -> None:
    path = write_timeline(media, {"output": small_output(),
                                  "scenes": [{"image": "img0.jpg", "duration": 1}]})
    result = cli("render", path, "-o", "p.mp4")
    assert result.exit_code == 0
    assert result.stdout.strip() == str(Path("p.mp4").absolute())
    assert "Rendered" in result.stderr and "would cost about $" in result.stderr
    quiet = cli("--quiet", "render", path, "-o", "q.mp4")
    assert quiet.exit_code == 0 and quiet.stderr == ""


# ---------------------------------------------------------------------------------------
# The zero-copy pipe


def test_zero_copy_pipe_delivers_the_same_frames(media: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """vmsplice hands frame pages to ffmpeg without copying; the pages must not change
    before ffmpeg reads them. Frames bigger than the pipe take that path: the decoded
    video must equal the one written with plain copies."""
    import canvascast_cli.engines.render.ffmpeg as ff
    from canvascast_cli.engines.render.engine import RenderOptions, render
    from canvascast_cli.engines.render.inputs import resolve_timeline
    from canvascast_cli.timeline import parse_timeline

    if ff._VMSPLICE is None:
        pytest.skip("vmsplice is Linux-only")
    timeline = parse_timeline({
        "output": {"width": 1280, "height": 720, "fps": 10},
        "scenes": [{"image": "img0.jpg", "duration": 1.5, "motion": "zoom_in",
                    "transition": {"type": "crossfade", "duration": 0.5}},
                   {"image": "img1.jpg", "duration": 1.5, "motion": "pan_down"}]})
    resolved = resolve_timeline(timeline, media)
    assert 1280 * 720 * 3 // 2 > 1 << 20  # bigger than the 1 MiB pipe
    digests = []
    for zero_copy in (True, False):
        if not zero_copy:
            monkeypatch.setattr(ff, "_VMSPLICE", None)
        out = Path(f"zc{zero_copy}.mp4")
        render(resolved, out, options=RenderOptions(crf=18))
        digests.append(hashlib.sha256(b"".join(f.tobytes() for f in decode_frames(out)))
                       .hexdigest())
    assert digests[0] == digests[1]


def test_caption_font_from_a_file(cli: Cli, media: Path) -> None:
    import shutil

    from canvascast_cli.engines.render.engine import BUNDLED_FONT_DIR

    (media / "fonts").mkdir()
    shutil.copy(BUNDLED_FONT_DIR / "DejaVuSans-Bold.ttf", media / "fonts" / "Mine.ttf")
    textured_image(media / "grey.png", color=(90, 90, 90))
    path = write_timeline(media, {
        "output": small_output(), "scenes": [{"image": "grey.png", "duration": 2}],
        "captions": {"words": [{"word": "MMMM", "start": 0.2, "end": 1.8}],
                     "style": {"font": "fonts/Mine.ttf", "size": 24}}})
    assert cli("render", path, "-o", "font.mp4", "--crf", "10").exit_code == 0
    assert _caption_pixels(decode_frames(Path("font.mp4"))[10])[0].sum() > 30
    (media / "fonts" / "Broken.ttf").write_text("not a font")
    _bad(cli, media, {"output": small_output(), "scenes": [{"image": "grey.png", "duration": 2}],
                      "captions": {"words": [{"word": "a", "start": 0, "end": 1}],
                                   "style": {"font": "fonts/Broken.ttf"}}},
         "captions.style.font:", "is not a font file")
