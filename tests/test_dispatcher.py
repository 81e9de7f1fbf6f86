"""The dispatcher at its seams: a fake ``Backend`` (scripted job statuses, request
retries through the policy the dispatcher hands it), a real state file, a clock that
moves only when something sleeps.

What it guards: job attempts and request retries are not multiplied; only retryable
failures are retried and counted by the breaker; blob references in errors come back as
the user's own files; a finished job is never failed by its bookkeeping (a locked state
file); what ``--remote`` and ``jobs wait`` exit with is one mapping.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from canvascast_cli import errors
from canvascast_cli.config import Settings, load_config
from canvascast_cli.dispatch.backend import Backend, Choice
from canvascast_cli.dispatch.breaker import SQLiteStorage
from canvascast_cli.dispatch.dispatcher import Dispatcher, Outcome, RemoteJob, unavailable
from canvascast_cli.dispatch.ledger import RECORD_DEADLINE, Attempt, Ledger
from canvascast_cli.dispatch.state import StateDB
from canvascast_cli.protocol import (
    Artifact,
    ErrorBody,
    ImageRequest,
    ImagesPayload,
    JobResult,
    JobStatus,
    Payload,
    sha256_file,
)
from canvascast_cli.retry import RetryPolicy

FUNCTION = "generate_images"
SHA = "c" * 64
OUTPUT = b"the job's artifact"
OUTPUT_SHA = __import__("hashlib").sha256(OUTPUT).hexdigest()


class Clock:
    """Unix time that moves only when something sleeps (every sleep is recorded)."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


Poll = JobStatus | errors.CanvasCastError


@dataclass
class FakeBackend:
    """``dispatch.backend.Backend`` over a script: each submission takes the next list of
    poll results (a ``JobStatus``, or an error the request fails with). Requests go
    through ``retry`` as the real backends' do, so a failing request is tried up to the
    policy's attempts."""

    retry: RetryPolicy
    jobs: list[list[Poll]]
    submit_errors: list[errors.CanvasCastError] = field(default_factory=list)
    stored: set[str] = field(default_factory=set)
    calls: list[str] = field(default_factory=list)
    name: str = "http"
    on_status: Callable[[], None] | None = None  # before each poll (another process)
    _polls: Iterator[Poll] = field(default_factory=lambda: iter(()))
    closed: bool = False

    def count(self, call: str) -> int:
        return sum(1 for c in self.calls if c == call)

    def missing(self, shas: list[str]) -> list[str]:
        return self.retry.call(self._missing, shas)

    def _missing(self, shas: list[str]) -> list[str]:
        self.calls.append("missing")
        return [s for s in shas if s not in self.stored]

    def upload(self, sha: str, path: Path, on_bytes: Callable[[int], None] | None = None
               ) -> int:
        self.calls.append("upload")
        self.stored.add(sha)
        return path.stat().st_size

    def submit(self, function: str, payload: Payload) -> str:
        return self.retry.call(self._submit, function)

    def _submit(self, function: str) -> str:
        self.calls.append("submit")
        if self.submit_errors:
            raise self.submit_errors.pop(0)
        number = self.count("submit")
        self._polls = iter(self.jobs[min(number, len(self.jobs)) - 1])
        return job_id(number)

    def status(self, job_id: str, wait: float = 0.0) -> JobStatus:
        return self.retry.call(self._status, job_id)

    def _status(self, job_id: str) -> JobStatus:
        self.calls.append("status")
        if self.on_status is not None:
            self.on_status()
        poll = next(self._polls)
        if isinstance(poll, errors.CanvasCastError):
            raise poll
        return poll.model_copy(update={"id": job_id})

    def download(self, sha: str, into: Path, on_bytes: Callable[[int], None] | None = None
                 ) -> int:
        self.calls.append("download")
        into.write_bytes(OUTPUT)
        return len(OUTPUT)

    def cancel(self, job_id: str) -> JobStatus:
        self.calls.append("cancel")
        return JobStatus(id=job_id, state="cancelled")

    def close(self) -> None:
        self.closed = True


def job_id(number: int) -> str:
    return f"job-{number:032x}"


