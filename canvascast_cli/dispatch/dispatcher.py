"""Run a job remotely — retried, guarded by a circuit breaker, recorded, costed — or here.

``Dispatcher.run(job, local=..., fetch=...)``:

1. the backend was chosen before (``backend.choose``: ``--backend``/``--local``; ``auto``
   = http when an endpoint is configured, modal when a Modal token is, else local);
2. local: run ``local()`` in this process; done;
3. remote: the breaker for ``<backend>:<function>`` must let the call through (else
   CIRCUIT_OPEN); the job's input blobs the server lacks are uploaded (once: a re-render
   after a caption edit uploads nothing); then up to ``attempts`` (modal.toml, per
   function) times: submit, long-poll until the job ends, and when the job fails
   retryably (TIMEOUT, CONTAINER_CRASH, RATE_LIMITED, SERVER_ERROR, CONNECTION_FAILED,
   MODAL_UNAVAILABLE) wait (the one retry policy, ``canvascast_cli.retry``) and submit it
   again. Each attempt is one ledger row and one breaker outcome. Each request (an
   upload, the submit, a poll) is itself tried up to ``attempts`` times by the same
   policy; a request that still fails ends the remote run (request retries are not
   multiplied by job attempts);
4. ``fetch(backend, status)`` downloads and verifies the artifacts (a sha256 mismatch is
   fetched once more, then fails with nothing written);
5. when the remote side is unavailable (retries spent, circuit open, auth refused) the
   job falls back to ``local()`` with a notice, and when the state file is unusable with
   a warning naming it — unless ``remote_only`` (``--remote``): then exit 3
   (unavailable), 4 (circuit open), or the state file's own error.

Bad input never retries, never falls back and never counts against the breaker. A job
that succeeded is never failed by its bookkeeping: a ledger or breaker write that cannot
be made (another process holds the state file's lock past the ledger's deadline, waited
on this dispatcher's ``clock`` and ``sleep``) is a warning.

How many times can a job run? Modal re-runs a failed input up to the function's
``retries`` on its own (server side); the client then makes up to ``attempts`` attempts.
So at most ``attempts x (retries + 1)`` runs, which ``--verbose`` prints and the ledger
records per client attempt. A resubmitted job carries a new idempotency key; a retried
*request* carries the same one, so a lost reply never starts a second job.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar, cast

from pydantic import BaseModel, ConfigDict

from canvascast_cli.config import Settings
from canvascast_cli.dispatch import cost
from canvascast_cli.dispatch.backend import Backend, Choice
from canvascast_cli.errors import (
    AuthFailed,
    CanvasCastError,
    CircuitOpen,
    IntegrityError,
    Interrupted,
    InvalidInput,
    JobFailed,
    ModalUnavailable,
    Timeout,
    from_dict,
    is_retryable,
)
from canvascast_cli.protocol import (
    API_VERSION,
    BLOB_REF_PATTERN,
    FINISHED,
    JobStatus,
    Payload,
)
from canvascast_cli.records import Seconds, Usd
from canvascast_cli.retry import RetryPolicy

T = TypeVar("T")
S = TypeVar("S")  # what a fetch is given: one status, or every piece's
POLL_WAIT = 20.0  # seconds one long-poll may wait on the server
QUEUE_SLACK = 600.0  # seconds a job may wait for a container on top of its own timeout
PIECE_POLL = 1.0  # seconds between two polls of a split run's running pieces, at least
# Status requests per second a split run makes at most, on average, across its running
# pieces: 50 pieces are polled every 5 s, not 50 requests a second; as pieces end the
# polls speed up again, so the last piece's end is seen within PIECE_POLL.
PIECE_POLLS_PER_SECOND = 10.0
_BLOB_REF = re.compile(BLOB_REF_PATTERN)


class Stages(Protocol):
    """Where the progress of a job is shown (a Rich bar on a terminal)."""

    def stage(self, name: str, total: float | None, unit: str) -> None: ...

    def update(self, done: float, total: float | None = None) -> None: ...


class Silent:
    """Stages that show nothing (``--json``, a pipe, tests)."""

    def stage(self, name: str, total: float | None, unit: str) -> None:
        return None

    def update(self, done: float, total: float | None = None) -> None:
        return None


@dataclass(frozen=True)
class RemoteJob:
    """A job as the remote side takes it: the wire format's payload, the local files it
    names by blob reference (``uploads``: sha256 -> file), what it processes (for the
    cost estimate) and, per blob reference, the user's own name for that file (an error
    about ``blob:<sha>.jpg`` is shown with the user's path)."""

    function: str
    payload: Payload | None = None
    uploads: dict[str, Path] = field(default_factory=dict)
    units: float = 0.0  # frames, audio seconds or images: for cost estimates
    unit: str = ""
    local_names: Mapping[str, str] = field(default_factory=dict)


