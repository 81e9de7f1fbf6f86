"""The invocation ledger: one row per attempt at running a function, remote or local.

Every attempt is recorded, including retries (``attempt`` counts from 1) and the local run
a failed remote one fell back to (``fallback_from``/``fallback_reason``), so the ledger
answers "what did this job cost and why did it take three tries" as well as the
aggregate questions: how long ``render_video`` usually takes on Modal, how often it cold
starts, and what a frame of it costs (``seconds_per_unit``, the basis of the estimate a
remote run prints before it starts).

Rows live in the ``invocations`` table of the state file (``state.StateDB``); each
``record`` is one short transaction, so any number of processes can write at once.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Literal, get_args

from canvascast_cli.dispatch.state import StateDB

Status = Literal["ok", "failed", "cancelled"]
STATUSES: tuple[str, ...] = get_args(Status)


@dataclass(frozen=True, kw_only=True)
class Attempt:
    """One attempt at one function on one backend.

    ``units`` is what the function processes, in ``unit``: frames for a render, seconds of
    audio for a transcription, images for image generation. ``billed_seconds`` is what the
    provider bills (on Modal: container seconds, cold start included); costs are in USD.
    ``id`` is assigned by ``Ledger.record``.
    """

    function: str
    backend: str
    started: float  # unix time
    status: Status
    duration: float | None = None
    queue_seconds: float | None = None
    cold_start: bool | None = None
    container_id: str | None = None
    error_code: str | None = None
    attempt: int = 1
    job_id: str | None = None
    fallback_from: str | None = None
    fallback_reason: str | None = None
    bytes_up: int | None = None
    bytes_down: int | None = None
    units: float | None = None
    unit: str | None = None
    estimated_cost: float | None = None
    actual_cost: float | None = None
    billed_seconds: float | None = None
    id: int | None = None

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {', '.join(STATUSES)}; got {self.status!r}")
        if self.attempt < 1:
            raise ValueError(f"attempt counts from 1; got {self.attempt}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# Every column but ``id``, in one order for INSERT and SELECT.
_COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(Attempt) if f.name != "id")


@dataclass(frozen=True)
class FunctionMetrics:
    """Aggregates for one function on one backend.

    Durations are over successful attempts only (a timeout's duration is the timeout, not
    the function's speed). ``total_cost`` adds each attempt's actual cost, or its estimate
    where the actual one was never known; ``estimated_only`` counts the latter.
    """

    function: str
    backend: str
    invocations: int
    successes: int
    failures: int
    cancelled: int
    error_codes: Mapping[str, int]
    p50_duration: float | None
    p95_duration: float | None
    cold_starts: int
    total_cost: float
    estimated_only: int

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["error_codes"] = dict(self.error_codes)
        return data


class Ledger:
    """Reads and writes the ``invocations`` table of a ``StateDB``."""

    def __init__(self, db: StateDB) -> None:
        self.db = db

    def record(self, attempt: Attempt) -> Attempt:
        """Store one attempt; returns it with its ``id``."""
        values = [getattr(attempt, name) for name in _COLUMNS]
        values[_COLUMNS.index("cold_start")] = _to_int(attempt.cold_start)
        with self.db.transaction() as conn:
            cursor = conn.execute(
                f"INSERT INTO invocations ({', '.join(_COLUMNS)}) "
                f"VALUES ({', '.join('?' for _ in _COLUMNS)})", values)
            row_id = cursor.lastrowid
        return replace(attempt, id=row_id)

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
        """Billed seconds per unit over the latest ``window`` successful attempts that
        processed something, or None without such history.

        The total of seconds over the total of units (a mean weighted by units): a
        one-frame render's fixed overhead should not count as much as a long render's.
        Local runs have no bill; their wall-clock ``duration`` stands in.
        """
        where, params = _filter(function, backend)
        with self.db.read() as conn:
            rows = conn.execute(
                "SELECT COALESCE(billed_seconds, duration), units FROM invocations "
                f"WHERE {where} AND status = 'ok' AND units > 0 "
                "AND COALESCE(billed_seconds, duration) IS NOT NULL "
                "ORDER BY started DESC, id DESC LIMIT ?", (*params, window)).fetchall()
        units = sum(row[1] for row in rows)
        if not rows or units <= 0:
            return None
        return float(sum(row[0] for row in rows) / units)

    def metrics(self, since: float | None = None) -> list[FunctionMetrics]:
        """Aggregates per (function, backend) over attempts started at or after ``since``
        (unix time; all of them when None), sorted by function then backend."""
        query = ("SELECT function, backend, status, error_code, duration, cold_start, "
                 "actual_cost, estimated_cost FROM invocations")
        params: tuple[Any, ...] = ()
        if since is not None:
            query += " WHERE started >= ?"
            params = (since,)
        with self.db.read() as conn:
            rows = conn.execute(query, params).fetchall()
        groups: dict[tuple[str, str], list[tuple[Any, ...]]] = {}
        for row in rows:
            groups.setdefault((row[0], row[1]), []).append(row)
        return [_aggregate(fn, backend, group) for (fn, backend), group in sorted(groups.items())]


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
    codes: dict[str, int] = {}
    durations: list[float] = []
    cost = 0.0
    for _fn, _backend, status, code, duration, cold, actual, estimated in rows:
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
        if actual is not None:
            cost += actual
        elif estimated is not None:
            cost += estimated
            estimated_only += 1
    durations.sort()
    return FunctionMetrics(
        function=function, backend=backend, invocations=invocations, successes=successes,
        failures=failures, cancelled=cancelled, error_codes=dict(sorted(codes.items())),
        p50_duration=percentile(durations, 0.50), p95_duration=percentile(durations, 0.95),
        cold_starts=cold_starts, total_cost=cost, estimated_only=estimated_only)


def percentile(ordered: list[float], q: float) -> float | None:
    """The ``q`` quantile (0..1) of sorted values, interpolating between the two nearest
    ranks (numpy's default, "linear"); None for no values."""
    if not ordered:
        return None
    pos = (len(ordered) - 1) * q
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)