def done() -> JobStatus:
    return JobStatus(id="-", function=FUNCTION, state="done", result=JobResult(
        artifacts=[Artifact(name="out.bin", sha256=OUTPUT_SHA, size=len(OUTPUT))],
        billed_seconds=2.0, cold_start=False, container_id="c-1"))


def running() -> JobStatus:
    return JobStatus(id="-", function=FUNCTION, state="running")


def failed(code: str, message: str = "it broke", *, retryable: bool = False,
           details: list[str] | None = None) -> JobStatus:
    return JobStatus(id="-", function=FUNCTION, state="failed", error=ErrorBody(
        code=code, message=message, retryable=retryable, details=details or []))


@dataclass
class Rig:
    """A dispatcher, its fake backend (made when the dispatcher asks for one), its clock
    and everything it said."""

    dispatcher: Dispatcher
    clock: Clock
    db: StateDB
    script: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    debug: list[str] = field(default_factory=list)
    backends: list[FakeBackend] = field(default_factory=list)

    @property
    def backend(self) -> FakeBackend:
        assert len(self.backends) == 1, "one backend per run"
        return self.backends[0]

    def failures(self) -> int:
        return SQLiteStorage(self.db).get(f"http:{FUNCTION}").failures

    def rows(self) -> list[Attempt]:
        return list(reversed(Ledger(self.db).history(FUNCTION)))


def settings() -> Settings:
    return load_config(search=False, env={}).settings


@pytest.fixture
def make(tmp_path: Path) -> Callable[..., Rig]:
    def build(*jobs: list[Poll], remote_only: bool = True,
              submit_errors: list[errors.CanvasCastError] | None = None,
              on_status: Callable[[], None] | None = None) -> Rig:
        clock = Clock()
        db = StateDB(tmp_path / "state.sqlite3", busy_timeout=0)
        script: dict[str, Any] = {"jobs": list(jobs), "submit_errors": submit_errors or []}
        rig: Rig

        def make_backend(_choice: Choice, policy: RetryPolicy) -> Backend:
            backend = FakeBackend(policy, list(script["jobs"]),
                                  submit_errors=list(script["submit_errors"]),
                                  on_status=on_status)
            rig.backends.append(backend)
            return backend

        dispatcher = Dispatcher(
            settings=settings(), choice=Choice("http", "test", endpoint="http://jobs.test",
                                               token="t"),
            make_backend=make_backend, remote_only=remote_only, sleep=clock.sleep,
            clock=clock, state=db)
        rig = Rig(dispatcher, clock, db, script)
        dispatcher.note, dispatcher.warn = rig.notes.append, rig.warnings.append
        dispatcher.debug = rig.debug.append
        return rig

    return build


def payload() -> ImagesPayload:
    return ImagesPayload(provider="placeholder", model="placeholder-card-v1", requests=[
        ImageRequest(index=0, prompt="a kite", width=64, height=64, aspect_ratio="1:1",
                     seed=1)])


def job(**extra: Any) -> RemoteJob:
    return RemoteJob(FUNCTION, payload(), units=1.0, unit="images", **extra)


def fetch_into(path: Path) -> Callable[[Backend, JobStatus], Path]:
    def fetch(backend: Backend, status: JobStatus) -> Path:
        assert status.result is not None
        backend.download(status.result.artifacts[0].sha256, path)
        return path

    return fetch


def never_local() -> Any:
    raise AssertionError("ran locally")


def run(rig: Rig, tmp_path: Path, remote_job: RemoteJob | None = None,
        local: Callable[[], Any] = never_local) -> Outcome[Any]:
    return rig.dispatcher.run(remote_job or job(), local=local,
                              fetch=fetch_into(tmp_path / "out.bin"))


# -- the happy path, and what it records --------------------------------------------------


def test_a_job_runs_once_and_is_recorded(make: Callable[..., Rig], tmp_path: Path) -> None:
    rig = make([running(), done()])
    outcome = run(rig, tmp_path)
    assert outcome.value == tmp_path / "out.bin" and outcome.value.read_bytes() == OUTPUT
    assert (outcome.backend, outcome.attempts, outcome.job_id) == ("http", 1, job_id(1))
    assert outcome.bytes_down == len(OUTPUT) and outcome.billed_seconds == 2.0
    assert rig.backend.calls == ["submit", "status", "status", "download"]
    assert rig.backend.closed and rig.clock.sleeps == []
    assert [(r.attempt, r.status, r.job_id) for r in rig.rows()] == [(1, "ok", job_id(1))]
    assert rig.warnings == []


