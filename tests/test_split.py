"""Split renders: pieces rendered apart and joined by stream copy (real ffmpeg, tiny
timelines: 320x180 at 10 fps, 31 frames)."""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import os
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from canvascast_cli.engines.render import split
from canvascast_cli.engines.render.engine import RenderOptions, render
from canvascast_cli.engines.render.ffmpeg import ffmpeg_exe
from canvascast_cli.errors import FFmpegError, InvalidInput, JobFailed
from tests.helpers import Cli, decode_audio, decode_frames, small_output, tone_wav, write_timeline

TOTAL = 31  # frames: 20 + 17 - 6 (a 0.6 s crossfade over frames 14..19)


@pytest.fixture
def timeline(media: Path) -> Path:
    tone_wav(media / "music.wav", 4.0, freq=220.0)
    return write_timeline(media, {
        "output": small_output(),
        "scenes": [{"image": "img0.jpg", "duration": 2.0, "motion": "zoom_in",
                    "transition": {"type": "crossfade", "duration": 0.6}},
                   {"image": "img1.jpg", "duration": 1.7, "motion": "pan_up"}],
        "narration": "narration.wav",
        "music": {"path": "music.wav", "volume": 0.5, "ducking": True, "fade_out": 0.5},
        # MMMM is on screen over frames 12..18: across the seams at 15 and 16.
        "captions": {"words": [{"word": "MMMM", "start": 1.2, "end": 1.9},
                               {"word": "WWWW", "start": 2.2, "end": 2.9}],
                     "style": {"size": 24}},
    })


def _job(timeline: Path, output: Path, crf: int = 20) -> Any:
    from canvascast_cli.engines.render.job import RenderJob
    from canvascast_cli.timeline import load_timeline_file

    return RenderJob(timeline=load_timeline_file(timeline), base_dir=timeline.parent,
                     output=output, options=RenderOptions(crf=crf), overwrite=True)


def _packets(path: Path) -> list[tuple[int, int, bool, bytes]]:
    """(pts, dts, key, data) of each video packet, in decode order."""
    import av

    with av.open(str(path)) as c:
        return [(p.pts, p.dts, p.is_keyframe, bytes(p))
                for p in c.demux(c.streams.video[0]) if p.size]


def _extradata(path: Path) -> bytes:
    import av

    with av.open(str(path)) as c:
        return bytes(c.streams.video[0].codec_context.extradata)


def _digests(path: Path) -> list[str]:
    return [hashlib.md5(f.tobytes()).hexdigest() for f in decode_frames(path, "yuv420p")]


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 99.0 if mse == 0 else 10 * np.log10(255.0**2 / mse)


# ---------------------------------------------------------------------------------------
# Planning


def test_plan_pieces() -> None:
    assert split.plan(31, 1) == [(0, 31)]
    assert split.plan(31, 2) == [(0, 16), (16, 31)]  # uneven
    assert split.plan(31, 7) == [(0, 5), (5, 10), (10, 15), (15, 20), (20, 25), (25, 30),
                                 (30, 31)]  # a 1-frame last piece
    assert split.plan(10, 8) == [(0, 3), (3, 6), (6, 9), (9, 10)]  # >= 3 frames but last
    assert split.plan(2, 5) == [(0, 2)]
    for total, n in ((31, 3), (900, 7), (18000, 20)):
        split.check_plan(split.plan(total, n), total)
    with pytest.raises(InvalidInput, match="follow on"):
        split.check_plan([(0, 5), (6, 31)], 31)
    with pytest.raises(InvalidInput, match="at least 3 frames"):
        split.check_plan([(0, 2), (2, 31)], 31)
    with pytest.raises(InvalidInput, match="end at frame 30"):
        split.check_plan([(0, 30)], 31)
    assert split.parse_split("auto") == "auto" and split.parse_split("4") == 4
    for bad in ("0", "x", "1001", "-2"):
        with pytest.raises(InvalidInput):
            split.parse_split(bad)
    # auto: the cores locally; remotely a piece per minute of video, <= max_containers.
    assert split.auto_pieces(900, 30, local=True, max_containers=10, cpus=4) == 4
    assert split.auto_pieces(18000, 30, local=False, max_containers=50) == 10
    assert split.auto_pieces(18000, 30, local=False, max_containers=5) == 5
    assert split.auto_pieces(900, 30, local=False, max_containers=50) == 1


# ---------------------------------------------------------------------------------------
# Split against unsplit


