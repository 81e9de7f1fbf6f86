"""The invocation ledger, and the state file it lives in (location, schema, WAL,
migrations, a lock held by another process, a file that is not a database)."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from canvascast_cli import errors
from canvascast_cli.config import RetentionConfig
from canvascast_cli.dispatch.ledger import Attempt, FunctionMetrics, Ledger, percentile
from canvascast_cli.dispatch.state import (
    _MIGRATIONS,
    APPLICATION_ID,
    SCHEMA_VERSION,
    StateBusy,
    StateDB,
    StateUnusable,
)
from canvascast_cli.records import dump
from tests.helpers import REPO

T0 = 1_700_000_000.0


@pytest.fixture
def db(tmp_path: Path) -> StateDB:
    return StateDB(tmp_path / "state.sqlite3")


@pytest.fixture
def ledger(db: StateDB) -> Ledger:
    return Ledger(db)


def attempt(**overrides: Any) -> Attempt:
    values: dict[str, Any] = dict(function="render_video", backend="modal", started=T0,
                                  status="ok", duration=10.0)
    values.update(overrides)
    return Attempt(**values)


# ---------------------------------------------------------------------------------------
# Rows


def test_attempt_round_trips(ledger: Ledger) -> None:
    full = Attempt(
        job_id="job-1", function="render_video", backend="http", started=T0 + 0.25,
        duration=12.5, queue_seconds=1.5, cold_start=True, container_id="ta-01H",
        status="failed", error_code="TIMEOUT", attempt=2, fallback_from=None,
        fallback_reason=None, bytes_up=1_234_567, bytes_down=89, units=240.0,
        unit="frames", estimated_cost=0.0123, actual_cost=0.0119, billed_seconds=14.0,
        startup_seconds=38.5)
    fallback = Attempt(
        function="render_video", backend="local", started=T0 + 20, status="ok",
        duration=30.0, cold_start=False, attempt=3, fallback_from="http",
        fallback_reason="CIRCUIT_OPEN", job_id="job-1")
    bare = Attempt(function="render_video", backend="local", started=T0 + 40,
                   status="cancelled")
    stored = [ledger.record(a) for a in (full, fallback, bare)]
    assert all(s.id is not None for s in stored) and len({s.id for s in stored}) == 3
    assert stored[0] == Attempt(**{**dump(full), "id": stored[0].id})

    history = ledger.history("render_video")
    assert history == stored[::-1]  # newest first
    assert history[1].cold_start is False and history[2].cold_start is True
    assert history[0].cold_start is None
    assert history[2].startup_seconds == 38.5 and history[1].startup_seconds is None
    json.dumps([dump(a) for a in history])  # what --json prints


def test_rows_are_exact_and_only_their_encoding_is_rounded(ledger: Ledger) -> None:
    cost = 0.00047511284500000007  # what --json used to print
    stored = ledger.record(attempt(started=T0 + 0.123456, duration=1 / 3,
                                   estimated_cost=cost, billed_seconds=2 / 3))
    (back,) = ledger.history("render_video")
    assert back == stored
    assert (back.estimated_cost, back.duration, back.started) == (cost, 1 / 3, T0 + 0.123456)
    data = dump(back)
    assert data["estimated_cost"] == 0.000475113
    assert (data["duration"], data["billed_seconds"], data["started"]) == (
        0.333, 0.667, 1_700_000_000.123)
    assert "0.00047511284500000007" not in json.dumps(data)


def test_history_filters_and_limits(ledger: Ledger) -> None:
    for i in range(5):
        ledger.record(attempt(started=T0 + i))
        ledger.record(attempt(started=T0 + i, backend="local"))
    ledger.record(attempt(function="transcribe_audio"))
    modal = ledger.history("render_video", "modal", limit=3)
    assert [a.started for a in modal] == [T0 + 4, T0 + 3, T0 + 2]
    assert {a.backend for a in modal} == {"modal"}
    assert len(ledger.history("render_video")) == 10
    assert ledger.history("generate_images") == []
    with pytest.raises(ValueError):
        ledger.history("render_video", limit=0)


@pytest.mark.parametrize("bad", [dict(status="done"), dict(attempt=0),
                                 dict(started="yesterday")])
def test_invalid_attempts_are_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        attempt(**bad)


# ---------------------------------------------------------------------------------------
# Estimates and metrics


def test_seconds_per_unit(ledger: Ledger) -> None:
    assert ledger.seconds_per_unit("render_video") is None
    # Weighted by units: (10 + 30) s over (100 + 300) frames.
    ledger.record(attempt(units=100, unit="frames", billed_seconds=10.0, started=T0))
    ledger.record(attempt(units=300, unit="frames", billed_seconds=30.0, started=T0 + 1))
    # Not evidence of speed: failed, cancelled, nothing processed, another function.
    ledger.record(attempt(status="failed", units=10, billed_seconds=500.0))
    ledger.record(attempt(status="cancelled", units=10, billed_seconds=500.0))
    ledger.record(attempt(units=0, billed_seconds=500.0))
    ledger.record(attempt(units=None, billed_seconds=500.0))
    ledger.record(attempt(function="transcribe_audio", units=10, billed_seconds=500.0))
    assert ledger.seconds_per_unit("render_video") == pytest.approx(0.1)
    assert ledger.seconds_per_unit("render_video", "modal") == pytest.approx(0.1)
    assert ledger.seconds_per_unit("render_video", "http") is None

    # Local runs have no bill: their duration stands in.
    ledger.record(attempt(backend="local", units=50, duration=25.0, billed_seconds=None))
    assert ledger.seconds_per_unit("render_video", "local") == pytest.approx(0.5)


def test_seconds_per_unit_uses_recent_history(ledger: Ledger) -> None:
    ledger.record(attempt(units=10, billed_seconds=100.0, started=T0))  # before an upgrade
    for i in range(3):
        ledger.record(attempt(units=10, billed_seconds=1.0, started=T0 + 10 + i))
    assert ledger.seconds_per_unit("render_video", window=3) == pytest.approx(0.1)
    assert ledger.seconds_per_unit("render_video", window=4) == pytest.approx(103 / 40)


def test_seconds_per_unit_leaves_cold_starts_out(ledger: Ledger) -> None:
    # A cold start's 40 s of start-up is kept apart: the run alone is per unit.
    ledger.record(attempt(units=100, billed_seconds=10.0, cold_start=True,
                          startup_seconds=40.0, started=T0))
    ledger.record(attempt(units=100, billed_seconds=10.0, cold_start=False, started=T0 + 1))
    assert ledger.seconds_per_unit("render_video", "modal") == pytest.approx(0.1)
    # A cold start written before the ledger kept them apart has its start inside its
    # billed seconds: it is no evidence of the run's speed.
    ledger.record(attempt(units=100, billed_seconds=50.0, cold_start=True, started=T0 + 2))
    assert ledger.seconds_per_unit("render_video", "modal") == pytest.approx(0.1)
    # A local run's duration includes loading the engines, when that was measured.
    ledger.record(attempt(backend="local", units=10, duration=12.0, startup_seconds=7.0))
    assert ledger.seconds_per_unit("render_video", "local") == pytest.approx(0.5)


def test_typical_startup_is_the_median_of_recent_cold_starts(ledger: Ledger) -> None:
    assert ledger.startup_seconds("transcribe_audio", "modal") is None
    for i, startup in enumerate([200.0, 30.0, 40.0, 35.0]):  # an image pull, then usual
        ledger.record(attempt(function="transcribe_audio", cold_start=True,
                              startup_seconds=startup, started=T0 + i,
                              status="failed" if i == 3 else "ok"))
    for i in range(5):  # warm starts say nothing about a cold one
        ledger.record(attempt(function="transcribe_audio", cold_start=False,
                              started=T0 + 10 + i))
    assert ledger.startup_seconds("transcribe_audio", "modal") == pytest.approx(37.5)
    assert ledger.startup_seconds("transcribe_audio", "modal", window=3) == 35.0
    assert ledger.startup_seconds("transcribe_audio", "http") is None
    assert ledger.startup_seconds("transcribe_audio") == pytest.approx(37.5)


def test_last_ended(ledger: Ledger) -> None:
    assert ledger.last_ended("render_video", "modal") is None
    ledger.record(attempt(started=T0, duration=30.0))
    ledger.record(attempt(started=T0 + 10, duration=5.0))  # started later, ended earlier
    ledger.record(attempt(started=T0 + 100, duration=5.0, status="failed"))  # no container
    ledger.record(attempt(started=T0 + 200, duration=5.0, backend="http"))
    assert ledger.last_ended("render_video", "modal") == T0 + 30
    assert ledger.last_ended("render_video", "http") == T0 + 205
    assert ledger.last_ended("render_video") == T0 + 205


def _plan(db: StateDB, sql: str, params: tuple[Any, ...]) -> str:
    with db.read() as conn:
        return " ".join(row[-1] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", params))


def test_queries_the_estimate_makes_use_indexes(db: StateDB) -> None:
    # Cheap whatever the ledger's size: no query scans the table.
    plans = [
        _plan(db, "DELETE FROM invocations WHERE started < ?", (T0,)),
        _plan(db, "SELECT startup_seconds FROM invocations WHERE function = ? AND "
              "backend = ? AND startup_seconds IS NOT NULL ORDER BY started DESC, id DESC "
              "LIMIT 10", ("f", "b")),
    ]
    assert "invocations_by_started" in plans[0]
    assert "invocations_cold_starts" in plans[1]
    assert not any("SCAN invocations" in plan for plan in plans), plans


# ---------------------------------------------------------------------------------------
# Retention


def test_prune_by_age_and_by_count(ledger: Ledger) -> None:
    for i in range(10):
        ledger.record(attempt(started=T0 + i * 86400))  # one a day
    assert ledger.prune(None, None, now=T0 + 20 * 86400) == 0
    # Older than 15 days at day 20: days 0-4 go.
    assert ledger.prune(15 * 86400, None, now=T0 + 20 * 86400) == 5
    assert [a.started for a in ledger.history("render_video")] == [
        T0 + i * 86400 for i in range(9, 4, -1)]
    # The earliest recorded beyond the newest 3 go.
    assert ledger.prune(None, 3, now=T0) == 2
    assert len(ledger.history("render_video")) == 3
    assert ledger.prune(None, 3, now=T0) == 0
    assert ledger.prune(0, None, now=T0 + 100 * 86400) == 3
    with pytest.raises(ValueError):
        ledger.prune(-1, None, now=T0)
    with pytest.raises(ValueError):
        ledger.prune(None, -1, now=T0)


def test_ledger_prunes_itself_as_it_is_written(db: StateDB) -> None:
    now = T0 + 1000 * 86400
    retention = RetentionConfig(ledger_days=30, ledger_max_rows=1000)
    ledger = Ledger(db, retention=retention, prune_every=10, clock=lambda: now)
    old = [ledger.record(attempt(started=now - 40 * 86400)) for _ in range(9)]
    assert len(ledger.history("render_video", limit=100)) == 9  # not yet: every 10th row
    tenth = ledger.record(attempt(started=now - 40))
    assert tenth.id == 10
    assert [a.id for a in ledger.history("render_video", limit=100)] == [10]
    assert all(a.id not in (None, 10) for a in old)

    # By count: 1095 more rows (ids 11-1105, written at once), then five through the
    # ledger: the fifth is id 1110, which prunes to the newest 1000.
    with db.transaction() as conn:
        conn.executemany("INSERT INTO invocations (function, backend, started, status) "
                         "VALUES ('render_video', 'modal', ?, 'ok')",
                         [(now - 1,)] * 1095)
    for _ in range(5):
        ledger.record(attempt(started=now))
    with db.read() as conn:
        count, low = conn.execute("SELECT COUNT(*), MIN(id) FROM invocations").fetchone()
    assert (count, low) == (1000, 111)

    # Without a retention nothing is ever pruned.
    keep = Ledger(db, prune_every=1, clock=lambda: now + 365 * 86400)
    keep.record(attempt(started=now))
    with db.read() as conn:
        assert conn.execute("SELECT COUNT(*) FROM invocations").fetchone()[0] == count + 1


def test_metrics(ledger: Ledger) -> None:
    assert ledger.metrics() == []
    for i, duration in enumerate([1.0, 2.0, 3.0, 4.0, 10.0]):
        ledger.record(attempt(duration=duration, cold_start=i == 0, actual_cost=0.5,
                              started=T0 + i))
    ledger.record(attempt(status="failed", error_code="TIMEOUT", duration=600.0,
                          estimated_cost=0.25, started=T0 + 5))
    ledger.record(attempt(status="failed", error_code="TIMEOUT", cold_start=True,
                          started=T0 + 6))
    ledger.record(attempt(status="failed", error_code="CONTAINER_CRASH", started=T0 + 7))
    ledger.record(attempt(status="cancelled", error_code="INTERRUPTED", started=T0 + 8))
    ledger.record(attempt(backend="local", duration=7.0, started=T0 + 9))
    ledger.record(attempt(function="generate_images", started=T0 + 10, duration=None))

    metrics = ledger.metrics()
    assert [(m.function, m.backend) for m in metrics] == [
        ("generate_images", "modal"), ("render_video", "local"), ("render_video", "modal")]
    images, local, modal = metrics
    assert (modal.invocations, modal.successes, modal.failures, modal.cancelled) == (9, 5, 3, 1)
    assert modal.error_codes == {"CONTAINER_CRASH": 1, "INTERRUPTED": 1, "TIMEOUT": 2}
    # Durations of successful attempts only (the 600 s timeout is not a speed).
    assert modal.p50_duration == pytest.approx(3.0)
    assert modal.p95_duration == pytest.approx(4.0 + 0.8 * 6.0)
    assert modal.cold_starts == 2
    assert modal.total_cost == pytest.approx(5 * 0.5 + 0.25) and modal.estimated_only == 1
    assert (local.invocations, local.p50_duration, local.p95_duration) == (1, 7.0, 7.0)
    assert (images.p50_duration, images.total_cost) == (None, 0.0)
    data = json.loads(json.dumps([dump(m) for m in metrics]))
    assert data[2]["error_codes"] == modal.error_codes
    assert data[2]["p95_duration"] == 8.8 and data[2]["total_cost"] == 2.75
    assert isinstance(modal, FunctionMetrics)

    recent = {(m.function, m.backend): m for m in ledger.metrics(since=T0 + 7)}
    assert recent[("render_video", "modal")].invocations == 2
    assert set(recent) == {("render_video", "modal"), ("render_video", "local"),
                           ("generate_images", "modal")}
    assert ledger.metrics(since=T0 + 11) == []


def test_metrics_keep_costs_and_fallbacks_apart_and_roll_up(ledger: Ledger) -> None:
    ledger.record(attempt(actual_cost=0.5, estimated_cost=0.4, started=T0))
    ledger.record(attempt(estimated_cost=0.25, started=T0 + 1))
    ledger.record(attempt(backend="http", status="failed", error_code="TIMEOUT",
                          estimated_cost=0.125, started=T0 + 2))
    ledger.record(attempt(backend="local", fallback_from="modal", fallback_reason="down",
                          started=T0 + 3, duration=4.0))
    ledger.record(attempt(function="generate_images", actual_cost=1.0, started=T0 + 4))

    pairs = {(m.function, m.backend): m for m in ledger.metrics()}
    modal = pairs[("render_video", "modal")]
    assert (modal.actual_cost, modal.estimated_cost, modal.total_cost) == (0.5, 0.25, 0.75)
    assert modal.estimated_only == 1 and modal.fallbacks == 0
    assert pairs[("render_video", "local")].fallbacks == 1

    by_backend = {m.backend: m for m in ledger.metrics(by=("backend",))}
    assert set(by_backend) == {"http", "local", "modal"}
    assert {m.function for m in by_backend.values()} == {"*"}
    assert by_backend["modal"].invocations == 3
    assert by_backend["modal"].actual_cost == 1.5
    assert by_backend["modal"].p50_duration == 10.0
    by_function = {m.function: m for m in ledger.metrics(by=("function",))}
    assert by_function["render_video"].invocations == 4
    assert by_function["render_video"].backend == "*"
    assert by_function["render_video"].error_codes == {"TIMEOUT": 1}
    [everything] = ledger.metrics(by=())
    assert everything.invocations == 5 and everything.total_cost == pytest.approx(1.875)
    assert ledger.metrics(since=T0 + 4, by=("backend",))[0].invocations == 1
    with pytest.raises(ValueError, match="by"):
        ledger.metrics(by=("job",))  # type: ignore[arg-type]


def test_failures_newest_first_within_the_window(ledger: Ledger) -> None:
    assert ledger.failures() == []
    for i, code in enumerate(["TIMEOUT", "CONTAINER_CRASH", "SERVER_ERROR", "TIMEOUT"]):
        ledger.record(attempt(status="failed", error_code=code, started=T0 + i))
    ledger.record(attempt(status="cancelled", error_code="INTERRUPTED", started=T0 + 9))
    ledger.record(attempt(started=T0 + 10))
    assert [a.error_code for a in ledger.failures()] == [
        "TIMEOUT", "SERVER_ERROR", "CONTAINER_CRASH", "TIMEOUT"]
    assert [a.started for a in ledger.failures(limit=2)] == [T0 + 3, T0 + 2]
    assert [a.started for a in ledger.failures(since=T0 + 2)] == [T0 + 3, T0 + 2]
    assert all(a.id is not None for a in ledger.failures())
    with pytest.raises(ValueError):
        ledger.failures(limit=0)


def test_spend_sums_actual_or_estimated_costs(ledger: Ledger) -> None:
    assert ledger.spend() == 0.0
    ledger.record(attempt(actual_cost=0.5, estimated_cost=9.0, started=T0))
    ledger.record(attempt(estimated_cost=0.25, started=T0 + 1))
    ledger.record(attempt(started=T0 + 2))  # no cost known at all
    ledger.record(attempt(backend="local", actual_cost=0.125, started=T0 + 3))
    assert ledger.spend() == 0.875
    assert ledger.spend(since=T0 + 1) == 0.375
    assert ledger.spend(since=T0 + 4) == 0.0


def test_percentile_interpolates_like_numpy() -> None:
    assert percentile([], 0.5) is None
    assert percentile([7.0], 0.95) == 7.0
    assert percentile([1.0, 2.0], 0.5) == 1.5
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.95) == pytest.approx(95.05)
    assert percentile(values, 0.0) == 1.0 and percentile(values, 1.0) == 100.0


# ---------------------------------------------------------------------------------------
# Many writers at once

WRITER = """
import sys
from canvascast_cli.dispatch.ledger import Attempt, Ledger
from canvascast_cli.dispatch.state import StateDB