# -- bookkeeping never fails a finished job -------------------------------------------


@pytest.fixture
def locked(tmp_path: Path) -> Iterator[Callable[[], None]]:
    """``lock()`` makes another process's connection hold the state file's write lock
    (``BEGIN EXCLUSIVE``) until the test ends."""
    holder = sqlite3.connect(tmp_path / "state.sqlite3", isolation_level=None)

    def lock() -> None:
        holder.execute("BEGIN EXCLUSIVE")

    yield lock
    if holder.in_transaction:
        holder.execute("ROLLBACK")
    holder.close()


def test_a_locked_state_file_never_fails_a_finished_job(
        make: Callable[..., Rig], tmp_path: Path, locked: Callable[[], None]) -> None:
    """Guards: another process holding the state file's lock turned a finished remote
    job into JOB_FAILED ('database is locked') after its output was written, and the
    ledger's waits were real sleeps. Now the ledger retries on the dispatcher's own
    clock and sleep until its deadline, then the job ends as it did, with a warning."""
    rig = make([done()])
    out = tmp_path / "out.bin"

    def fetch(backend: Backend, status: JobStatus) -> Path:
        backend.download(OUTPUT_SHA, out)
        locked()  # another process takes the lock once the output is written
        return out

    began = rig.clock.now
    outcome = rig.dispatcher.run(job(), local=never_local, fetch=fetch)
    assert outcome.value == out and out.read_bytes() == OUTPUT and outcome.attempts == 1
    assert len(rig.warnings) == 1, rig.warnings
    warning = rig.warnings[0]
    assert warning.startswith("not recorded in the state file") and "locked" in warning
    assert str(rig.db.path) in warning
    # It waited for the lock (on the injected clock, never for real) until the deadline.
    assert len(rig.clock.sleeps) > 1
    assert rig.clock.now - began == pytest.approx(RECORD_DEADLINE)


def test_a_locked_state_file_after_a_failed_attempt_still_ends_as_the_job_did(
        make: Callable[..., Rig], tmp_path: Path, locked: Callable[[], None]) -> None:
    """The lock taken while the job runs: the failure is reported as itself (exit 2
    for bad input), not as 'database is locked'."""
    rig = make([failed("INVALID_INPUT", "scenes[0].image: not an image")], on_status=locked)
    with pytest.raises(errors.InvalidInput) as caught:
        run(rig, tmp_path)
    assert "not an image" in caught.value.message and caught.value.exit_code == 2
    assert any("not recorded in the state file" in w for w in rig.warnings)


# -- retries: job attempts and request retries --------------------------------------------


def test_request_retries_are_not_multiplied_by_job_attempts(
        make: Callable[..., Rig], tmp_path: Path) -> None:
    """A poll that keeps failing is tried ``attempts`` times by the request policy, and
    that ends the remote run: not attempts x attempts requests, one breaker failure."""
    down = errors.ConnectionFailed("cannot reach http://jobs.test: ConnectError")
    rig = make([down, down, down, down, down, down, down, down, down])
    with pytest.raises(errors.ModalUnavailable) as caught:  # --remote: exit 3
        run(rig, tmp_path)
    assert caught.value.exit_code == 3 and "cannot reach" in caught.value.message
    assert rig.backend.count("submit") == 1 and rig.backend.count("status") == 3
    assert len(rig.clock.sleeps) == 2  # the request's backoff only
    assert rig.failures() == 1
    assert [(r.attempt, r.status, r.error_code) for r in rig.rows()] == [
        (1, "failed", "CONNECTION_FAILED")]


