"""The invocation ledger, and the state file it lives in (location, schema, WAL)."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from canvascast_cli.dispatch.ledger import Attempt, Ledger, percentile
from canvascast_cli.dispatch.state import APPLICATION_ID, SCHEMA_VERSION, StateDB
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
        unit="frames", estimated_cost=0.0123, actual_cost=0.0119, billed_seconds=14.0)
    fallback = Attempt(
        function="render_video", backend="local", started=T0 + 20, status="ok",
        duration=30.0, cold_start=False, attempt=3, fallback_from="http",
        fallback_reason="CIRCUIT_OPEN", job_id="job-1")
    bare = Attempt(function="render_video", backend="local", started=T0 + 40,
                   status="cancelled")
    stored = [ledger.record(a) for a in (full, fallback, bare)]
    assert all(s.id is not None for s in stored) and len({s.id for s in stored}) == 3
    assert stored[0] == Attempt(**{**full.to_dict(), "id": stored[0].id})

    history = ledger.history("render_video")
    assert history == stored[::-1]  # newest first
    assert history[1].cold_start is False and history[2].cold_start is True
    assert history[0].cold_start is None
    json.dumps([a.to_dict() for a in history])  # what --json prints


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


@pytest.mark.parametrize("bad", [dict(status="done"), dict(attempt=0)])
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
    json.dumps([m.to_dict() for m in metrics])

    recent = {(m.function, m.backend): m for m in ledger.metrics(since=T0 + 7)}
    assert recent[("render_video", "modal")].invocations == 2
    assert set(recent) == {("render_video", "modal"), ("render_video", "local"),
                           ("generate_images", "modal")}
    assert ledger.metrics(since=T0 + 11) == []


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