@pytest.mark.parametrize("pieces", [2, 7])
def test_lossless_split_render_equals_the_unsplit_one(timeline: Path, pieces: int) -> None:
    """With x264 lossless (crf 0) the decoded frames of any split equal the unsplit
    render's bit for bit, the crossfade and the caption across the seams included."""
    from canvascast_cli.engines.render.job import run_render

    whole = run_render(_job(timeline, timeline.parent / "whole.mp4", crf=0))
    ranges = split.plan(TOTAL, pieces)
    joined = split.render_local(_job(timeline, timeline.parent / "split.mp4", crf=0),
                                ranges, workers=2)
    assert joined.frames == whole.frames == TOTAL
    assert joined.duration == whole.duration
    a, b = Path(whole.output), Path(joined.output)
    assert _digests(b) == _digests(a)
    pa, pb = _packets(a), _packets(b)
    assert sorted(p[0] for p in pb) == sorted(p[0] for p in pa)  # pts identical
    dts = [p[1] for p in pb]
    assert all(x < y for x, y in itertools.pairwise(dts))
    starts = {start for start, _ in ranges}
    by_pts = sorted(pb)
    step = by_pts[1][0] - by_pts[0][0]
    keys = {pts // step for pts, _d, key, _data in pb if key}
    assert starts <= keys  # every piece starts on a key frame...
    idr = split._is_idr
    extradata = _extradata(b)
    for pts, _d, _k, data in pb:
        if pts // step in starts:
            assert idr(data, extradata), pts // step  # ...an IDR
    # The audio: made once, the same mix as the unsplit render's, from 0.
    # (The last AAC frames with ducking differ between two *unsplit* renders too: the
    # compressor's end of stream is not deterministic in ffmpeg; so the tail is close.)
    sa, sb = decode_audio(a), decode_audio(b)
    body = len(sa) - 48000 * 15 // 100
    assert len(sa) == len(sb) and np.abs(sa[:body] - sb[:body]).max() < 1e-6
    assert np.abs(sa - sb).max() < 0.01
    data = b.read_bytes()
    assert data.find(b"moov") < data.find(b"mdat")  # faststart, like the unsplit one


def test_join_is_lossless_and_close_to_the_unsplit_render(timeline: Path) -> None:
    """At crf 20: the joined video's frames are the pieces' frames (stream copy), and
    within a tight PSNR of the unsplit render (x264 chose other frame types)."""
    from canvascast_cli.engines.render.inputs import resolve_timeline
    from canvascast_cli.engines.render.job import run_render

    job = _job(timeline, timeline.parent / "joined.mp4")
    resolved = resolve_timeline(job.timeline, job.base_dir)
    ranges = [(0, 16), (16, 30), (30, 31)]
    pieces = []
    for n, frames in enumerate(ranges):
        path = timeline.parent / f"piece{n}.mp4"
        render(resolved, path, options=RenderOptions(frame_range=frames, video_only=True))
        pieces.append(path)
    assert len({_extradata(p) for p in pieces}) == 1  # the same SPS/PPS
    result = split.join(resolved, pieces, ranges, job.output)
    joined = _digests(Path(result.output))
    assert joined == [d for p in pieces for d in _digests(p)]  # framemd5: lossless join
    whole = run_render(_job(timeline, timeline.parent / "whole.mp4"))
    worst = min(_psnr(x, y) for x, y in zip(decode_frames(Path(whole.output)),
                                            decode_frames(Path(result.output)), strict=True))
    assert worst > 29, worst  # two crf-20 encodes of noisy 320x180 stills: ~31 dB

    # A missing piece, or one of the wrong length, blocks the join: nothing is written.
    out = timeline.parent / "never.mp4"
    with pytest.raises(JobFailed) as missing:
        split.join(resolved, [pieces[0], timeline.parent / "gone.mp4", pieces[2]], ranges, out)
    assert "piece 1 (frames 16:30): missing" in missing.value.details
    with pytest.raises(JobFailed) as wrong:
        split.join(resolved, [pieces[0], pieces[0], pieces[2]], ranges, out)
    assert "piece 1 (frames 16:30): has 16 frames, not 14" in wrong.value.details
    with pytest.raises(JobFailed) as audio:  # an unsplit render is no piece
        split.join(resolved, [Path(whole.output)], [(0, 31)], out)
    assert any("has audio" in d for d in audio.value.details)
    assert not out.exists()


def test_join_with_the_audio_made_beforehand(timeline: Path) -> None:
    """The audio made apart (once, as the final AAC) and handed to the join: the join
    only copies; the result equals a join that made the audio itself. Audio that is not
    the video's (a video, another length) is refused before anything is written."""
    from canvascast_cli.engines.render.inputs import resolve_timeline

    resolved = resolve_timeline(_job(timeline, timeline.parent / "x.mp4").timeline,
                                timeline.parent)
    ranges = split.plan(TOTAL, 2)
    pieces = []
    for n, frames in enumerate(ranges):
        pieces.append(timeline.parent / f"piece{n}.mp4")
        render(resolved, pieces[-1], options=RenderOptions(frame_range=frames,
                                                            video_only=True))
    audio = split.make_audio(resolved, timeline.parent / "audio.m4a")
    given = Path(split.join(resolved, pieces, ranges, timeline.parent / "a.mp4",
                            audio=audio).output)
    made = Path(split.join(resolved, pieces, ranges, timeline.parent / "b.mp4").output)
    assert _digests(given) == _digests(made)
    sa, sb = decode_audio(given), decode_audio(made)  # the tail: see the test above
    body = len(sa) - 48000 * 15 // 100
    assert len(sa) == len(sb) and np.array_equal(sa[:body], sb[:body])
    assert np.abs(sa - sb).max() < 0.01
    assert [p[:2] for p in _packets(given)] == [p[:2] for p in _packets(made)]

    out = timeline.parent / "never.mp4"
    with pytest.raises(JobFailed, match="not an audio-only file"):
        split.join(resolved, pieces, ranges, out, audio=pieces[0])
    short = timeline.parent / "short.m4a"  # 2 s of AAC
    subprocess.run([ffmpeg_exe(), "-loglevel", "error", "-f", "lavfi", "-i",
                    "sine=duration=2:sample_rate=48000", "-c:a", "aac", str(short)],
                   check=True)
    with pytest.raises(JobFailed, match=r"2\.000 s of audio for a 3\.100 s video"):
        split.join(resolved, pieces, ranges, out, audio=short)
    assert not out.exists()
    assert not list(timeline.parent.glob(".never.mp4.*"))  # no half-written file either


def _ffmpeg_children() -> list[int]:
    """This process's child processes that run ffmpeg (Linux /proc)."""
    found = []
    for task in Path("/proc/self/task").iterdir():
        for pid in (task / "children").read_text().split():
            with contextlib.suppress(OSError):
                if b"ffmpeg" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    found.append(int(pid))
    return found


def test_seam_frames_are_the_renderers_own(timeline: Path) -> None:
    """Before x264: a piece's first frames (made by a fresh compositor, as a piece's
    worker makes them) are bit for bit the frames the whole render makes there."""
    from canvascast_cli.engines.render.compose import Compositor
    from canvascast_cli.engines.render.frames import FrameBuffer
    from canvascast_cli.engines.render.inputs import resolve_timeline

    job = _job(timeline, timeline.parent / "x.mp4")
    resolved = resolve_timeline(job.timeline, job.base_dir)
    out = resolved.output

    def frames(numbers: range) -> list[bytes]:
        comp = Compositor(resolved.timeline, resolved.images)
        try:
            return [bytes(comp.frame(n, FrameBuffer(out.width, out.height)))
                    for n in numbers]
        finally:
            comp.close()

    whole = frames(range(TOTAL))
    for start in (5, 15, 16, 30):  # in and around the crossfade, and a last frame
        assert frames(range(start, min(start + 3, TOTAL))) == whole[start: start + 3]


# ---------------------------------------------------------------------------------------
# Failures: a piece retried alone


def flaky_piece(resolved: Any, path: Path, options: Any, index: int) -> Any:
    """A piece function (run in the pool's workers) whose piece 1 fails its first try."""
    marks = Path(os.environ["CANVASCAST_TEST_SPLIT_MARKS"])
    tries = len(list(marks.glob(f"{index}-*")))
    (marks / f"{index}-{tries}").touch()
    if index == 1 and (tries == 0 or os.environ.get("CANVASCAST_TEST_SPLIT_FAIL")):
        raise FFmpegError("ffmpeg failed (injected)")
    return split.render_piece(resolved, path, options, index)


def test_a_failed_piece_is_retried_alone(timeline: Path, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    monkeypatch.setenv("CANVASCAST_TEST_SPLIT_MARKS", str(marks))
    notes: list[str] = []
    progress: list[float] = []
    result = split.render_local(_job(timeline, timeline.parent / "r.mp4"),
                                split.plan(TOTAL, 3), workers=2, piece=flaky_piece,
                                note=notes.append, progress=lambda d, t: progress.append(d))
    assert result.frames == TOTAL
    assert sorted(p.name for p in marks.iterdir()) == ["0-0", "1-0", "1-1", "2-0"]
    assert len(notes) == 1 and "piece 1 (frames 11:22) failed" in notes[0]
    assert progress and max(progress) == TOTAL  # frames across all pieces

    monkeypatch.setenv("CANVASCAST_TEST_SPLIT_FAIL", "1")  # fails every try: no video
    # The audio made beside the pieces is stopped with them: here an ffmpeg that would
    # never end on its own.
    endless = [ffmpeg_exe(), "-nostdin", "-loglevel", "error", "-re", "-f", "lavfi",
               "-i", "anullsrc", "-f", "null", "-"]
    monkeypatch.setattr(split, "audio_command", lambda *_a: endless)
    with pytest.raises(FFmpegError, match="injected"):
        split.render_local(_job(timeline, timeline.parent / "f.mp4"), split.plan(TOTAL, 3),
                           workers=2, piece=flaky_piece)
    assert not (timeline.parent / "f.mp4").exists()
    assert _ffmpeg_children() == []


# ---------------------------------------------------------------------------------------
# The command


def test_render_split_from_the_command_line(cli: Cli, timeline: Path) -> None:
    done = cli("render", timeline, "-o", "s.mp4", "--split", "3", "--local", "--json")
    assert done.exit_code == 0, done.stderr
    body = done.json()
    assert body["frames"] == TOTAL and body["cache"] == "miss"
    assert len(decode_frames(Path("s.mp4"))) == TOTAL
    # An unsplit render is another cache entry (other bytes); the same split is a hit.
    whole = cli("render", timeline, "-o", "w.mp4", "--local", "--json")
    assert whole.json()["cache"] == "miss"
    again = cli("render", timeline, "-o", "s2.mp4", "--split", "3", "--local", "--json")
    assert again.json()["cache"] == "hit"
    assert Path("s2.mp4").read_bytes() == Path("s.mp4").read_bytes()
    bad = cli("render", timeline, "-o", "b.mp4", "--split", "2", "--frames", "0:10")
    assert bad.exit_code == 2 and "cannot be combined with --frames" in bad.stderr
    bad = cli("render", timeline, "-o", "b.mp4", "--split", "zero")
    assert bad.exit_code == 2 and "--split" in bad.stderr


# ---------------------------------------------------------------------------------------
# On a job host (`canvascast serve`, Modal): pieces and the join as jobs on the blob store


def test_pieces_and_join_as_jobs_on_the_host(timeline: Path, tmp_path: Path) -> None:
    from canvascast_cli.protocol import blob_ref, rewrite_refs, timeline_refs
    from canvascast_cli.server import work
    from canvascast_cli.server.blobs import BlobStore

    store = BlobStore(tmp_path / "store")
    data = __import__("json").loads(timeline.read_text())
    mapping = {}
    for ref in set(timeline_refs(data).values()):
        sha, _ = store.put_file(timeline.parent / ref)
        mapping[ref] = blob_ref(sha, Path(ref).suffix)
    doc = rewrite_refs(data, mapping)
    ranges = split.plan(TOTAL, 2)
    pieces = []
    for frames in ranges:
        result = work.execute("render_video", {"timeline": doc, "options": {
            "frame_range": list(frames), "video_only": True}}, store)
        artifact = result.artifact("piece.mp4")
        assert artifact is not None and result.summary["frames"] == frames[1] - frames[0]
        pieces.append({"sha256": artifact.sha256, "frames": list(frames)})
    joined = work.execute("render_video", {"timeline": doc, "options": {"pieces": pieces}},
                          store)
    video = joined.artifact("video.mp4")
    assert video is not None and joined.summary["frames"] == TOTAL
    assert len(decode_frames(store.path(video.sha256))) == TOTAL
    # A piece that is not in the store: refused at submit, naming it.
    gone = [pieces[0], {"sha256": "0" * 64, "frames": list(ranges[1])}]
    with pytest.raises(InvalidInput) as missing:
        work.check_inputs("render_video", {"timeline": doc, "options": {"pieces": gone}},
                          store)
    assert any("options.pieces[1]" in d for d in missing.value.details)
    # The audio as a job of its own, then a join that only copies it in: the same
    # frames and sound as the join that mixed it.
    sound = work.execute("render_video", {"timeline": doc, "options": {"audio_only": True}},
                         store).artifact("audio.m4a")
    assert sound is not None
    copied = work.execute("render_video", {"timeline": doc, "options": {
        "pieces": pieces, "audio": sound.sha256}}, store).artifact("video.mp4")
    assert copied is not None
    assert len(decode_frames(store.path(copied.sha256))) == TOTAL
    assert abs(decode_audio(store.path(copied.sha256))
               - decode_audio(store.path(video.sha256))).max() < 1e-3
    with pytest.raises(InvalidInput) as missing:  # an audio blob not in the store
        work.check_inputs("render_video", {"timeline": doc, "options": {
            "pieces": pieces, "audio": "0" * 64}}, store)
    assert any("options.audio" in d for d in missing.value.details)
    with pytest.raises(InvalidInput):  # a join is not also a piece
        work.check_inputs("render_video", {"timeline": doc, "options": {
            "pieces": pieces, "video_only": True}}, store)