class CostReport(BaseModel):
    model_config = ConfigDict(frozen=True)

    estimate_usd: Usd | None = None
    estimate_basis: str | None = None
    estimate_start: str | None = None
    usd: Usd | None = None
    billed_seconds: Seconds | None = None
    startup_seconds: Seconds | None = None


class LocalCost(BaseModel):
    """A local run's cost line: nothing, and what the same run would cost on Modal."""

    model_config = ConfigDict(frozen=True)

    usd: Usd = 0.0
    modal_equivalent_usd: Usd | None = None


class RunReport(BaseModel):
    """Where and how a job ran: the fields every job command adds to its ``--json``."""

    model_config = ConfigDict(frozen=True)

    backend: str
    fallback: dict[str, str] | None = None
    job_id: str | None = None
    attempts: int | None = None
    bytes_up: int | None = None
    bytes_down: int | None = None
    cold_start: bool | None = None
    billed_seconds: Seconds | None = None
    pieces: int | None = None  # a split render: its piece jobs (the join is one more)
    cost: CostReport | LocalCost | None = None


@dataclass
class Outcome(Generic[T]):
    value: T
    backend: str
    choice: Choice
    job_id: str | None = None
    attempts: int = 0
    fallback: dict[str, str] | None = None
    estimate: cost.Estimate | None = None
    actual_usd: float | None = None
    billed_seconds: float | None = None
    startup_seconds: float | None = None
    bytes_up: int = 0
    bytes_down: int = 0
    cold_start: bool | None = None
    pieces: int | None = None  # a split run: how many piece jobs ran before the join

    def report(self) -> RunReport:
        if self.backend == "local":
            return RunReport(backend="local", fallback=self.fallback, job_id=self.job_id)
        estimate = self.estimate
        return RunReport(
            backend=self.backend, fallback=self.fallback, job_id=self.job_id,
            attempts=self.attempts, bytes_up=self.bytes_up, bytes_down=self.bytes_down,
            cold_start=self.cold_start, billed_seconds=self.billed_seconds,
            pieces=self.pieces, cost=CostReport(estimate_usd=estimate.usd if estimate else None,
                            estimate_basis=estimate.basis if estimate else None,
                            estimate_start=estimate.start if estimate else None,
                            usd=self.actual_usd, billed_seconds=self.billed_seconds,
                            startup_seconds=self.startup_seconds))


@dataclass
class _Session:
    """What one remote run holds: its breaker, ledger, retry policy and backend."""

    name: str
    fn: Any  # the function's FunctionSettings
    ledger: Any
    breaker: Any
    policy: RetryPolicy
    attempts: int
    backend: Backend


