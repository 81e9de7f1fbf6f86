"""A circuit breaker per remote function, shared by every canvascast process.

pybreaker's shape: the state (closed, open, half-open) lives in a storage, here behind a
tiny interface with one atomic read-modify-write, so the breaker that the CLI processes of
one user share is the same code as the in-memory one the tests also run::

    closed ──(failure_threshold consecutive retryable failures)──▶ open
    open ──(reset_timeout elapsed; ONE caller takes the trial)──▶ half-open
    half-open ──(trial succeeds)──▶ closed
    half-open ──(trial fails)──▶ open (opened_at = now: another full reset_timeout)
    half-open ──(trial's owner silent for trial_lease: it crashed)──▶ next caller's trial

What counts as a failure is ``errors.is_retryable(exc)``: timeouts, crashed containers, 5xx,
refused connections. Every other error is *neutral*: it neither counts towards opening nor
resets the count. Bad input, AUTH or GPU_OOM do show the service answered, but the same
classes are also raised locally before any request is made, and Ctrl-C (``Interrupted``)
proves nothing either way, so none of them can be taken as evidence of health. Only a
success closes the circuit. A trial that ends in a neutral error is released (the circuit
goes back to open with its old ``opened_at``), so the very next caller runs a new trial
instead of waiting for the lease to expire.

The trial lease exists for the process that takes the trial and dies (killed, machine
asleep) without reporting: after ``trial_lease`` seconds another caller may take over. It
should exceed the longest call the breaker guards, or a slow but healthy trial would be
joined by a second one; the default is ``max(reset_timeout, 600)``.

The clock is injected (``clock=time.time``) and nothing here sleeps: tests move time.

What leaves the process (``BreakerSnapshot`` for the operators' view, the extra fields of
a ``BreakerOpen`` error) is encoded by ``records.dump``: times as unix seconds, rounded to
the millisecond.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import enum
import os
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

import pydantic.dataclasses

from canvascast_cli.dispatch.state import StateDB
from canvascast_cli.errors import CanvasCastError, CircuitOpen, is_retryable
from canvascast_cli.records import Seconds, dump

Clock = Callable[[], float]


class CircuitState(enum.StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"


@dataclass(frozen=True)
class BreakerRecord:
    """What the storage keeps per key. ``failures`` counts consecutive retryable failures;
    the ``trial_*`` fields describe the running half-open trial, if any."""

    state: CircuitState = CircuitState.CLOSED
    failures: int = 0
    opened_at: float | None = None
    last_error: str | None = None
    trial_owner: str | None = None
    trial_started: float | None = None
    trial_until: float | None = None


CLOSED = BreakerRecord()


class BreakerStorage(Protocol):
    """Where breaker records live. ``update`` must be atomic across every user of the
    storage (threads, and processes for a shared one): ``fn`` sees the current record and
    returns the new one, with no other update in between. ``fn`` must be pure (it may be
    called with the lock held, and should not do I/O)."""

    def get(self, key: str) -> BreakerRecord: ...

    def update(self, key: str, fn: Callable[[BreakerRecord], BreakerRecord]
               ) -> BreakerRecord: ...

    def delete(self, key: str) -> None: ...


class MemoryStorage:
    """Records in a dict, for one process (tests, a long-running server)."""

    def __init__(self) -> None:
        self._records: dict[str, BreakerRecord] = {}
        self._lock = threading.Lock()

    def get(self, key: str) -> BreakerRecord:
        with self._lock:
            return self._records.get(key, CLOSED)

    def update(self, key: str, fn: Callable[[BreakerRecord], BreakerRecord]
               ) -> BreakerRecord:
        with self._lock:
            new = fn(self._records.get(key, CLOSED))
            self._records[key] = new
            return new

    def delete(self, key: str) -> None:
        with self._lock:
            self._records.pop(key, None)


_COLUMNS = ("state", "failures", "opened_at", "last_error", "trial_owner", "trial_started",
            "trial_until")


class SQLiteStorage:
    """Records in the state file's ``breakers`` table, shared by every CLI process: each
    ``update`` is one ``BEGIN IMMEDIATE`` transaction."""

    def __init__(self, db: StateDB) -> None:
        self.db = db

    def get(self, key: str) -> BreakerRecord:
        with self.db.read() as conn:
            return self._fetch(conn, key)

    def update(self, key: str, fn: Callable[[BreakerRecord], BreakerRecord]
               ) -> BreakerRecord:
        with self.db.transaction() as conn:
            old = self._fetch(conn, key)
            new = fn(old)
            if new != old:  # a refused call changes nothing: spare the write
                # ``updated`` is the wall time of the write, for an operator reading the
                # table; the breaker's logic only uses the injected clock's values.
                conn.execute(
                    f"INSERT OR REPLACE INTO breakers (key, {', '.join(_COLUMNS)}, updated) "
                    f"VALUES (?, {', '.join('?' for _ in _COLUMNS)}, ?)",
                    (key, new.state.value, new.failures, new.opened_at, new.last_error,
                     new.trial_owner, new.trial_started, new.trial_until, time.time()))
            return new

    def delete(self, key: str) -> None:
        with self.db.transaction() as conn:
            conn.execute("DELETE FROM breakers WHERE key = ?", (key,))

    def all(self) -> dict[str, BreakerRecord]:
        """Every stored record by key (the operators' view: ``canvascast status``). A key
        that was never written, or was reset, is closed and absent."""
        with self.db.read() as conn:
            keys = [row[0] for row in conn.execute("SELECT key FROM breakers ORDER BY key")]
            return {key: self._fetch(conn, key) for key in keys}

    @staticmethod
    def _fetch(conn: sqlite3.Connection, key: str) -> BreakerRecord:
        row = conn.execute(f"SELECT {', '.join(_COLUMNS)} FROM breakers WHERE key = ?",
                           (key,)).fetchone()
        if row is None:
            return CLOSED
        try:
            state = CircuitState(row[0])
        except ValueError:
            # Written by a newer canvascast with a state we do not know: fail safe.
            state = CircuitState.CLOSED
        return BreakerRecord(state, int(row[1]), row[2], row[3], row[4], row[5], row[6])


@dataclass(frozen=True)
class Permit:
    """Leave to make one call, returned by ``acquire`` and handed back to ``record_*``.
    ``trial`` marks the half-open trial call: its outcome decides the circuit."""

    key: str
    owner: str
    issued_at: float
    trial: bool = False


@pydantic.dataclasses.dataclass(frozen=True)
class BreakerSnapshot:
    """The circuit as an operator sees it. ``retry_at`` (unix time): when an
    open circuit lets its next trial through, or when a running trial's lease runs out."""

    key: str
    state: CircuitState
    failures: int
    opened_at: Seconds | None
    retry_at: Seconds | None
    last_error: str | None
    trial_owner: str | None


@pydantic.dataclasses.dataclass(frozen=True)
class _OpenFields:
    """What a ``BreakerOpen`` adds to the error body, encoded like every record."""

    key: str
    retry_at: Seconds | None
    last_error: str | None


class BreakerOpen(CircuitOpen):
    """``CircuitOpen`` with the breaker's key, when (unix time) it will try again and why
    it opened."""

    def __init__(self, message: str, *, key: str, retry_at: float | None,
                 last_error: str | None, details: Sequence[str] = ()) -> None:
        super().__init__(message, details=details)
        self.key = key
        self.retry_at = retry_at
        self.last_error = last_error

    def to_dict(self) -> dict[str, Any]:
        """``CircuitOpen``'s body plus ``key``, ``retry_at`` and ``last_error``."""
        body = super().to_dict()
        body.update(dump(_OpenFields(self.key, self.retry_at, self.last_error)))
        return body


def default_owner() -> str:
    """Unique per breaker instance: host, process and a random part (pids are reused)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class CircuitBreaker:
    """A circuit breaker for one key (``"http:render_video"``) over a storage.

    ``acquire()`` before the call, then exactly one of ``record_success(permit)`` or
    ``record_failure(permit, exc)`` after it; or let ``guard()`` do both.
    """

    def __init__(self, storage: BreakerStorage, key: str, *, failure_threshold: int = 5,
                 reset_timeout: float = 60.0, clock: Clock = time.time,
                 owner: str | None = None, trial_lease: float | None = None) -> None:
        if failure_threshold < 1:
            raise ValueError(f"failure_threshold must be at least 1, got {failure_threshold}")
        if reset_timeout <= 0:
            raise ValueError(f"reset_timeout must be positive, got {reset_timeout}")
        self.storage = storage
        self.key = key
        self.failure_threshold = failure_threshold
        self.reset_timeout = reset_timeout
        self.clock = clock
        self.owner = owner or default_owner()
        self.trial_lease = trial_lease if trial_lease is not None else max(reset_timeout, 600.0)
        if self.trial_lease <= 0:
            raise ValueError(f"trial_lease must be positive, got {self.trial_lease}")

    def acquire(self) -> Permit:
        """Leave to make the call, or ``CircuitOpen`` (a ``BreakerOpen``) saying when the
        next attempt will be let through. Across every process sharing the storage, at
        most one caller at a time holds the half-open trial."""
        # The common case needs no write lock: a closed circuit lets everyone through.
        now = self.clock()
        if self.storage.get(self.key).state is CircuitState.CLOSED:
            return Permit(self.key, self.owner, now)

        refused: list[BreakerRecord] = []
        granted: list[Permit] = []

        def take(rec: BreakerRecord) -> BreakerRecord:
            refused.clear()
            granted.clear()
            if rec.state is CircuitState.CLOSED:  # closed by someone since our look
                granted.append(Permit(self.key, self.owner, now))
                return rec
            if not self._trial_due(rec, now):
                refused.append(rec)
                return rec
            granted.append(Permit(self.key, self.owner, now, trial=True))
            return replace(rec, state=CircuitState.HALF_OPEN, trial_owner=self.owner,
                           trial_started=now, trial_until=now + self.trial_lease)

        self.storage.update(self.key, take)
        if granted:
            return granted[0]
        raise self._open_error(refused[0], now)

    def record_success(self, permit: Permit) -> None:
        """The call succeeded: a closed circuit's count starts again; a trial closes an
        open or half-open circuit."""
        def succeed(rec: BreakerRecord) -> BreakerRecord:
            if rec.state is CircuitState.CLOSED:
                return CLOSED
            # A call begun before the circuit opened says nothing about the service since
            # then; only a trial begun after it may close it (even one whose lease ran out
            # and was taken over: the service answered, which is all a trial asks).
            if not permit.trial or (rec.opened_at is not None
                                    and permit.issued_at <= rec.opened_at):
                return rec
            return CLOSED

        if self.storage.get(self.key) != CLOSED:
            self.storage.update(self.key, succeed)

    def record_failure(self, permit: Permit, exc: BaseException) -> None:
        """The call raised ``exc``. Retryable failures count (and may open the circuit, or
        re-open it after a failed trial); others are neutral (see the module docstring)."""
        now = self.clock()
        if not is_retryable(exc):
            if permit.trial:
                self.storage.update(self.key, lambda rec: self._release(rec, permit))
            return
        code = exc.code if isinstance(exc, CanvasCastError) else type(exc).__name__

        def fail(rec: BreakerRecord) -> BreakerRecord:
            failures = rec.failures + 1
            if rec.state is CircuitState.CLOSED:
                if failures >= self.failure_threshold:
                    return BreakerRecord(CircuitState.OPEN, failures, now, code)
                return replace(rec, failures=failures, last_error=code)
            if permit.trial and self._holds_trial(rec, permit):
                # The trial failed: open again, for another full reset_timeout.
                return BreakerRecord(CircuitState.OPEN, failures, now, code)
            # A call that was running when the circuit opened, or a trial whose lease ran
            # out and was taken over: count it, but leave the decision to the current trial.
            return replace(rec, failures=failures, last_error=code)

        self.storage.update(self.key, fail)

    @contextlib.contextmanager
    def guard(self) -> Iterator[Permit]:
        """``acquire`` on entry, then ``record_success`` or ``record_failure`` on exit.
        Raises ``CircuitOpen`` on entry when the call may not be made."""
        permit = self.acquire()
        try:
            yield permit
        except BaseException as exc:
            self.record_failure(permit, exc)
            raise
        self.record_success(permit)

    def snapshot(self) -> BreakerSnapshot:
        """The stored state of the circuit, and when it next lets a call through."""
        return self._snapshot(self.storage.get(self.key))

    def reset(self) -> None:
        """Close the circuit and forget its count (an operator's override)."""
        self.storage.delete(self.key)

    # -----------------------------------------------------------------------------------

    def _trial_due(self, rec: BreakerRecord, now: float) -> bool:
        if rec.state is CircuitState.OPEN:
            return rec.opened_at is None or now >= rec.opened_at + self.reset_timeout
        # Half-open: a trial is running, unless its owner went silent past its lease.
        return rec.trial_until is None or now >= rec.trial_until

    @staticmethod
    def _holds_trial(rec: BreakerRecord, permit: Permit) -> bool:
        return (rec.state is CircuitState.HALF_OPEN and rec.trial_owner == permit.owner
                and rec.trial_started == permit.issued_at)

    def _release(self, rec: BreakerRecord, permit: Permit) -> BreakerRecord:
        """Give the trial back without a verdict: open as before, the next caller tries."""
        if not self._holds_trial(rec, permit):
            return rec
        return replace(rec, state=CircuitState.OPEN, trial_owner=None, trial_started=None,
                       trial_until=None)

    def _retry_at(self, rec: BreakerRecord) -> float | None:
        if rec.state is CircuitState.OPEN and rec.opened_at is not None:
            return rec.opened_at + self.reset_timeout
        if rec.state is CircuitState.HALF_OPEN:
            return rec.trial_until
        return None

    def _snapshot(self, rec: BreakerRecord) -> BreakerSnapshot:
        return BreakerSnapshot(self.key, rec.state, rec.failures, rec.opened_at,
                               self._retry_at(rec), rec.last_error, rec.trial_owner)

    def _open_error(self, rec: BreakerRecord, now: float) -> BreakerOpen:
        retry_at = self._retry_at(rec)
        last = rec.last_error or "unknown"
        when = ""
        if retry_at is not None:
            clock_time = dt.datetime.fromtimestamp(retry_at).strftime("%H:%M:%S")
            when = f" at {clock_time} (in {max(0, round(retry_at - now))} s)"
        if rec.state is CircuitState.HALF_OPEN:
            message = (f"circuit {self.key} is half-open: another call is testing the service "
                       f"(last error {last}); it lets calls through again once that trial "
                       f"succeeds, or takes a new trial{when}")
        else:
            message = (f"circuit {self.key} is open after {rec.failures} failures (last error "
                       f"{last}); it will let one trial call through{when}")
        return BreakerOpen(message, key=self.key, retry_at=retry_at, last_error=rec.last_error)
