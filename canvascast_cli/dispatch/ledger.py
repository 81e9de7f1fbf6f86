"""The invocation ledger: one row per attempt at running a function, remote or local.

Every attempt is recorded, including retries (``attempt`` counts from 1) and the local run
a failed remote one fell back to (``fallback_from``/``fallback_reason``), so the ledger
answers "what did this job cost and why did it take three tries" as well as the
aggregate questions: how long ``render_video`` usually takes on Modal, how often it cold
starts, and what a frame of it costs.

A run and the start of its container are kept apart: ``billed_seconds`` is the run itself,
``startup_seconds`` what the container's cold start cost before it (NULL for a warm
start). The estimate a remote run prints before it starts (``cost.estimate``) reads three
figures from here, each from recent history of one function on one backend:
``seconds_per_unit`` (the run, per frame, audio second or image), ``startup_seconds`` (a
typical cold start) and ``last_ended`` (whether a container is likely still warm).

Rows live in the ``invocations`` table of the state file (``state.StateDB``); each
``record`` is one short transaction, so any number of processes can write at once. A
record that finds the file locked by another process retries until ``record_deadline``,
then raises ``state.StateBusy``: the caller warns, and a job that succeeded stays a
success. With a ``retention`` the ledger prunes itself as it is written (every
``prune_every``-th row: one indexed DELETE by age, one by count), so it never grows
without bound; ``prune`` does the same on demand.

Records are pydantic dataclasses, encoded with ``records.dump`` (rounded there, exact in
SQLite and in memory).
"""

from __future__ import annotations

import math
import sqlite3
import statistics
import time
from collections.abc import Callable, Iterable
from dataclasses import fields, replace
from typing import Annotated, Any, Literal, get_args

import tenacity
from pydantic import Field
from pydantic.dataclasses import dataclass

from canvascast_cli.config import RetentionConfig
from canvascast_cli.dispatch.state import StateBusy, StateDB
from canvascast_cli.records import Seconds, Usd

Status = Literal["ok", "failed", "cancelled"]
GroupBy = Literal["function", "backend"]
STATUSES: tuple[str, ...] = get_args(Status)

RECORD_DEADLINE = 5.0  # seconds a record may wait for a locked state file, in all
PRUNE_EVERY = 100  # with a retention: prune when a row's id is a multiple of this
_DAY = 86400.0


@dataclass(frozen=True, kw_only=True)
class Attempt:
    """One attempt at one function on one backend.

    ``units`` is what the function processes, in ``unit``: frames for a render, seconds of
    audio for a transcription, images for image generation. ``billed_seconds`` is the run
    itself as the provider bills it; ``startup_seconds``, for a cold start, the seconds the
    container took to start its process and load its engines before the run (also billed,
    kept apart so that an estimate can tell a warm start from a cold one). Costs are in
    USD. ``id`` is assigned by ``Ledger.record``.
    """

    function: str
    backend: str
    started: Seconds  # unix time
    status: Status
    duration: Seconds | None = None
    queue_seconds: Seconds | None = None
    cold_start: bool | None = None
    container_id: str | None = None
    error_code: str | None = None
    attempt: Annotated[int, Field(ge=1)] = 1  # counts from 1
    job_id: str | None = None
    fallback_from: str | None = None
    fallback_reason: str | None = None
    bytes_up: int | None = None
    bytes_down: int | None = None
    units: float | None = None
    unit: str | None = None
    estimated_cost: Usd | None = None
    actual_cost: Usd | None = None
    billed_seconds: Seconds | None = None
    startup_seconds: Seconds | None = None
    id: int | None = None


# Every column but ``id``, in one order for INSERT and SELECT.
_COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(Attempt) if f.name != "id")


@dataclass(frozen=True, kw_only=True)
class FunctionMetrics:
    """Aggregates for one function on one backend.

    Durations are over successful attempts only (a timeout's duration is the timeout, not
    the function's speed). ``total_cost`` adds each attempt's actual cost, or its estimate
    where the actual one was never known; ``estimated_only`` counts the latter. The two
    parts are also kept apart: ``actual_cost`` (the attempts with a known cost) plus
    ``estimated_cost`` (the estimates of those without one) is ``total_cost``.
    ``fallbacks`` counts the attempts that ran here because another backend could not
    (``fallback_from`` set: a local run after a failed remote one).

    ``function`` or ``backend`` is ``"*"`` in a roll-up over every function (or backend)
    (``Ledger.metrics(by=...)``).
    """

    function: str
    backend: str
    invocations: int
    successes: int
    failures: int
    cancelled: int
    error_codes: dict[str, int]
    p50_duration: Seconds | None
    p95_duration: Seconds | None
    cold_starts: int
    total_cost: Usd
    estimated_only: int
    fallbacks: int = 0
    actual_cost: Usd = 0.0
    estimated_cost: Usd = 0.0