@dataclass
class Dispatcher:
    settings: Settings
    choice: Choice
    make_backend: Callable[[Choice, RetryPolicy], Backend]
    remote_only: bool = False
    stages: Stages = field(default_factory=Silent)
    note: Callable[[str], None] = lambda _m: None
    warn: Callable[[str], None] = lambda _m: None
    debug: Callable[[str], None] = lambda _m: None
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.time
    state: Any = None  # a StateDB (breaker + ledger); None: opened on first use

    def run(self, job: RemoteJob, *, local: Callable[[], T],
            fetch: Callable[[Backend, JobStatus], T] | None) -> Outcome[T]:
        if self.choice.name == "local":
            return Outcome(local(), backend="local", choice=self.choice)
        assert fetch is not None and job.payload is not None
        return self._or_local(job, lambda: self._remote(job, fetch), local)

    def run_split(self, pieces: Sequence[RemoteJob], join: Callable[[list[str]], RemoteJob],
                  beside: Sequence[RemoteJob] = (), *, local: Callable[[], T],
                  fetch: Callable[[Backend, JobStatus], T] | None) -> Outcome[T]:
        """The jobs in ``pieces`` and ``beside`` (a split render's audio) run at once,
        each retried alone, then ``join(shas)`` (a job over their artifacts, pieces' then
        beside's, which stay on the remote side) fetched as ``run`` fetches a job; the
        outcome counts ``pieces`` only. Falls back to ``local()`` as ``run`` does."""
        if self.choice.name == "local":
            return Outcome(local(), backend="local", choice=self.choice)
        assert fetch is not None and pieces

        def joined(session: _Session, done: list[JobStatus], estimate: cost.Estimate,
                   bytes_up: int) -> Outcome[T]:
            shas = [_piece_artifact(status) for status in done]
            return self._attempts(session, join(shas), fetch, estimate, bytes_up)

        def remote() -> Outcome[T]:
            outcome = self._remote_split([*pieces, *beside], joined, beside=len(beside))
            outcome.pieces = len(pieces)
            return outcome

        return self._or_local(pieces[0], remote, local)

    def run_pieces(self, pieces: Sequence[RemoteJob], *, local: Callable[[], T],
                   fetch: Callable[[Backend, list[JobStatus]], T] | None) -> Outcome[T]:
        """Jobs in ``pieces`` run at once, each retried alone; ``fetch(backend, statuses)``
        makes one result of theirs here (a long recording's transcripts stitched).
        Falls back to ``local()`` as ``run`` does."""
        if self.choice.name == "local":
            return Outcome(local(), backend="local", choice=self.choice)
        assert fetch is not None and pieces

        def fetched(session: _Session, done: list[JobStatus], estimate: cost.Estimate,
                    bytes_up: int) -> Outcome[T]:
            value, bytes_down = self._fetch(session.backend, done, fetch)
            return Outcome(value, backend=session.name, choice=self.choice,
                           job_id=done[-1].id, attempts=1, estimate=estimate,
                           bytes_up=bytes_up, bytes_down=bytes_down)

        return self._or_local(pieces[0], lambda: self._remote_split(pieces, fetched), local)

    def _or_local(self, job: RemoteJob, remote: Callable[[], Outcome[T]],
                  local: Callable[[], T]) -> Outcome[T]:
        try:
            return remote()
        except CanvasCastError as exc:
            if not self._unavailable(exc):
                raise
            if self.remote_only:
                raise unavailable(exc, self.choice.name) from None
            from canvascast_cli.dispatch.state import StateUnusable

            reason = f"{exc.code}: {exc.message}"
            if isinstance(exc, StateUnusable):  # this machine's file, not the remote side
                self.warn(f"{exc.message}; running locally meanwhile")
            else:
                self.note(f"[yellow]falling back to local:[/yellow] {self.choice.name} "
                          f"unavailable ({reason})")
            started = self.clock()
            try:
                value = local()
            except BaseException as error:
                self._record_fallback(job, reason, started, error)
                raise
            self._record_fallback(job, reason, started, None)
            return Outcome(value, backend="local", choice=self.choice,
                           fallback={"from": self.choice.name, "reason": reason})

    @staticmethod
    def _unavailable(exc: CanvasCastError) -> bool:
        from canvascast_cli.dispatch.state import StateUnusable

        return is_unavailable(exc) or isinstance(exc, StateUnusable)

    # -- the remote path ------------------------------------------------------------

    def _remote(self, job: RemoteJob, fetch: Callable[[Backend, JobStatus], T]) -> Outcome[T]:
        session = self._open_session(job.function)
        try:
            estimate = cost.estimate(self.settings, job.function, job.units, session.ledger,
                                     session.name, now=self.clock())
            self._note_estimate(job.function, estimate)
            bytes_up = self._upload_first(session, job, estimate)
            return self._attempts(session, job, fetch, estimate, bytes_up)
        finally:
            session.backend.close()

    def _open_session(self, function: str) -> _Session:
        """The breaker, ledger, retry policy and backend of a remote run of ``function``;
        the state file is read before anything is sent."""
        from canvascast_cli.dispatch.breaker import CircuitBreaker, SQLiteStorage

        name = self.choice.name
        fn = getattr(self.settings.functions, function)
        db = self._state()
        breaker = CircuitBreaker(
            SQLiteStorage(db), f"{name}:{function}",
            failure_threshold=self.settings.breaker.failure_threshold,
            reset_timeout=self.settings.breaker.reset_timeout, clock=self.clock,
            trial_lease=max(self.settings.breaker.reset_timeout, fn.timeout * (fn.retries + 1)))
        breaker.snapshot()  # the state file is readable before anything is sent
        attempts = max(1, fn.attempts)
        self.debug(f"{function} on {name}: up to {attempts} attempt(s), each up to "
                   f"{fn.retries + 1} run(s) on Modal's side (retries = {fn.retries}): at "
                   f"most {attempts * (fn.retries + 1)} runs")
        policy = RetryPolicy(attempts=attempts, sleep=self.sleep, on_retry=self._on_retry)
        return _Session(name=name, fn=fn, ledger=self._ledger(db), breaker=breaker,
                        policy=policy, attempts=attempts,
                        backend=self.make_backend(self.choice, policy))

    def _note_estimate(self, function: str, estimate: cost.Estimate, what: str = "") -> None:
        self.note(f"Estimated cost on {self.choice.name}: ${estimate.usd:.4f} (about "
                  f"{estimate.seconds + estimate.startup_seconds:.0f} s at {function}'s "
                  f"resources{what}, {estimate.start} start; "
                  f"{'from your history' if estimate.basis == 'history' else 'a first guess'})")

    def _upload_first(self, session: _Session, job: RemoteJob,
                      estimate: cost.Estimate) -> int:
        began = self.clock()
        try:
            return self._upload(session.backend, job, session.breaker)
        except CanvasCastError as exc:  # the first attempt failed while uploading
            self._record(session.ledger, job, 1, began, "failed", error=exc,
                         estimate=estimate)
            raise

    def _attempts(self, session: _Session, job: RemoteJob,
                  fetch: Callable[[Backend, JobStatus], T], estimate: cost.Estimate,
                  bytes_up: int) -> Outcome[T]:
        """Up to ``attempts`` times: submit ``job``, wait for it, fetch its result."""
        name, fn, backend = session.name, session.fn, session.backend
        breaker, ledger, attempts = session.breaker, session.ledger, session.attempts
        last: CanvasCastError | None = None
        for attempt in range(1, attempts + 1):
            if attempt > 1 and last is not None:
                delay = session.policy.delay(attempt - 1, last)
                self.note(f"retrying {job.function} on {name} in {delay:.1f} s "
                          f"(attempt {attempt} of {attempts}; {last.code})")
                self.sleep(delay)
            permit = breaker.acquire()
            started = self.clock()
            job_id: str | None = None
            request_failed = False
            try:
                job_id, status = self._attempt(backend, job, fn.timeout * (fn.retries + 1))
            except KeyboardInterrupt as stop:
                breaker.record_failure(permit, stop)  # neutral: says nothing of it
                raise
            except CanvasCastError as exc:
                # A request that failed after its own retries: trying the whole job
                # again would multiply them, so this ends the remote run.
                last, request_failed = self._localised(exc, job), True
            else:
                self.debug(f"attempt {attempt}: job {job_id} {status.state} after "
                           f"{self.clock() - started:.1f} s (queued "
                           f"{status.queue_seconds or 0:.1f} s)")
                if status.state == "done" and status.result is not None:
                    self._quietly(breaker.record_success, permit)
                    result = status.result
                    value, bytes_down = self._fetch(backend, status, fetch)
                    outcome = Outcome(
                        value, backend=name, choice=self.choice, job_id=job_id,
                        attempts=attempt, estimate=estimate,
                        actual_usd=cost.actual(self.settings, job.function,
                                               result.billed_seconds,
                                               result.startup_seconds),
                        billed_seconds=result.billed_seconds,
                        startup_seconds=result.startup_seconds, bytes_up=bytes_up,
                        bytes_down=bytes_down, cold_start=result.cold_start)
                    self._record(ledger, job, attempt, started, "ok", status=status,
                                 estimate=estimate, outcome=outcome)
                    return outcome
                last = self._localised(_job_error(status, job_id), job)
            # Only retryable failures count; bad input and the like are neutral.
            self._quietly(breaker.record_failure, permit, last)
            self._record(ledger, job, attempt, started,
                         "cancelled" if isinstance(last, Interrupted) else "failed",
                         error=last, estimate=estimate, job_id=job_id)
            if request_failed or not is_retryable(last):
                raise last
        assert last is not None
        raise last

    # -- a job in pieces ----------------------------------------------------------

    def _remote_split(self, pieces: Sequence[RemoteJob],
                      after: Callable[[_Session, list[JobStatus], cost.Estimate, int],
                                      Outcome[T]], *, beside: int = 0) -> Outcome[T]:
        """Upload every piece's inputs, run the pieces (``_fan_out``; the last ``beside``
        of them jobs beside the pieces), then ``after`` (the join, or the fetch of every
        piece); the outcome's bill is all of it."""
        function = pieces[0].function
        units = sum(p.units for p in pieces)
        session = self._open_session(function)
        try:
            estimate = cost.estimate(self.settings, function, units, session.ledger,
                                     session.name, now=self.clock(), containers=len(pieces))
            self._note_estimate(function, estimate, f", {len(pieces)} pieces at once")
            inputs = replace(pieces[0], uploads={sha: path for piece in pieces
                                                 for sha, path in piece.uploads.items()})
            bytes_up = self._upload_first(session, inputs, estimate)
            done = self._fan_out(session, pieces, beside=beside)
            outcome = after(session, done, estimate, bytes_up)
        finally:
            session.backend.close()
        results = [status.result for status in done if status.result is not None]
        billed = sum(r.billed_seconds for r in results) + (outcome.billed_seconds or 0.0)
        startup = sum(r.startup_seconds or 0.0 for r in results) + (
            outcome.startup_seconds or 0.0)
        outcome.pieces = len(pieces)
        outcome.billed_seconds = billed
        outcome.startup_seconds = startup
        outcome.actual_usd = cost.actual(self.settings, function, billed, startup)
        outcome.cold_start = bool(outcome.cold_start or any(r.cold_start for r in results))
        return outcome

    def _fan_out(self, session: _Session, jobs: Sequence[RemoteJob], *, beside: int = 0
                 ) -> list[JobStatus]:
        """Run ``jobs`` at once (up to the function's ``max_containers`` in flight) and
        return their final statuses, in order. One thread polls them all without waiting
        (the backends' clients are not shared across threads); the progress shown is
        their units added up. A piece that fails retryably is submitted again alone,
        after the retry policy's delay, up to ``attempts`` tries; anything else (bad
        input, a piece out of tries, a request that failed after its own retries,
        Ctrl-C) cancels the others and ends the run. Each try is one ledger row and one
        breaker outcome, as for a single job."""
        backend, breaker, ledger = session.backend, session.breaker, session.ledger
        budget = session.fn.timeout * (session.fn.retries + 1) + QUEUE_SLACK
        in_flight = max(1, session.fn.max_containers)
        pieces = [_Piece(n, job) for n, job in enumerate(jobs)]
        total = sum(job.units for job in jobs)
        unit = jobs[0].unit
        count = len(jobs) - beside
        self.stages.stage(f"{count} pieces", total, unit)
        self.note(f"{count} pieces of about {total / count:.0f} {unit} each"
                  + (" and the audio" if beside else "")
                  + f", up to {in_flight} at once on {session.name}; a piece that fails is "
                  "tried again alone")

        def shown() -> None:
            self.stages.update(sum(p.done for p in pieces), total)

        def end(piece: _Piece, state: str, error: CanvasCastError | None,
                status: JobStatus | None) -> None:
            if error is None:
                self._quietly(breaker.record_success, piece.permit)
            else:
                self._quietly(breaker.record_failure, piece.permit, error)
            outcome = None
            if status is not None and status.result is not None:
                result = status.result
                outcome = Outcome(None, backend=session.name, choice=self.choice,
                                  job_id=piece.job_id, attempts=piece.tries,
                                  actual_usd=cost.actual(self.settings, piece.job.function,
                                                         result.billed_seconds,
                                                         result.startup_seconds))
            self._record(ledger, piece.job, piece.tries, piece.started, state,
                         status=status, error=error, estimate=None, outcome=outcome,
                         job_id=piece.job_id)
            piece.job_id, piece.permit = None, None

        def stop_all() -> None:
            for piece in pieces:
                if piece.job_id is not None:
                    self._cancel(backend, piece.job_id)
                    end(piece, "cancelled", Interrupted("stopped with the other pieces"),
                        None)

        try:
            while not all(p.status is not None for p in pieces):
                now = self.clock()
                running = sum(1 for p in pieces if p.job_id is not None)
                for piece in pieces:
                    if running >= in_flight:
                        break
                    if piece.status is None and piece.job_id is None and \
                            piece.not_before <= now:
                        assert piece.job.payload is not None
                        try:
                            piece.permit = breaker.acquire()
                        except CircuitOpen:
                            if running == 0:
                                raise
                            break  # half-open: its one trial runs first; the rest wait
                        piece.tries += 1
                        piece.started, piece.done = now, 0.0
                        try:
                            piece.job_id = backend.submit(piece.job.function,
                                                          piece.job.payload)
                        except CanvasCastError as exc:
                            end(piece, "failed", self._localised(exc, piece.job), None)
                            raise
                        running += 1
                polled = 0
                for piece in pieces:
                    if piece.job_id is None:
                        continue
                    polled += 1
                    try:
                        status = backend.status(piece.job_id, wait=0.0)
                    except CanvasCastError as exc:
                        end(piece, "failed", exc, None)  # then the others are cancelled
                        raise
                    if status.progress is not None and status.state == "running":
                        piece.done = min(status.progress.done, piece.job.units)
                    if status.state not in FINISHED:
                        if self.clock() - piece.started > budget:
                            self._cancel(backend, piece.job_id)
                            error: CanvasCastError = Timeout(
                                f"job {piece.job_id} did not finish within {budget:.0f} s; "
                                "cancelled")
                        else:
                            continue
                    elif status.state == "done" and status.result is not None:
                        piece.done = piece.job.units
                        end(piece, "ok", None, status)
                        piece.status = status
                        continue
                    else:
                        error = self._localised(_job_error(status, piece.job_id), piece.job)
                    end(piece, "cancelled" if isinstance(error, Interrupted) else "failed",
                        error, None)
                    if not is_retryable(error) or piece.tries >= session.attempts:
                        raise error
                    delay = session.policy.delay(piece.tries, error)
                    piece.not_before = self.clock() + delay
                    piece.done = 0.0
                    what = (f"piece {piece.index + 1} of {count}" if piece.index < count
                            else "the audio")
                    self.note(f"{what} failed "
                              f"({error.code}: {error.message}); trying it again alone in "
                              f"{delay:.1f} s (try {piece.tries + 1} of {session.attempts})")
                shown()
                if not all(p.status is not None for p in pieces):
                    self.sleep(max(PIECE_POLL, polled / PIECE_POLLS_PER_SECOND))
        except (KeyboardInterrupt, CanvasCastError):
            stop_all()
            raise
        return [p.status for p in pieces if p.status is not None]

    def _ledger(self, db: Any) -> Any:
        """The ledger over ``db``. A file another process has locked is waited for (up to
        the ledger's ``RECORD_DEADLINE``) on this dispatcher's own clock and sleep, so a
        test moves time instead of waiting, like every other wait here."""
        from canvascast_cli.dispatch.ledger import Ledger

        return Ledger(db, retention=self.settings.retention, clock=self.clock,
                      sleep=self.sleep)

    def _state(self) -> Any:
        if self.state is None:
            from canvascast_cli.dispatch.state import StateDB

            self.state = StateDB()
        return self.state

    def _on_retry(self, attempt: int, error: BaseException, delay: float) -> None:
        code = getattr(error, "code", type(error).__name__)
        self.debug(f"request failed ({code}: {error}); try {attempt + 1} in {delay:.1f} s")

    def _upload(self, backend: Backend, job: RemoteJob, breaker: Any) -> int:
        if not job.uploads:
            return 0
        permit = breaker.acquire()
        began = self.clock()
        try:
            missing = backend.missing(sorted(job.uploads))
            total = sum(job.uploads[sha].stat().st_size for sha in missing)
            sent_before = 0
            if missing:
                self.stages.stage("uploading", total, "bytes")
            for sha in missing:
                base = sent_before

                def sent(n: int, base: int = base) -> None:
                    self.stages.update(base + n)

                backend.upload(sha, job.uploads[sha], sent)
                sent_before += job.uploads[sha].stat().st_size
        except (CanvasCastError, KeyboardInterrupt) as exc:
            self._quietly(breaker.record_failure, permit, exc)  # counts only when retryable
            raise
        self._quietly(breaker.record_success, permit)
        if missing:
            self.note(f"uploaded {len(missing)} input(s), {total / 1e6:.1f} MB "
                      f"({len(job.uploads) - len(missing)} already there)")
        self.debug(f"inputs: {len(job.uploads)} blob(s), {len(missing)} uploaded "
                   f"({total:,} bytes) in {self.clock() - began:.1f} s")
        return total

    def _attempt(self, backend: Backend, job: RemoteJob, budget: float
                 ) -> tuple[str, JobStatus]:
        """Submit once and wait for the job to end; (job id, final status)."""
        assert job.payload is not None
        job_id = backend.submit(job.function, job.payload)
        self.note(f"job {job_id} submitted to {self.choice.name} (if this client goes "
                  f"away: canvascast jobs wait {job_id} -o OUT)")
        limit = budget + QUEUE_SLACK
        try:
            status = wait_for(backend, job_id, self.stages, clock=self.clock, limit=limit)
        except (KeyboardInterrupt, CanvasCastError):
            # Interrupted, or the polls failed: the job would run (and bill) on unseen
            # while this run falls back or fails, so it is cancelled (best effort).
            self._cancel(backend, job_id)
            raise
        if status is None:
            self._cancel(backend, job_id)
            raise Timeout(f"job {job_id} did not finish within {limit:.0f} s (its timeout x "
                          "attempts, plus queueing); cancelled")
        return job_id, status

    def _cancel(self, backend: Backend, job_id: str) -> None:
        # Best effort: otherwise the job ends by its own timeout.
        with contextlib.suppress(CanvasCastError, OSError):
            backend.cancel(job_id)

    def _fetch(self, backend: Backend, status: S,
               fetch: Callable[[Backend, S], T]) -> tuple[T, int]:
        """``fetch(backend, status)`` and the bytes it downloaded; a sha256 mismatch is
        fetched once more."""
        counting = _Counting(backend)
        try:
            value = fetch(cast(Backend, counting), status)
        except IntegrityError as first:
            self.warn(f"{first.message}; fetching again")
            value = fetch(cast(Backend, counting), status)
        return value, counting.bytes

    @staticmethod
    def _localised(error: CanvasCastError, job: RemoteJob) -> CanvasCastError:
        """``error`` as its user reads it: each blob reference it names shown as the
        user's own file, and a payload field the host did not know explained (this client
        checked the payload against its own wire format before sending it, so the host
        runs an older one)."""
        if error.code == InvalidInput.code and any(
                d.endswith(": unknown field") for d in error.details):
            body = error.to_dict()
            body["message"] = (f"{error.message}; the host runs an older canvascast than "
                               f"this client (wire format {API_VERSION}): deploy again "
                               "(canvascast deploy), or restart canvascast serve")
            error = from_dict(body)
        names = job.local_names
        if not names:
            return error
        return error.rewritten(
            lambda text: _BLOB_REF.sub(lambda m: names.get(m.group(), m.group()), text))

    def _quietly(self, action: Callable[..., Any], *args: Any) -> None:
        """Bookkeeping that must not change how a job ends: a breaker or ledger write
        the state file refuses (locked by another process) is a warning."""
        try:
            action(*args)
        except JobFailed as exc:
            self.warn(f"not recorded in the state file: {exc.message}")

    def _record(self, ledger: Any, job: RemoteJob, attempt: int, started: float, state: str,
                *, status: JobStatus | None = None, error: CanvasCastError | None = None,
                estimate: cost.Estimate | None = None, outcome: Outcome[Any] | None = None,
                job_id: str | None = None) -> None:
        from canvascast_cli.dispatch.ledger import Attempt

        result = status.result if status is not None else None
        self._quietly(ledger.record, Attempt(
            function=job.function, backend=self.choice.name, started=started,
            status=state,  # type: ignore[arg-type]
            duration=self.clock() - started,
            queue_seconds=status.queue_seconds if status is not None else None,
            cold_start=result.cold_start if result else None,
            container_id=result.container_id if result else None,
            error_code=error.code if error is not None else None, attempt=attempt,
            job_id=outcome.job_id if outcome is not None else job_id,
            bytes_up=outcome.bytes_up if outcome is not None else None,
            bytes_down=outcome.bytes_down if outcome is not None else None,
            units=job.units, unit=job.unit,
            estimated_cost=estimate.usd if estimate is not None else None,
            actual_cost=outcome.actual_usd if outcome is not None else None,
            billed_seconds=result.billed_seconds if result else None,
            startup_seconds=result.startup_seconds if result else None))

    def _record_fallback(self, job: RemoteJob, reason: str, started: float,
                         error: BaseException | None) -> None:
        """The local run a remote one fell back to, once it ended: how long it took and
        how it ended, so the operators' report counts it like any other attempt."""
        from canvascast_cli.dispatch.ledger import Attempt, Status
        from canvascast_cli.errors import Interrupted

        status: Status
        code: str | None
        if error is None:
            status, code = "ok", None
        elif isinstance(error, (KeyboardInterrupt, Interrupted)):
            status, code = "cancelled", "INTERRUPTED"
        else:
            status = "failed"
            code = error.code if isinstance(error, CanvasCastError) else "JOB_FAILED"
        # The ledger is a record, never a reason to fail the job.
        with contextlib.suppress(CanvasCastError):
            self._ledger(self._state()).record(Attempt(
                function=job.function, backend="local", started=started, status=status,
                duration=max(0.0, self.clock() - started), error_code=code,
                fallback_from=self.choice.name, fallback_reason=reason[:500],
                units=job.units, unit=job.unit))