path, name, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
ledger = Ledger(StateDB(path))
print("ready", flush=True)
sys.stdin.readline()
for i in range(count):
    ledger.record(Attempt(function="render_video", backend=name, started=float(i),
                          status="ok", duration=1.0, units=1.0))
print("done", flush=True)
"""


def test_concurrent_writers_lose_no_rows(db: StateDB, ledger: Ledger) -> None:
    writers, count = 8, 25
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(db.path), f"w{n}",
                               str(count)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env)
             for n in range(writers)]
    try:
        for proc in procs:  # every writer has the file open before any writes
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready", (
                proc.communicate(timeout=60)[1])
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        for proc in procs:
            out, err = proc.communicate(timeout=120)  # only to catch a hang
            assert proc.returncode == 0 and out.strip() == "done", err
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    metrics = {m.backend: m for m in ledger.metrics()}
    assert sorted(metrics) == [f"w{n}" for n in range(writers)]
    assert all(m.invocations == count for m in metrics.values())
    with db.read() as conn:
        ids = [row[0] for row in conn.execute("SELECT id FROM invocations")]
    assert len(ids) == len(set(ids)) == writers * count


# ---------------------------------------------------------------------------------------
# The state file itself


def test_state_file_default_location_is_private(isolated_env: Path) -> None:
    db = StateDB()
    home = Path(os.environ["CANVASCAST_HOME"])
    assert db.path == home / "state.sqlite3" and db.path.is_file()
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    conn = sqlite3.connect(db.path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
    finally:
        conn.close()


def test_existing_empty_database_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"
    sqlite3.connect(path).close()  # a valid, empty SQLite file (user_version 0)
    ledger = Ledger(StateDB(path))
    assert ledger.record(attempt()).id == 1
    StateDB(path)  # opening again is a no-op
    assert len(ledger.history("render_video")) == 1


def test_file_from_a_newer_canvascast_stays_usable(db: StateDB) -> None:
    with db.transaction() as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
        conn.execute("ALTER TABLE invocations ADD COLUMN gpu TEXT")  # additive, as promised
    ledger = Ledger(StateDB(db.path))
    ledger.record(attempt())
    assert len(ledger.history("render_video")) == 1


def test_failed_transaction_is_rolled_back(db: StateDB, ledger: Ledger) -> None:
    with pytest.raises(RuntimeError), db.transaction() as conn:
        conn.execute("INSERT INTO invocations (function, backend, started, status) "
                     "VALUES ('f', 'b', 0, 'ok')")
        raise RuntimeError("interrupted half-way")
    assert ledger.history("f") == []


def test_old_state_file_is_migrated(tmp_path: Path) -> None:
    # A file as the first release left it: schema 1, one row, no startup_seconds column.
    path = tmp_path / "state.sqlite3"
    conn = sqlite3.connect(path, isolation_level=None)
    for statement in _MIGRATIONS[0]:
        conn.execute(statement)
    conn.execute(f"PRAGMA application_id = {APPLICATION_ID:d}")
    conn.execute("PRAGMA user_version = 1")
    conn.execute("INSERT INTO invocations (function, backend, started, status, cold_start, "
                 "billed_seconds, units) VALUES ('render_video', 'modal', ?, 'ok', 1, 50, 100)",
                 (T0,))
    conn.close()

    ledger = Ledger(StateDB(path))
    (old,) = ledger.history("render_video")
    assert (old.cold_start, old.billed_seconds, old.startup_seconds) == (True, 50.0, None)
    ledger.record(attempt(started=T0 + 1, cold_start=True, startup_seconds=40.0,
                          billed_seconds=10.0, units=100))
    assert ledger.startup_seconds("render_video") == 40.0
    assert ledger.seconds_per_unit("render_video") == pytest.approx(0.1)  # the old row: out
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 3
        names = {row[1] for row in conn.execute("PRAGMA index_list(invocations)")}
        assert "invocations_cold_starts" in names
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master "
                                                 "WHERE type = 'table'")}
        assert {"warm_overrides", "events"} <= tables
    finally:
        conn.close()


# ---------------------------------------------------------------------------------------
# A locked or unusable state file


class FakeTime:
    """A clock that only ``sleep`` moves; records the sleeps."""

    def __init__(self, now: float = T0) -> None:
        self.now = now
        self.sleeps: list[float] = []
        self.on_sleep: Any = None

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        if self.on_sleep is not None:
            self.on_sleep(len(self.sleeps))


@pytest.fixture
def locked(db: StateDB) -> Any:
    """Another process's connection holding the write lock (``BEGIN EXCLUSIVE``)."""
    other = sqlite3.connect(db.path, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    yield other
    if other.in_transaction:
        other.execute("ROLLBACK")
    other.close()


def test_record_gives_up_on_a_locked_file_after_its_deadline(db: StateDB, locked: Any) -> None:
    fake = FakeTime()
    # busy_timeout 0: SQLite does not wait (really) on its own; the ledger's retries
    # and their waits are what is tested, on the fake clock.
    ledger = Ledger(StateDB(db.path, busy_timeout=0), record_deadline=2.0, clock=fake,
                    sleep=fake.sleep)
    with pytest.raises(StateBusy) as caught:
        ledger.record(attempt())
    assert isinstance(caught.value, errors.JobFailed)
    message = str(caught.value)
    assert str(db.path) in message and "not recorded" in message and "2.0 s" in message
    assert fake.sleeps[:5] == pytest.approx([0.05, 0.1, 0.2, 0.4, 0.5])
    assert sum(fake.sleeps) == pytest.approx(2.0)  # and not a moment past the deadline
    locked.execute("ROLLBACK")
    assert Ledger(db).history("render_video") == []


def test_record_succeeds_once_the_lock_is_released(db: StateDB, locked: Any) -> None:
    fake = FakeTime()
    fake.on_sleep = lambda n: locked.execute("ROLLBACK") if n == 3 else None
    ledger = Ledger(StateDB(db.path, busy_timeout=0), clock=fake, sleep=fake.sleep)
    stored = ledger.record(attempt())
    assert stored.id == 1 and len(fake.sleeps) == 3
    assert ledger.history("render_video") == [stored]


def test_sqlite_busy_wait_counts_against_the_deadline(db: StateDB, locked: Any) -> None:
    # The real clock and SQLite's own busy wait: a 0.05 s deadline is kept (give or take
    # the busy handler's last step), however long the database's own busy_timeout.
    ledger = Ledger(StateDB(db.path, busy_timeout=30), record_deadline=0.05)
    began = time.monotonic()
    with pytest.raises(StateBusy):
        ledger.record(attempt())
    assert time.monotonic() - began < 2.0


def test_garbage_state_file_is_unusable(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"
    path.write_bytes(b"this is not a database\n" * 200)
    with pytest.raises(StateUnusable) as caught:
        StateDB(path)
    assert isinstance(caught.value, errors.JobFailed) and str(path) in str(caught.value)
    assert not errors.is_retryable(caught.value)


def test_state_file_garbled_after_opening_is_unusable(db: StateDB) -> None:
    ledger = Ledger(db, clock=FakeTime(), sleep=lambda s: pytest.fail(f"retried: {s}"))
    data = bytearray(db.path.read_bytes())
    data[:16] = b"garbage garbage!"
    db.path.write_bytes(bytes(data))
    with pytest.raises(StateUnusable, match="delete it"):
        ledger.record(attempt())
