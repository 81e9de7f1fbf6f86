"""Run a job remotely — retried, guarded by a circuit breaker, recorded, costed — or here.

``Dispatcher.run(job, local=..., fetch=...)``:

1. choose the backend (``--backend``/``--local``; ``auto`` = http when an endpoint is
   configured, modal when a Modal token is, else local with a one-line notice);
2. local: run ``local()`` in this process; done;
3. remote: the breaker for ``<backend>:<function>`` must let the call through (else
   CIRCUIT_OPEN); the job's input blobs the server lacks are uploaded (once: a re-render
   after a caption edit uploads nothing); then up to ``attempts`` (modal.toml, per
   function) times: submit, long-poll until the job ends, and when the job fails
   retryably (TIMEOUT, CONTAINER_CRASH, RATE_LIMITED, SERVER_ERROR, CONNECTION_FAILED,
   MODAL_UNAVAILABLE) wait (1 s x 2^n, up to 30 s, jitter, Retry-After honoured) and
   submit it again. Each attempt is one ledger row and one breaker outcome. Each HTTP
   request (an upload, the submit, a poll) is itself tried up to ``attempts`` times by the
   same policy; a request that still fails ends the remote run (request retries are not
   multiplied by job attempts);
4. ``fetch(backend, status)`` downloads and verifies the artifacts (a sha256 mismatch is
   fetched once more, then fails with nothing written);
5. when the remote side is unavailable (retries spent, circuit open, auth refused) the job
   falls back to ``local()`` with a notice — unless ``remote_only`` (``--remote``): then
   exit 3 (unavailable) or 4 (circuit open).

Bad input never retries, never falls back and never counts against the breaker.

How many times can a job run? Modal re-runs a failed input up to the function's
``retries`` on its own (server side); the client then makes up to ``attempts`` attempts.
So at most ``attempts x (retries + 1)`` runs, which ``--verbose`` prints and the ledger
records per client attempt. Single HTTP requests (a poll, an upload) are retried by the
same policy; they re-send a request, they do not re-run the job (a resubmitted job
carries an idempotency key, so a lost reply never starts a second job).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

from canvascast_cli.config import Settings
from canvascast_cli.dispatch import cost
from canvascast_cli.dispatch.backend import Backend, Choice
from canvascast_cli.dispatch.retry import RetryPolicy
from canvascast_cli.errors import (
    AuthFailed,
    CanvasCastError,
    CircuitOpen,
    IntegrityError,
    Interrupted,
    InvalidInput,
    ModalUnavailable,
    Timeout,
    from_dict,
    is_retryable,
)

T = TypeVar("T")
POLL_WAIT = 20.0  # seconds one long-poll may wait on the server
FINISHED = ("done", "failed", "cancelled")
QUEUE_SLACK = 600.0  # seconds a job may wait for a container on top of its own timeout


class Stages(Protocol):
    """Where the progress of a remote job is shown (a Rich bar on a terminal)."""

    def stage(self, name: str, total: float | None, unit: str) -> None: ...

    def update(self, done: float, total: float | None = None) -> None: ...


class _Silent:
    def stage(self, name: str, total: float | None, unit: str) -> None:
        return None

    def update(self, done: float, total: float | None = None) -> None:
        return None


@dataclass(frozen=True)
class RemoteJob:
    """A job as the remote side takes it (see ``server/work.py``)."""

    function: str
    payload: dict[str, Any]
    uploads: dict[str, Path] = field(default_factory=dict)  # sha256 -> local file
    units: float = 0.0  # frames, audio seconds or images: for cost estimates
    unit: str = ""


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
    bytes_up: int = 0
    bytes_down: int = 0
    cold_start: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        """The ``--json`` fields every job command adds to its result."""
        body: dict[str, Any] = {"backend": self.backend, "fallback": self.fallback}
        if self.job_id is not None:
            body["job_id"] = self.job_id
        if self.backend != "local":
            body.update(attempts=self.attempts, bytes_up=self.bytes_up,
                        bytes_down=self.bytes_down, cold_start=self.cold_start,
                        billed_seconds=self.billed_seconds,
                        cost={"estimate_usd": self.estimate.usd if self.estimate else None,
                              "estimate_basis": self.estimate.basis if self.estimate else None,
                              "usd": self.actual_usd,
                              "billed_seconds": self.billed_seconds})
        return body


@dataclass
class Dispatcher:
    settings: Settings
    choice: Choice
    make_backend: Callable[[str, int], Backend]  # ("http" | "modal", attempts) -> Backend
    remote_only: bool = False
    stages: Stages = field(default_factory=_Silent)
    note: Callable[[str], None] = lambda _m: None
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.time
    state: Any = None  # a StateDB (breaker + ledger); None: opened on first use

    def run(self, job: RemoteJob, *, local: Callable[[], T],
            fetch: Callable[[Backend, dict[str, Any]], T]) -> Outcome[T]:
        if self.choice.name == "local":
            return Outcome(local(), backend="local", choice=self.choice)
        try:
            return self._remote(job, fetch)
        except CanvasCastError as exc:
            if not self._unavailable(exc):
                raise
            if self.remote_only:
                if isinstance(exc, CircuitOpen | AuthFailed | ModalUnavailable):
                    raise
                raise ModalUnavailable(f"{self.choice.name} backend unavailable: {exc.message}",
                                       details=exc.details) from None
            reason = f"{exc.code}: {exc.message}"
            self.note(f"[yellow]falling back to local:[/yellow] {self.choice.name} "
                      f"unavailable ({reason})")
            self._record_fallback(job, reason)
            value = local()
            return Outcome(value, backend="local", choice=self.choice,
                           fallback={"from": self.choice.name, "reason": reason})

    @staticmethod
    def _unavailable(exc: CanvasCastError) -> bool:
        return isinstance(exc, CircuitOpen | AuthFailed | ModalUnavailable) or is_retryable(exc)

    # -- the remote path ------------------------------------------------------------

    def _remote(self, job: RemoteJob, fetch: Callable[[Backend, dict[str, Any]], T]
                ) -> Outcome[T]:
        from canvascast_cli.dispatch.breaker import CircuitBreaker, SQLiteStorage
        from canvascast_cli.dispatch.ledger import Ledger

        name = self.choice.name
        fn = getattr(self.settings.functions, job.function)
        db = self._state()
        ledger = Ledger(db)
        breaker = CircuitBreaker(
            SQLiteStorage(db), f"{name}:{job.function}",
            failure_threshold=self.settings.breaker.failure_threshold,
            reset_timeout=self.settings.breaker.reset_timeout, clock=self.clock,
            trial_lease=max(self.settings.breaker.reset_timeout, fn.timeout * (fn.retries + 1)))
        breaker.snapshot()  # the state file is readable before anything is sent
        estimate = cost.estimate(self.settings, job.function, job.units,
                                 ledger.seconds_per_unit(job.function, name))
        self.note(f"Estimated cost on {name}: ${estimate.usd:.4f} (about "
                  f"{estimate.seconds:.0f} s at {job.function}'s resources; "
                  f"{'from your history' if estimate.basis == 'history' else 'a first guess'})")
        attempts = max(1, fn.attempts)
        policy = RetryPolicy(attempts=attempts, sleep=self.sleep)
        backend = self.make_backend(name, attempts)
        outcome: Outcome[T] | None = None
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
                    last, request_failed = exc, True
                else:
                    if status["state"] == "done":
                        breaker.record_success(permit)
                        result = status.get("result") or {}
                        value, bytes_down = self._fetch(backend, status, fetch)
                        billed = float(result.get("billed_seconds") or 0.0)
                        outcome = Outcome(
                            value, backend=name, choice=self.choice, job_id=job_id,
                            attempts=attempt, estimate=estimate,
                            actual_usd=cost.actual(self.settings, job.function, billed),
                            billed_seconds=billed, bytes_up=bytes_up, bytes_down=bytes_down,
                            cold_start=result.get("cold_start"))
                        self._record(ledger, job, attempt, started, "ok", status=status,
                                     estimate=estimate, outcome=outcome)
                        return outcome
                    last = from_dict(status.get("error") or {"code": "JOB_FAILED"})
                    if status["state"] == "cancelled":
                        last = Interrupted(f"job {job_id} was cancelled on the server")
                # Only retryable failures count; bad input and the like are neutral.
                breaker.record_failure(permit, last)
                self._record(ledger, job, attempt, started,
                             "cancelled" if isinstance(last, Interrupted) else "failed",
                             error=last, estimate=estimate, job_id=job_id)
                if request_failed or not is_retryable(last):
                    raise last
            assert last is not None
            raise last
        finally:
            backend.close()

    def _state(self) -> Any:
        if self.state is None:
            from canvascast_cli.dispatch.state import StateDB

            self.state = StateDB()
        return self.state

    def _upload(self, backend: Backend, job: RemoteJob, breaker: Any) -> int:
        if not job.uploads:
            return 0
        permit = breaker.acquire()
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
            breaker.record_failure(permit, exc)  # counts only when retryable
            raise
        breaker.record_success(permit)
        if missing:
            self.note(f"uploaded {len(missing)} input(s), {total / 1e6:.1f} MB "
                      f"({len(job.uploads) - len(missing)} already there)")
        return total

    def _attempt(self, backend: Backend, job: RemoteJob, budget: float
                 ) -> tuple[str, dict[str, Any]]:
        """Submit once and wait for the job to end; (job id, final status)."""
        job_id = backend.submit(job.function, job.payload)
        self.note(f"job {job_id} submitted to {self.choice.name} (if this client goes "
                  f"away: canvascast jobs wait {job_id} -o OUT)")
        limit = budget + QUEUE_SLACK
        try:
            status = wait_for(backend, job_id, self.stages, clock=self.clock, limit=limit)
        except KeyboardInterrupt:
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

    def _fetch(self, backend: Backend, status: dict[str, Any],
               fetch: Callable[[Backend, dict[str, Any]], T]) -> tuple[T, int]:
        counting = _Counting(backend)
        try:
            value = fetch(counting, status)
        except IntegrityError as first:
            self.note(f"[yellow]warning:[/yellow] {first.message}; fetching again")
            value = fetch(counting, status)
        return value, counting.bytes

    def _record(self, ledger: Any, job: RemoteJob, attempt: int, started: float, state: str,
                *, status: dict[str, Any] | None = None, error: CanvasCastError | None = None,
                estimate: cost.Estimate | None = None, outcome: Outcome[Any] | None = None,
                job_id: str | None = None) -> None:
        from canvascast_cli.dispatch.ledger import Attempt

        result = (status or {}).get("result") or {}
        billed = result.get("billed_seconds")
        ledger.record(Attempt(
            function=job.function, backend=self.choice.name, started=started,
            status=state,  # type: ignore[arg-type]
            duration=self.clock() - started,
            queue_seconds=(status or {}).get("queue_seconds"),
            cold_start=result.get("cold_start"), container_id=result.get("container_id"),
            error_code=error.code if error is not None else None, attempt=attempt,
            job_id=outcome.job_id if outcome is not None else job_id,
            bytes_up=outcome.bytes_up if outcome is not None else None,
            bytes_down=outcome.bytes_down if outcome is not None else None,
            units=job.units, unit=job.unit,
            estimated_cost=estimate.usd if estimate is not None else None,
            actual_cost=outcome.actual_usd if outcome is not None else None,
            billed_seconds=float(billed) if billed is not None else None))

    def _record_fallback(self, job: RemoteJob, reason: str) -> None:
        try:
            from canvascast_cli.dispatch.ledger import Attempt, Ledger

            Ledger(self._state()).record(Attempt(
                function=job.function, backend="local", started=self.clock(), status="ok",
                fallback_from=self.choice.name, fallback_reason=reason[:500],
                units=job.units, unit=job.unit))
        except CanvasCastError:
            pass  # the ledger is a record, never a reason to fail the job


def wait_for(backend: Backend, job_id: str, stages: Stages, *,
             clock: Callable[[], float] = time.time, limit: float | None = None
             ) -> dict[str, Any] | None:
    """Long-poll job ``job_id`` until it ends (its final status), showing its state and
    progress on ``stages``; None when ``limit`` seconds pass first."""
    deadline = clock() + limit if limit is not None else None
    state = None
    while True:
        status = backend.status(job_id, wait=POLL_WAIT)
        progress = status.get("progress") or {}
        if status["state"] != state:
            state = status["state"]
            if state in ("queued", "running"):
                stages.stage(state, progress.get("total"), progress.get("unit", ""))
        if progress and state == "running":
            stages.update(progress.get("done", 0), progress.get("total"))
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