class Ledger:
    """Reads and writes the ``invocations`` table of a ``StateDB``.

    ``retention``: prune as rows are written (``ledger_days``, ``ledger_max_rows``); None
    keeps everything. ``clock`` (unix time) dates the prunes and measures
    ``record_deadline``; ``sleep`` waits between tries at a locked file. Both are
    injectable so that tests move time instead of waiting.
    """

    def __init__(self, db: StateDB, *, retention: RetentionConfig | None = None,
                 record_deadline: float = RECORD_DEADLINE, prune_every: int = PRUNE_EVERY,
                 clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if record_deadline < 0:
            raise ValueError(f"record_deadline must be at least 0; got {record_deadline}")
        if prune_every < 1:
            raise ValueError(f"prune_every must be at least 1; got {prune_every}")
        self.db = db
        self.retention = retention
        self.record_deadline = record_deadline
        self.prune_every = prune_every
        self.clock = clock
        self.sleep = sleep

    def record(self, attempt: Attempt) -> Attempt:
        """Store one attempt; returns it with its ``id``.

        A file locked by another process is tried again (SQLite's busy wait, then short
        sleeps) for up to ``record_deadline`` seconds in all; then ``StateBusy``, which a
        caller should report as a warning: a row lost is better than a finished job
        failed. Any other failure of the state file is raised at once.
        """
        values = [getattr(attempt, name) for name in _COLUMNS]
        values[_COLUMNS.index("cold_start")] = _to_int(attempt.cold_start)
        began = self.clock()
        deadline = began + self.record_deadline

        def insert() -> int:
            # SQLite's own busy wait, cut to what is left of the deadline.
            wait = min(self.db.busy_timeout, deadline - self.clock())
            with self.db.transaction(busy_timeout=wait) as conn:
                cursor = conn.execute(
                    f"INSERT INTO invocations ({', '.join(_COLUMNS)}) "
                    f"VALUES ({', '.join('?' for _ in _COLUMNS)})", values)
                row_id = cursor.lastrowid
                assert row_id is not None  # an INSERT into a rowid table
                # Ids are shared by every writer, so this prunes once per ``prune_every``
                # rows across all processes, not once per process (most record a few).
                if self.retention is not None and row_id % self.prune_every == 0:
                    _prune(conn, self.retention.ledger_days * _DAY,
                           self.retention.ledger_max_rows, self.clock())
                return row_id

        def pause(state: tenacity.RetryCallState) -> float:
            # 50 ms doubling to 0.5 s, never past the deadline: the last try comes at it.
            step = min(0.05 * 2 ** (state.attempt_number - 1), 0.5)
            return max(0.0, min(step, deadline - self.clock()))

        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(StateBusy),
            wait=pause,
            stop=lambda _state: self.clock() >= deadline,
            sleep=self.sleep,
            reraise=True,
        )
        try:
            row_id = retrying(insert)
        except StateBusy as exc:
            raise StateBusy(
                f"{self.db.path} stayed locked by another process for "
                f"{self.clock() - began:.1f} s: the run of {attempt.function} on "
                f"{attempt.backend} was not recorded in the ledger (look for a hung "
                "canvascast)") from exc
        return replace(attempt, id=row_id)

    def prune(self, max_age_seconds: float | None, max_rows: int | None, now: float) -> int:
        """Delete the rows that started over ``max_age_seconds`` before ``now``, then the
        earliest recorded ones beyond the newest ``max_rows``; None skips a limit. Returns
        how many rows went. One indexed DELETE for each limit."""
        if max_age_seconds is not None and max_age_seconds < 0:
            raise ValueError(f"max_age_seconds must be at least 0; got {max_age_seconds}")
        if max_rows is not None and max_rows < 0:
            raise ValueError(f"max_rows must be at least 0; got {max_rows}")
        with self.db.transaction() as conn:
            return _prune(conn, max_age_seconds, max_rows, now)

    def history(self, function: str, backend: str | None = None, limit: int = 50
                ) -> list[Attempt]:
        """The latest attempts at ``function`` (on ``backend``, if given), newest first."""
        if limit < 1:
            raise ValueError(f"limit must be at least 1; got {limit}")
        where, params = _filter(function, backend)
        with self.db.read() as conn:
            rows = conn.execute(
                f"SELECT id, {', '.join(_COLUMNS)} FROM invocations WHERE {where} "
                "ORDER BY started DESC, id DESC LIMIT ?", (*params, limit)).fetchall()
        return [_attempt(row) for row in rows]

    def seconds_per_unit(self, function: str, backend: str | None = None, *,
                         window: int = 20) -> float | None:
        """Run seconds per unit over the latest ``window`` successful attempts that
        processed something, or None without such history.

        The run alone, never a container's start: ``billed_seconds``, or for a local run
        (no bill) its wall-clock ``duration`` less any ``startup_seconds``. A cold start
        recorded before the ledger kept the start apart (``cold_start`` without
        ``startup_seconds``) has the start inside its billed seconds and is left out.
        The total of seconds over the total of units (a mean weighted by units): a
        one-frame render's fixed overhead should not count as much as a long render's.
        """
        where, params = _filter(function, backend)
        with self.db.read() as conn:
            rows = conn.execute(
                "SELECT COALESCE(billed_seconds, duration - COALESCE(startup_seconds, 0)), "
                f"units FROM invocations WHERE {where} AND status = 'ok' AND units > 0 "
                "AND COALESCE(billed_seconds, duration) IS NOT NULL "
                "AND NOT (cold_start IS 1 AND startup_seconds IS NULL "
                "         AND billed_seconds IS NOT NULL) "
                "ORDER BY started DESC, id DESC LIMIT ?", (*params, window)).fetchall()
        units = sum(row[1] for row in rows)
        if not rows or units <= 0:
            return None
        return max(0.0, float(sum(row[0] for row in rows) / units))

    def startup_seconds(self, function: str, backend: str | None = None, *,
                        window: int = 10) -> float | None:
        """A typical cold start of ``function`` (on ``backend``): the median of the latest
        ``window`` recorded ones, whatever became of the run after it; None without any.
        The median, because one start that pulled a new image is not the typical one."""
        where, params = _filter(function, backend)
        with self.db.read() as conn:
            rows = conn.execute(
                f"SELECT startup_seconds FROM invocations WHERE {where} "
                "AND startup_seconds IS NOT NULL "
                "ORDER BY started DESC, id DESC LIMIT ?", (*params, window)).fetchall()
        if not rows:
            return None
        return float(statistics.median(row[0] for row in rows))

    def last_ended(self, function: str, backend: str | None = None) -> float | None:
        """When (unix time) the latest successful attempt at ``function`` (on ``backend``)
        ended — ``started`` + ``duration`` —, or None. Only a success is sure to leave
        a container behind (a failure may not have reached one, or crashed it); the
        container then stays up for the function's ``scaledown_window``. Read over the
        latest 50 successes by start, which is exact unless an earlier one ran past all
        of them."""
        where, params = _filter(function, backend)
        with self.db.read() as conn:
            row = conn.execute(
                "SELECT MAX(started + COALESCE(duration, 0)) FROM ("
                f"SELECT started, duration FROM invocations WHERE {where} AND status = 'ok' "
                "ORDER BY started DESC LIMIT 50)", params).fetchone()
        return float(row[0]) if row and row[0] is not None else None

    def metrics(self, since: float | None = None, *,
                by: tuple[GroupBy, ...] = ("function", "backend")) -> list[FunctionMetrics]:
        """Aggregates per (function, backend) over attempts started at or after ``since``
        (unix time; all of them when None), sorted by function then backend. ``by``
        groups otherwise: ``("backend",)`` rolls every function of a backend into one
        (its ``function`` is ``"*"``), ``("function",)`` every backend of a function,
        ``()`` everything. A ``since`` reads a range of the ``started`` index."""
        for name in by:
            if name not in ("function", "backend"):
                raise ValueError(f"by: {name!r}; allowed: function, backend")
        query = ("SELECT function, backend, status, error_code, duration, cold_start, "
                 "actual_cost, estimated_cost, fallback_from IS NOT NULL FROM invocations")
        params: tuple[Any, ...] = ()
        if since is not None:
            query += " WHERE started >= ?"
            params = (since,)
        with self.db.read() as conn:
            rows = conn.execute(query, params).fetchall()
        groups: dict[tuple[str, str], list[tuple[Any, ...]]] = {}
        for row in rows:
            key = (row[0] if "function" in by else "*", row[1] if "backend" in by else "*")
            groups.setdefault(key, []).append(row)
        return [_aggregate(fn, backend, group) for (fn, backend), group in sorted(groups.items())]

    def failures(self, since: float | None = None, limit: int = 5) -> list[Attempt]:
        """The latest ``limit`` failed attempts (``status`` failed) started at or after
        ``since`` (unix time; any time when None), newest first: what went wrong, with
        its ``error_code``. Reads the ``started`` index backwards."""
        if limit < 1:
            raise ValueError(f"limit must be at least 1; got {limit}")
        query = f"SELECT id, {', '.join(_COLUMNS)} FROM invocations WHERE status = 'failed'"
        params: tuple[Any, ...] = ()
        if since is not None:
            query += " AND started >= ?"
            params = (since,)
        with self.db.read() as conn:
            rows = conn.execute(query + " ORDER BY started DESC, id DESC LIMIT ?",
                                (*params, limit)).fetchall()
        return [_attempt(row) for row in rows]

    def spend(self, since: float | None = None) -> float:
        """USD spent by attempts started at or after ``since`` (unix time; all when None):
        each attempt's actual cost, or its estimate where the actual one is unknown (as
        ``FunctionMetrics.total_cost``). One indexed range sum."""
        query = "SELECT SUM(COALESCE(actual_cost, estimated_cost, 0)) FROM invocations"
        params: tuple[Any, ...] = ()
        if since is not None:
            query += " WHERE started >= ?"
            params = (since,)
        with self.db.read() as conn:
            row = conn.execute(query, params).fetchone()
        return float(row[0]) if row and row[0] is not None else 0.0


