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
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
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
from canvascast_cli.protocol import BLOB_REF_PATTERN, FINISHED, JobStatus, Payload
from canvascast_cli.records import Seconds, Usd
from canvascast_cli.retry import RetryPolicy

T = TypeVar("T")
POLL_WAIT = 20.0  # seconds one long-poll may wait on the server
QUEUE_SLACK = 600.0  # seconds a job may wait for a container on top of its own timeout
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

    def report(self) -> RunReport:
        if self.backend == "local":
            return RunReport(backend="local", fallback=self.fallback, job_id=self.job_id)
        estimate = self.estimate
        return RunReport(
            backend=self.backend, fallback=self.fallback, job_id=self.job_id,
            attempts=self.attempts, bytes_up=self.bytes_up, bytes_down=self.bytes_down,
            cold_start=self.cold_start, billed_seconds=self.billed_seconds,
            cost=CostReport(estimate_usd=estimate.usd if estimate else None,
                            estimate_basis=estimate.basis if estimate else None,
                            estimate_start=estimate.start if estimate else None,
                            usd=self.actual_usd, billed_seconds=self.billed_seconds,
                            startup_seconds=self.startup_seconds))


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
        try:
            return self._remote(job, fetch)
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
        from canvascast_cli.dispatch.breaker import CircuitBreaker, SQLiteStorage

        name = self.choice.name
        fn = getattr(self.settings.functions, job.function)
        db = self._state()
        ledger = self._ledger(db)
        breaker = CircuitBreaker(
            SQLiteStorage(db), f"{name}:{job.function}",
            failure_threshold=self.settings.breaker.failure_threshold,
            reset_timeout=self.settings.breaker.reset_timeout, clock=self.clock,
            trial_lease=max(self.settings.breaker.reset_timeout, fn.timeout * (fn.retries + 1)))
        breaker.snapshot()  # the state file is readable before anything is sent
        estimate = cost.estimate(self.settings, job.function, job.units, ledger, name,
                                 now=self.clock())
        self.note(f"Estimated cost on {name}: ${estimate.usd:.4f} (about "
                  f"{estimate.seconds + estimate.startup_seconds:.0f} s at {job.function}'s "
                  f"resources, {estimate.start} start; "
                  f"{'from your history' if estimate.basis == 'history' else 'a first guess'})")
        attempts = max(1, fn.attempts)
        self.debug(f"{job.function} on {name}: up to {attempts} attempt(s), each up to "
                   f"{fn.retries + 1} run(s) on Modal's side (retries = {fn.retries}): at "
                   f"most {attempts * (fn.retries + 1)} runs")
        policy = RetryPolicy(attempts=attempts, sleep=self.sleep, on_retry=self._on_retry)
        backend = self.make_backend(self.choice, policy)
        try:
            began = self.clock()
            try:
                bytes_up = self._upload(backend, job, breaker)
            except CanvasCastError as exc:  # the first attempt failed while uploading
                self._record(ledger, job, 1, began, "failed", error=exc, estimate=estimate)
                raise
            last: CanvasCastError | None = None
            for attempt in range(1, attempts + 1):
                if attempt > 1 and last is not None:
                    delay = policy.delay(attempt - 1, last)
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
                    error = status.error.error() if status.error is not None else \
                        from_dict({"code": "JOB_FAILED"})
                    if status.state == "cancelled":
                        error = Interrupted(f"job {job_id} was cancelled on the server")
                    last = self._localised(error, job)
                # Only retryable failures count; bad input and the like are neutral.
                self._quietly(breaker.record_failure, permit, last)
                self._record(ledger, job, attempt, started,
                             "cancelled" if isinstance(last, Interrupted) else "failed",
                             error=last, estimate=estimate, job_id=job_id)
                if request_failed or not is_retryable(last):
                    raise last
            assert last is not None
            raise last
        finally:
            backend.close()

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

    def _fetch(self, backend: Backend, status: JobStatus,
               fetch: Callable[[Backend, JobStatus], T]) -> tuple[T, int]:
        counting = _Counting(backend)
        try:
            value = fetch(cast(Backend, counting), status)
        except IntegrityError as first:
            self.warn(f"{first.message}; fetching again")
            value = fetch(cast(Backend, counting), status)
        return value, counting.bytes

    @staticmethod
    def _localised(error: CanvasCastError, job: RemoteJob) -> CanvasCastError:
        """``error`` with each blob reference it names shown as the user's own file."""
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
