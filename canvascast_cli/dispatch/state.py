"""canvascast's persistent state: one SQLite file shared by every CLI process.

The file (``paths.state_dir() / "state.sqlite3"``, the folder created private) holds the
circuit-breaker state per key, the invocation ledger, the warm-pool overrides operators
set and a log of operators' actions (``ops.overrides``). Many CLI processes use it at once
(a CI matrix, a shell loop with ``&``), so:

- the journal is WAL, so readers never block the single writer and vice versa;
- every read-modify-write runs in a short ``BEGIN IMMEDIATE`` transaction, which takes the
  write lock up front: two processes can never both read the old value and both write,
  and a writer that has to wait does so in SQLite's busy handler (``busy_timeout``), not
  by failing half-way with ``database is locked``;
- a connection is opened for each use and closed after it, never kept: nothing is shared
  across ``fork()`` or threads, and no process holds the file open while it renders.

The schema is versioned with ``PRAGMA user_version`` and migrated when the file is opened.
Migrations only ever add (tables, columns with defaults, indexes), so an older canvascast
can keep using a file a newer one has migrated.

Every ``sqlite3`` exception is translated here, so callers only ever see
``CanvasCastError``; two failures have classes of their own, because a caller can do
something about them that it cannot about the others::

    JobFailed
    ├── StateBusy       another process held the lock past the wait (SQLITE_BUSY/LOCKED):
    │                   retry later, or carry on without the write (the ledger warns)
    └── StateUnusable   the file is not a database, is corrupted, or is another program's:
                        run without the state (a local run), and say how to fix the file

Each names the file and what to do about it.

Only the standard library's ``sqlite3`` is used.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from canvascast_cli import paths
from canvascast_cli.errors import CanvasCastError, InvalidInput, JobFailed, from_os_error

STATE_FILENAME = "state.sqlite3"
DEFAULT_BUSY_TIMEOUT = 10.0

# Stamped into the header (``PRAGMA application_id``) so that another program's SQLite
# file at our path is recognised as not ours instead of being written into.
APPLICATION_ID = int.from_bytes(b"CnvC", "big")

# One entry per schema version: the statements that take the previous version to it.
# Append only; never edit a released entry (files in the wild already ran it).
_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (  # 1: circuit breakers and the invocation ledger
        """
        CREATE TABLE IF NOT EXISTS breakers (
            key           TEXT PRIMARY KEY,
            state         TEXT NOT NULL,
            failures      INTEGER NOT NULL DEFAULT 0,
            opened_at     REAL,
            last_error    TEXT,
            trial_owner   TEXT,
            trial_started REAL,
            trial_until   REAL,
            updated       REAL
        )
        """,
        """
        CREATE TABLE IF NOT EXISTS invocations (
            id              INTEGER PRIMARY KEY,
            job_id          TEXT,
            function        TEXT NOT NULL,
            backend         TEXT NOT NULL,
            started         REAL NOT NULL,
            duration        REAL,
            queue_seconds   REAL,
            cold_start      INTEGER,
            container_id    TEXT,
            status          TEXT NOT NULL,
            error_code      TEXT,
            attempt         INTEGER NOT NULL DEFAULT 1,
            fallback_from   TEXT,
            fallback_reason TEXT,
            bytes_up        INTEGER,
            bytes_down      INTEGER,
            units           REAL,
            unit            TEXT,
            estimated_cost  REAL,
            actual_cost     REAL,
            billed_seconds  REAL
        )
        """,
        "CREATE INDEX IF NOT EXISTS invocations_by_function "
        "ON invocations (function, backend, started)",
        "CREATE INDEX IF NOT EXISTS invocations_by_started ON invocations (started)",
    ),
    (  # 2: what a cold start cost, apart from the run (billed_seconds is the run alone);
        # NULL for a warm start and for every row written before
        "ALTER TABLE invocations ADD COLUMN startup_seconds REAL",
        # The ledger's "typical cold start" reads only these rows: a few among many.
        "CREATE INDEX IF NOT EXISTS invocations_cold_starts "
        "ON invocations (function, backend, started) WHERE startup_seconds IS NOT NULL",
    ),
    (  # 3: the operators' half: warm-pool overrides (re-applied after every deploy,
        # which wipes them on Modal) and a log of what operators did (breaker resets,
        # overrides, deploys)
        """
        CREATE TABLE IF NOT EXISTS warm_overrides (
            app               TEXT NOT NULL,
            function          TEXT NOT NULL,
            min_containers    INTEGER,
            max_containers    INTEGER,
            buffer_containers INTEGER,
            scaledown_window  INTEGER,
            set_at            REAL NOT NULL,
            set_by            TEXT,
            PRIMARY KEY (app, function)
        )
        """,
        """
        CREATE TABLE IF NOT EXISTS events (
            id      INTEGER PRIMARY KEY,
            at      REAL NOT NULL,
            kind    TEXT NOT NULL,
            subject TEXT,
            detail  TEXT,
            actor   TEXT
        )
        """,
        "CREATE INDEX IF NOT EXISTS events_by_at ON events (at)",
    ),
)
SCHEMA_VERSION = len(_MIGRATIONS)


class StateBusy(JobFailed):
    """The state file stayed locked by another process for longer than the caller waits."""


class StateUnusable(JobFailed):
    """The state file cannot be used at all: not an SQLite database, corrupted, or another
    program's. Nothing retried will change that; moving the file aside will."""