def test_a_submit_that_keeps_failing_is_tried_attempts_times(
        make: Callable[..., Rig], tmp_path: Path) -> None:
    busy = errors.ServerError("HTTP 500")
    rig = make([done()], submit_errors=[busy] * 9, remote_only=False)
    outcome = run(rig, tmp_path, local=lambda: "made here")
    assert outcome.value == "made here" and outcome.backend == "local"
    assert outcome.fallback == {"from": "http", "reason": "SERVER_ERROR: HTTP 500"}
    assert rig.backend.count("submit") == 3 and rig.backend.count("status") == 0
    assert rig.failures() == 1
    assert any("falling back to local" in n for n in rig.notes)
    # The local run is one ledger row of its own, written once it ended.
    fallback = [r for r in rig.rows() if r.backend == "local"]
    assert [(r.status, r.fallback_from, r.error_code) for r in fallback] == [
        ("ok", "http", None)]
    assert fallback[0].duration is not None


def test_a_fallback_that_fails_is_recorded_failed(make: Callable[..., Rig],
                                                  tmp_path: Path) -> None:
    busy = errors.ServerError("HTTP 500")
    rig = make([done()], submit_errors=[busy] * 9, remote_only=False)

    def broken() -> str:
        rig.clock.sleep(2.5)
        raise errors.FFmpegError("ffmpeg failed (exit status 1)")

    with pytest.raises(errors.FFmpegError):
        run(rig, tmp_path, local=broken)
    (fallback,) = [r for r in rig.rows() if r.backend == "local"]
    assert (fallback.status, fallback.error_code) == ("failed", "FFMPEG_FAILED")
    assert fallback.duration == pytest.approx(2.5)


def test_a_job_that_fails_retryably_is_resubmitted(make: Callable[..., Rig],
                                                  tmp_path: Path) -> None:
    rig = make([failed("CONTAINER_CRASH", "worker died", retryable=True)], [done()])
    outcome = run(rig, tmp_path)
    assert outcome.attempts == 2 and outcome.job_id == job_id(2)
    assert rig.backend.count("submit") == 2 and rig.backend.count("status") == 2
    assert len(rig.clock.sleeps) == 1 and 1.0 <= rig.clock.sleeps[0] <= 1.1
    assert [(r.attempt, r.status, r.error_code, r.job_id) for r in rig.rows()] == [
        (1, "failed", "CONTAINER_CRASH", job_id(1)), (2, "ok", None, job_id(2))]
    assert rig.failures() == 0  # the success closed the count
    assert any("attempt 2 of 3; CONTAINER_CRASH" in n for n in rig.notes)


def test_retryable_job_failures_stop_after_attempts(make: Callable[..., Rig],
                                                    tmp_path: Path) -> None:
    rig = make([failed("CONTAINER_CRASH", "worker died", retryable=True)])
    with pytest.raises(errors.ModalUnavailable) as caught:
        run(rig, tmp_path)
    assert "worker died" in caught.value.message
    assert rig.backend.count("submit") == 3 and len(rig.clock.sleeps) == 2
    assert rig.failures() == 3
    assert [r.attempt for r in rig.rows()] == [1, 2, 3]


@pytest.mark.parametrize(("code", "cls", "exit_code"), [
    ("INVALID_INPUT", errors.InvalidInput, 2),
    ("JOB_TIMEOUT", errors.JobTimedOut, 1),
    ("GPU_OOM", errors.GpuOutOfMemory, 1),
    ("FFMPEG_FAILED", errors.FFmpegError, 1),
    ("JOB_FAILED", errors.JobFailed, 1),
])
def test_a_non_retryable_job_error_is_neither_retried_nor_counted(
        make: Callable[..., Rig], tmp_path: Path, code: str, cls: type[errors.CanvasCastError],
        exit_code: int) -> None:
    rig = make([failed(code, "the job's own fault")], remote_only=False)
    local_ran: list[int] = []
    with pytest.raises(errors.CanvasCastError) as caught:
        run(rig, tmp_path, local=lambda: local_ran.append(1))
    error = caught.value
    assert isinstance(error, cls) and error.code == code and error.exit_code == exit_code
    assert rig.backend.count("submit") == 1 and rig.clock.sleeps == []
    assert rig.failures() == 0  # neutral for the breaker
    assert [(r.status, r.error_code) for r in rig.rows()] == [("failed", code)]
    # Never hidden by a local run: bad input fails there too, and a job that failed
    # remotely is not the remote side being unavailable.
    assert local_ran == []