@dataclass
class _Piece:
    """One job of a split run, as ``_fan_out`` follows it."""

    index: int
    job: RemoteJob
    tries: int = 0
    job_id: str | None = None  # while submitted and not yet ended
    permit: Any = None
    started: float = 0.0
    not_before: float = 0.0  # a retried piece waits for the retry policy's delay
    done: float = 0.0  # units, as the job reports its progress
    status: JobStatus | None = None  # its final status, once done


def _piece_artifact(status: JobStatus) -> str:
    """The sha256 of a piece's one artifact (it stays on the remote side)."""
    artifacts = status.result.artifacts if status.result is not None else []
    if len(artifacts) != 1:
        raise JobFailed(f"piece job {status.id} finished with {len(artifacts)} artifacts, "
                        "not one")
    return artifacts[0].sha256


def _job_error(status: JobStatus, job_id: str | None) -> CanvasCastError:
    """How a job that ended without a result failed."""
    if status.state == "cancelled":
        return Interrupted(f"job {job_id} was cancelled on the server")
    return status.error.error() if status.error is not None else \
        from_dict({"code": "JOB_FAILED"})


def is_unavailable(exc: CanvasCastError) -> bool:
    """The remote side cannot run the job now (as opposed to: the job is wrong)."""
    return isinstance(exc, CircuitOpen | AuthFailed | ModalUnavailable) or is_retryable(exc)