def default_path() -> Path:
    """Where the state file lives unless told otherwise (``CANVASCAST_HOME`` moves it)."""
    return paths.state_dir() / STATE_FILENAME


class StateDB:
    """The state file: opened (created, migrated) on construction, used in transactions.

    ``transaction()`` is for every read-modify-write (``BEGIN IMMEDIATE``), ``read()`` for
    reads that need one consistent snapshot over several queries. Keep both short: the
    write lock is held for the whole block, and other processes wait on it.
    """

    def __init__(self, path: str | os.PathLike[str] | None = None, *,
                 busy_timeout: float = DEFAULT_BUSY_TIMEOUT) -> None:
        self.path = Path(path) if path is not None else default_path()
        self.busy_timeout = busy_timeout
        try:
            # Private: the ledger names the user's jobs and error messages.
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise from_os_error(exc, "creating the state folder") from exc
        self._open()

    def __repr__(self) -> str:
        return f"StateDB({str(self.path)!r})"

    @contextmanager
    def transaction(self, *, busy_timeout: float | None = None
                    ) -> Iterator[sqlite3.Connection]:
        """A write transaction: the write lock is taken on entry (waiting up to
        ``busy_timeout`` for it, the database's own by default; ``StateBusy`` after that),
        committed on a clean exit, rolled back on any error."""
        with self._connect(busy_timeout) as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                _rollback(conn)
                raise
            conn.execute("COMMIT")

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """A read transaction: every query in the block sees the same snapshot. In WAL
        mode it neither waits for writers nor makes them wait."""
        with self._connect() as conn:
            conn.execute("BEGIN")
            try:
                yield conn
            finally:
                _rollback(conn)  # nothing was written; ending it releases the snapshot

    # -----------------------------------------------------------------------------------

    @contextmanager
    def _connect(self, busy_timeout: float | None = None) -> Iterator[sqlite3.Connection]:
        """A fresh connection for one use; every ``sqlite3`` error becomes ours."""
        timeout = self.busy_timeout if busy_timeout is None else max(0.0, busy_timeout)
        try:
            # isolation_level=None: transactions are begun explicitly (BEGIN IMMEDIATE),
            # never implicitly by the sqlite3 module before a DML statement.
            conn = sqlite3.connect(self.path, timeout=timeout, isolation_level=None)
        except sqlite3.Error as exc:
            raise self._translate(exc, timeout) from exc
        try:
            # NORMAL is durable in WAL mode except for the last commits before a power
            # cut, which for breaker counts and history rows is the right trade.
            conn.execute("PRAGMA synchronous = NORMAL")
            yield conn
        except sqlite3.Error as exc:
            raise self._translate(exc, timeout) from exc
        finally:
            conn.close()

    def _open(self) -> None:
        """Check the file is ours, switch it to WAL and bring its schema up to date."""
        with self._connect() as conn:
            # The first read of the header: a non-SQLite file fails right here.
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            app_id = conn.execute("PRAGMA application_id").fetchone()[0]
            if app_id not in (0, APPLICATION_ID):
                raise StateUnusable(
                    f"{self.path} is an SQLite database of another program, not "
                    "canvascast's state; move it away or set CANVASCAST_HOME to another "
                    "folder")
            if version < SCHEMA_VERSION:
                self._migrate(conn)
            mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
            if str(mode).lower() != "wal":
                # Persistent: set once per file. It can fail on filesystems without
                # shared memory (some network mounts); the rollback journal that stays
                # is slower under contention but just as correct, so that is not an error.
                conn.execute("PRAGMA journal_mode = WAL")

    def _migrate(self, conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")
        try:
            # Read again under the write lock: another process may have migrated since.
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            for target in range(version + 1, SCHEMA_VERSION + 1):
                for statement in _MIGRATIONS[target - 1]:
                    conn.execute(statement)
            if version < SCHEMA_VERSION:
                conn.execute(f"PRAGMA application_id = {APPLICATION_ID:d}")
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION:d}")
        except BaseException:
            _rollback(conn)
            raise
        conn.execute("COMMIT")

    def _translate(self, exc: sqlite3.Error, waited: float) -> CanvasCastError:
        """One clear line for an SQLite failure, naming the file and the way out.
        ``waited``: the busy timeout the failed connection had."""
        code = (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF  # primary code
        where = self.path
        if code in (sqlite3.SQLITE_NOTADB, sqlite3.SQLITE_CORRUPT):
            return StateUnusable(
                f"{where} is not a usable canvascast state database ({exc}); move it aside "
                "or delete it and run again: it only holds circuit-breaker state and run "
                "history, and is recreated empty")
        if code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
            return StateBusy(
                f"{where} stayed locked by another process for over {waited:g} s ({exc}); "
                "run again, or look for a hung canvascast")
        if code in (sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_READONLY, sqlite3.SQLITE_PERM,
                    sqlite3.SQLITE_AUTH):
            return InvalidInput(
                f"cannot open the state database {where} for writing ({exc}); check its "
                "permissions, or set CANVASCAST_HOME to a writable folder")
        if code == sqlite3.SQLITE_FULL:
            return JobFailed(f"{where}: {exc} (free some space and run again)")
        return JobFailed(f"state database {where}: {exc}")


def _rollback(conn: sqlite3.Connection) -> None:
    # SQLite may have rolled back already (after an I/O error): then there is nothing to undo.
    if conn.in_transaction:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