def _prune(conn: sqlite3.Connection, max_age_seconds: float | None, max_rows: int | None,
           now: float) -> int:
    deleted = 0
    if max_age_seconds is not None:  # a range of invocations_by_started
        deleted += conn.execute("DELETE FROM invocations WHERE started < ?",
                                (now - max_age_seconds,)).rowcount
    if max_rows is not None:  # a range of the rowid: ids grow in the order rows are written
        deleted += conn.execute(
            "DELETE FROM invocations WHERE id <= "
            "(SELECT id FROM invocations ORDER BY id DESC LIMIT 1 OFFSET ?)",
            (max_rows,)).rowcount
    return deleted


def _filter(function: str, backend: str | None) -> tuple[str, tuple[Any, ...]]:
    if backend is None:
        return "function = ?", (function,)
    return "function = ? AND backend = ?", (function, backend)


def _to_int(flag: bool | None) -> int | None:
    return None if flag is None else int(flag)


def _attempt(row: tuple[Any, ...]) -> Attempt:
    data = dict(zip(_COLUMNS, row[1:], strict=True))
    if data["cold_start"] is not None:
        data["cold_start"] = bool(data["cold_start"])
    return Attempt(id=row[0], **data)


def _aggregate(function: str, backend: str, rows: Iterable[tuple[Any, ...]]
               ) -> FunctionMetrics:
    invocations = successes = failures = cancelled = cold_starts = estimated_only = 0
    fallbacks = 0
    codes: dict[str, int] = {}
    durations: list[float] = []
    actual_cost = estimated_cost = 0.0
    for _fn, _backend, status, code, duration, cold, actual, estimated, fallback in rows:
        invocations += 1
        if status == "ok":
            successes += 1
            if duration is not None:
                durations.append(float(duration))
        elif status == "failed":
            failures += 1
        else:
            cancelled += 1
        if code:
            codes[code] = codes.get(code, 0) + 1
        if cold:
            cold_starts += 1
        if fallback:
            fallbacks += 1
        if actual is not None:
            actual_cost += actual
        elif estimated is not None:
            estimated_cost += estimated
            estimated_only += 1
    durations.sort()
    return FunctionMetrics(
        function=function, backend=backend, invocations=invocations, successes=successes,
        failures=failures, cancelled=cancelled, error_codes=dict(sorted(codes.items())),
        p50_duration=percentile(durations, 0.50), p95_duration=percentile(durations, 0.95),
        cold_starts=cold_starts, total_cost=actual_cost + estimated_cost,
        estimated_only=estimated_only, fallbacks=fallbacks, actual_cost=actual_cost,
        estimated_cost=estimated_cost)


def percentile(ordered: list[float], q: float) -> float | None:
    """The ``q`` quantile (0..1) of sorted values, interpolating between the two nearest
    ranks (numpy's default, "linear"); None for no values."""
    if not ordered:
        return None
    pos = (len(ordered) - 1) * q
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)