def unavailable(exc: CanvasCastError, backend: str) -> CanvasCastError:
    """How a run that must stay remote reports ``exc``: the one exit-code mapping of
    ``--remote`` and ``jobs wait`` — unavailable (exit 3) for anything retryable, the
    circuit (4) and credentials (3) as themselves, the rest as it is."""
    if isinstance(exc, CircuitOpen | AuthFailed | ModalUnavailable) or not is_retryable(exc):
        return exc
    return ModalUnavailable(f"{backend} backend unavailable: {exc.message}",
                            details=exc.details)


@contextlib.contextmanager
def as_unavailable(backend: str) -> Iterator[None]:
    """Within the block, errors leave as ``unavailable`` says."""
    try:
        yield
    except CanvasCastError as exc:
        raise unavailable(exc, backend) from None


def wait_for(backend: Backend, job_id: str, stages: Stages, *,
             clock: Callable[[], float] = time.time, limit: float | None = None
             ) -> JobStatus | None:
    """Long-poll job ``job_id`` until it ends (its final status), showing its state and
    progress on ``stages``; None when ``limit`` seconds pass first."""
    deadline = clock() + limit if limit is not None else None
    state = None
    while True:
        status = backend.status(job_id, wait=POLL_WAIT)
        progress = status.progress
        if status.state != state:
            state = status.state
            if state in ("queued", "running"):
                stages.stage(state, progress.total if progress else None,
                             progress.unit if progress else "")
        if progress is not None and state == "running":
            stages.update(progress.done, progress.total)
        if state in FINISHED:
            return status
        if deadline is not None and clock() > deadline:
            return None


class _Counting:
    """A Backend wrapper that counts the bytes downloaded through it."""

    def __init__(self, backend: Backend) -> None:
        self._backend = backend
        self.bytes = 0
        self.name = backend.name

    def download(self, sha: str, into: Path, on_bytes: Callable[[int], None] | None = None
                 ) -> int:
        size = self._backend.download(sha, into, on_bytes)
        self.bytes += size
        return size

    def __getattr__(self, name: str) -> Any:
        return getattr(self._backend, name)


def require_local_files(paths: dict[str, Path]) -> None:
    """Before uploading: every input file exists (InvalidInput naming the field)."""
    problems = [f"{field}: file not found: {path}" for field, path in paths.items()
                if not path.is_file()]
    if problems:
        raise InvalidInput(f"timeline inputs: {len(problems)} problem(s)", details=problems)