def test_an_open_circuit_sends_nothing(make: Callable[..., Rig], tmp_path: Path) -> None:
    down = errors.ModalUnavailable("HTTP 503")
    for _ in range(5):  # the default failure threshold
        rig = make([down] * 3)
        with pytest.raises(errors.ModalUnavailable):
            run(rig, tmp_path)
    rig = make([done()])
    with pytest.raises(errors.CircuitOpen) as caught:
        run(rig, tmp_path)
    assert caught.value.exit_code == 4 and rig.backend.calls == []


# -- errors name the user's files ------------------------------------------------------


def test_blob_references_in_errors_are_the_users_files(make: Callable[..., Rig],
                                                       tmp_path: Path) -> None:
    """A worker names inputs by blob reference (it never sees the user's paths); the
    user sees their own file again."""
    mine = tmp_path / "shots" / "01.jpg"
    mine.parent.mkdir()
    mine.write_bytes(b"not really a jpeg")
    sha, _size = sha256_file(mine)
    ref = f"blob:{sha}.jpg"
    other = "blob:" + "d" * 64 + ".png"  # not this job's: left as it is
    rig = make([failed("INVALID_INPUT", f"scenes[0].image: cannot decode {ref}",
                       details=[f"{ref}: not an image", f"{other}: fine"])])
    with pytest.raises(errors.InvalidInput) as caught:
        run(rig, tmp_path, job(uploads={sha: mine}, local_names={ref: str(mine)}))
    error = caught.value
    assert error.message == f"scenes[0].image: cannot decode {mine}"
    assert error.details == [f"{mine}: not an image", f"{other}: fine"]
    assert rig.backend.calls[:2] == ["missing", "upload"]
    # A failed request names them the same way.
    rig = make([done()], submit_errors=[errors.InvalidInput(f"{ref} is not on the server")])
    with pytest.raises(errors.InvalidInput) as caught:
        run(rig, tmp_path, job(uploads={sha: mine}, local_names={ref: str(mine)}))
    assert caught.value.message == f"{mine} is not on the server"


# -- what --verbose shows -------------------------------------------------------------


def test_attempts_and_timings_are_told(make: Callable[..., Rig], tmp_path: Path) -> None:
    crash = failed("CONTAINER_CRASH", "worker died", retryable=True)
    rig = make([crash], [errors.ServerError("HTTP 500"), done()])
    run(rig, tmp_path)
    text = "\n".join(rig.debug)
    fn = settings().functions.generate_images
    assert (f"{FUNCTION} on http: up to 3 attempt(s), each up to {fn.retries + 1} run(s) on "
            f"Modal's side (retries = {fn.retries}): at most {3 * (fn.retries + 1)} runs") in text
    assert f"attempt 1: job {job_id(1)} failed after" in text
    assert "request failed (SERVER_ERROR: HTTP 500); try 2 in" in text
    assert f"attempt 2: job {job_id(2)} done after" in text


# -- one exit-code mapping for --remote and jobs wait ----------------------------------


@pytest.mark.parametrize(("error", "code", "exit_code"), [
    (errors.ConnectionFailed("refused"), "MODAL_UNAVAILABLE", 3),
    (errors.Timeout("slow"), "MODAL_UNAVAILABLE", 3),
    (errors.ServerError("HTTP 500"), "MODAL_UNAVAILABLE", 3),
    (errors.RateLimited("busy", retry_after=3), "MODAL_UNAVAILABLE", 3),
    (errors.ModalUnavailable("HTTP 503"), "MODAL_UNAVAILABLE", 3),
    (errors.AuthFailed("token refused"), "AUTH", 3),
    (errors.CircuitOpen("open"), "CIRCUIT_OPEN", 4),
    (errors.NotFound("no such job"), "NOT_FOUND", 2),
    (errors.UnexpectedResponse("HTTP 404"), "UNEXPECTED_RESPONSE", 2),
    (errors.JobFailed("it broke"), "JOB_FAILED", 1),
    (errors.IntegrityError("bad bytes"), "INTEGRITY", 1),
])
def test_unavailable_is_the_one_mapping(error: errors.CanvasCastError, code: str,
                                        exit_code: int) -> None:
    mapped = unavailable(error, "http")
    assert (mapped.code, mapped.exit_code) == (code, exit_code)
    assert error.message in mapped.message
