"""Warm-pool overrides and the operators' event log, in the state file.

Modal forgets every autoscaler override when the app is redeployed, so the overrides an
operator sets (``canvascast warm set``) are kept here, per app and function, and
``canvascast deploy`` applies them again. ``Events`` is an append-only log of what
operators did — breaker resets, overrides set or cleared, deploys — which
``canvascast status`` lists beside the ledger's invocations.

Both live in the state file (``dispatch.state.StateDB``, schema 3), each write one short
transaction.
"""

from __future__ import annotations

import getpass
import socket
import time
from collections.abc import Callable

from pydantic.dataclasses import dataclass

from canvascast_cli.dispatch.state import StateDB
from canvascast_cli.ops.fleet import AUTOSCALER_FIELDS, Autoscaler
from canvascast_cli.records import Seconds


@dataclass(frozen=True, kw_only=True)
class Override:
    """An operator's override of one function's autoscaler: when and by whom it was set."""

    function: str
    settings: Autoscaler
    set_at: Seconds  # unix time
    set_by: str | None = None


@dataclass(frozen=True, kw_only=True)
class Event:
    """One thing an operator did: ``kind`` (``breaker_reset``, ``warm_set``,
    ``warm_reset``, ``deploy``), what it was done to, and a line of detail."""

    at: Seconds
    kind: str
    subject: str | None = None
    detail: str | None = None
    actor: str | None = None
    id: int | None = None


def actor() -> str:
    """Who is acting, for the log: ``user@host`` (no credentials, ever)."""
    try:
        user = getpass.getuser()
    except Exception:  # no login name (a container without a passwd entry)
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


class Overrides:
    """The ``warm_overrides`` table: at most one override per (app, function)."""

    def __init__(self, db: StateDB, app: str, *,
                 clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self.app = app
        self.clock = clock

    def all(self) -> dict[str, Override]:
        """Every override of this app, by function."""
        with self.db.read() as conn:
            rows = conn.execute(
                "SELECT function, min_containers, max_containers, buffer_containers, "
                "scaledown_window, set_at, set_by FROM warm_overrides WHERE app = ? "
                "ORDER BY function", (self.app,)).fetchall()
        return {row[0]: Override(function=row[0], settings=Autoscaler(
            min_containers=row[1], max_containers=row[2], buffer_containers=row[3],
            scaledown_window=row[4]), set_at=row[5], set_by=row[6]) for row in rows}

    def get(self, function: str) -> Override | None:
        return self.all().get(function)

    def set(self, function: str, settings: Autoscaler, *, by: str | None = None) -> Override:
        """Record ``settings`` over any earlier override of ``function`` (settings not
        given keep the earlier override's)."""
        now = self.clock()
        with self.db.transaction() as conn:
            row = conn.execute(
                "SELECT min_containers, max_containers, buffer_containers, "
                "scaledown_window FROM warm_overrides WHERE app = ? AND function = ?",
                (self.app, function)).fetchone()
            earlier = Autoscaler(**dict(zip(AUTOSCALER_FIELDS, row, strict=True))) if row else (
                Autoscaler())
            merged = settings.over(earlier)
            conn.execute(
                "INSERT OR REPLACE INTO warm_overrides (app, function, min_containers, "
                "max_containers, buffer_containers, scaledown_window, set_at, set_by) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (self.app, function, merged.min_containers, merged.max_containers,
                 merged.buffer_containers, merged.scaledown_window, now, by))
        return Override(function=function, settings=merged, set_at=now, set_by=by)

    def clear(self, function: str) -> bool:
        """Forget ``function``'s override; whether there was one."""
        with self.db.transaction() as conn:
            return conn.execute("DELETE FROM warm_overrides WHERE app = ? AND function = ?",
                                (self.app, function)).rowcount > 0


class Events:
    """The ``events`` table: the operators' log, newest last."""

    def __init__(self, db: StateDB, *, clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self.clock = clock

    def record(self, kind: str, subject: str | None = None, detail: str | None = None,
               *, by: str | None = None) -> Event:
        now = self.clock()
        with self.db.transaction() as conn:
            cursor = conn.execute(
                "INSERT INTO events (at, kind, subject, detail, actor) VALUES (?, ?, ?, ?, ?)",
                (now, kind, subject, detail, by))
        return Event(at=now, kind=kind, subject=subject, detail=detail, actor=by,
                     id=cursor.lastrowid)

    def since(self, since: float | None = None, *, limit: int = 20) -> list[Event]:
        """The latest ``limit`` events at or after ``since`` (unix time), oldest first."""
        query = "SELECT id, at, kind, subject, detail, actor FROM events"
        params: tuple[float | int, ...] = ()
        if since is not None:
            query += " WHERE at >= ?"
            params = (since,)
        with self.db.read() as conn:
            rows = conn.execute(query + " ORDER BY at DESC, id DESC LIMIT ?",
                                (*params, limit)).fetchall()
        return [Event(id=r[0], at=r[1], kind=r[2], subject=r[3], detail=r[4], actor=r[5])
                for r in reversed(rows)]
