"""The circuit breaker: one behavioural suite run against every storage (as pybreaker's own
tests do), then the SQLite storage across real processes, then a broken state file.

Time is a fake clock the tests move; nothing sleeps.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import FrozenInstanceError
from pathlib import Path
from typing import Any

import pytest

from canvascast_cli import errors
from canvascast_cli.dispatch.breaker import (
    BreakerOpen,
    BreakerStorage,
    CircuitBreaker,
    CircuitState,
    MemoryStorage,
    SQLiteStorage,
)
from canvascast_cli.dispatch.state import StateDB, StateUnusable
from canvascast_cli.records import dump
from tests.helpers import REPO

KEY = "http:render_video"
THRESHOLD = 5
RESET = 60.0
LEASE = 900.0
T0 = 1_700_000_000.0


class FakeClock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=["memory", "sqlite"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> BreakerStorage:
    if request.param == "memory":
        return MemoryStorage()
    return SQLiteStorage(StateDB(tmp_path / "state.sqlite3"))


Make = Callable[..., CircuitBreaker]


@pytest.fixture
def make(storage: BreakerStorage, clock: FakeClock) -> Make:
    """Breakers on the same key and storage, as separate processes would hold them."""

    def build(owner: str = "a", key: str = KEY, **kwargs: Any) -> CircuitBreaker:
        options: dict[str, Any] = dict(failure_threshold=THRESHOLD, reset_timeout=RESET,
                                       clock=clock, owner=owner, trial_lease=LEASE)
        options.update(kwargs)
        return CircuitBreaker(storage, key, **options)

    return build


def fail(breaker: CircuitBreaker, times: int = 1,
         exc: BaseException | None = None) -> None:
    for _ in range(times):
        permit = breaker.acquire()
        breaker.record_failure(permit, exc if exc is not None else errors.Timeout("timed out"))


def open_circuit(breaker: CircuitBreaker) -> None:
    fail(breaker, THRESHOLD)
    assert breaker.snapshot().state is CircuitState.OPEN


# ---------------------------------------------------------------------------------------
# The behavioural suite, against MemoryStorage and SQLiteStorage


def test_closed_circuit_lets_calls_through(make: Make) -> None:
    breaker = make()
    permit = breaker.acquire()
    assert not permit.trial
    breaker.record_success(permit)
    snap = breaker.snapshot()
    assert (snap.state, snap.failures, snap.opened_at, snap.retry_at) == (
        CircuitState.CLOSED, 0, None, None)


def test_opens_after_threshold_retryable_failures(make: Make, clock: FakeClock) -> None:
    breaker = make()
    fail(breaker, THRESHOLD - 1)
    assert breaker.snapshot().state is CircuitState.CLOSED
    fail(breaker, 1, errors.ServerError("502 Bad Gateway"))

    with pytest.raises(errors.CircuitOpen) as caught:
        breaker.acquire()
    exc = caught.value
    assert exc.code == "CIRCUIT_OPEN" and exc.exit_code == errors.EXIT_CIRCUIT_OPEN
    assert not errors.is_retryable(exc)
    assert KEY in str(exc) and "SERVER_ERROR" in str(exc) and "in 60 s" in str(exc)
    assert isinstance(exc, BreakerOpen)
    assert exc.retry_at == T0 + RESET and exc.last_error == "SERVER_ERROR"


@pytest.mark.parametrize("exc", [
    errors.InvalidInput("bad timeline"),
    errors.AuthFailed("401"),
    errors.JobFailed("ffmpeg said no"),
    errors.GpuOutOfMemory("CUDA OOM"),
    errors.Interrupted(),
    KeyboardInterrupt(),
    ValueError("a bug"),
], ids=lambda e: type(e).__name__)
def test_non_retryable_errors_never_open_the_circuit(make: Make, exc: BaseException) -> None:
    breaker = make()
    fail(breaker, THRESHOLD * 3, exc)
    snap = breaker.snapshot()
    assert snap.state is CircuitState.CLOSED and snap.failures == 0
    breaker.acquire()


def test_non_retryable_errors_neither_count_nor_reset(make: Make) -> None:
    breaker = make()
    fail(breaker, 3)
    fail(breaker, 1, errors.InvalidInput("bad timeline"))
    assert breaker.snapshot().failures == 3
    fail(breaker, 2)
    assert breaker.snapshot().state is CircuitState.OPEN


def test_untranslated_network_errors_count(make: Make) -> None:
    breaker = make()
    fail(breaker, THRESHOLD - 1, ConnectionRefusedError("refused"))
    fail(breaker, 1, TimeoutError())
    snap = breaker.snapshot()
    assert snap.state is CircuitState.OPEN and snap.last_error == "TimeoutError"


def test_success_resets_the_consecutive_count(make: Make) -> None:
    breaker = make()
    fail(breaker, THRESHOLD - 1)
    breaker.record_success(breaker.acquire())
    snap = breaker.snapshot()
    assert (snap.failures, snap.last_error) == (0, None)
    fail(breaker, THRESHOLD - 1)
    assert breaker.snapshot().state is CircuitState.CLOSED


def test_open_refuses_until_reset_timeout(make: Make, clock: FakeClock) -> None:
    breaker = make()
    open_circuit(breaker)
    clock.advance(RESET - 0.1)
    with pytest.raises(errors.CircuitOpen):
        breaker.acquire()
    with pytest.raises(errors.CircuitOpen):
        make(owner="b").acquire()
    clock.advance(0.1)
    assert breaker.acquire().trial


def test_exactly_one_trial_in_half_open(make: Make, clock: FakeClock) -> None:
    first, second, third = make("a"), make("b"), make("c")
    open_circuit(first)
    clock.advance(RESET)
    permit = second.acquire()
    assert permit.trial and permit.owner == "b"
    for other in (first, third, second):  # the trial's own breaker may not start a second
        with pytest.raises(errors.CircuitOpen, match="half-open"):
            other.acquire()
    snap = first.snapshot()
    assert snap.state is CircuitState.HALF_OPEN and snap.trial_owner == "b"


def test_trial_success_closes(make: Make, clock: FakeClock) -> None:
    trial_breaker, other = make("a"), make("b")
    open_circuit(trial_breaker)
    clock.advance(RESET)
    permit = trial_breaker.acquire()
    trial_breaker.record_success(permit)
    snap = other.snapshot()
    assert (snap.state, snap.failures, snap.opened_at, snap.trial_owner, snap.last_error) == (
        CircuitState.CLOSED, 0, None, None, None)
    assert not other.acquire().trial


def test_trial_failure_reopens_for_another_reset_timeout(make: Make, clock: FakeClock) -> None:
    breaker = make()
    open_circuit(breaker)
    clock.advance(RESET + 5)
    permit = breaker.acquire()
    clock.advance(2)
    breaker.record_failure(permit, errors.ContainerCrash("exit 137"))
    snap = breaker.snapshot()
    assert snap.state is CircuitState.OPEN and snap.trial_owner is None
    assert snap.opened_at == T0 + RESET + 7 and snap.retry_at == T0 + 2 * RESET + 7
    assert snap.last_error == "CONTAINER_CRASH" and snap.failures == THRESHOLD + 1
    clock.advance(RESET - 1)
    with pytest.raises(errors.CircuitOpen):
        make("b").acquire()
    clock.advance(1)
    assert make("b").acquire().trial


def test_trial_ending_in_a_neutral_error_is_released(make: Make, clock: FakeClock) -> None:
    breaker = make("a")
    open_circuit(breaker)
    clock.advance(RESET)
    permit = breaker.acquire()
    breaker.record_failure(permit, KeyboardInterrupt())
    snap = breaker.snapshot()
    assert snap.state is CircuitState.OPEN and snap.opened_at == T0
    assert make("b").acquire().trial  # at once: no waiting for the lease


def test_abandoned_trial_expires_after_its_lease(make: Make, clock: FakeClock) -> None:
    crashed, survivor = make("crashed"), make("survivor")
    open_circuit(crashed)
    clock.advance(RESET)
    lost = crashed.acquire()  # ... and the process dies without reporting
    clock.advance(LEASE - 1)
    with pytest.raises(errors.CircuitOpen) as caught:
        survivor.acquire()
    assert isinstance(caught.value, BreakerOpen)
    assert caught.value.retry_at == T0 + RESET + LEASE
    clock.advance(1)
    taken = survivor.acquire()
    assert taken.trial and survivor.snapshot().trial_owner == "survivor"

    # The lost trial's late verdict does not override the running one.
    crashed.record_failure(lost, errors.Timeout("late"))
    assert survivor.snapshot().state is CircuitState.HALF_OPEN
    survivor.record_success(taken)
    assert survivor.snapshot().state is CircuitState.CLOSED


def test_default_trial_lease(storage: BreakerStorage) -> None:
    assert CircuitBreaker(storage, KEY, reset_timeout=60).trial_lease == 600
    assert CircuitBreaker(storage, KEY, reset_timeout=3600).trial_lease == 3600


def test_call_begun_before_opening_cannot_close(make: Make, clock: FakeClock) -> None:
    slow, other = make("slow"), make("other")
    permit = slow.acquire()
    clock.advance(1)
    open_circuit(other)
    slow.record_success(permit)  # it started while the service still worked
    assert other.snapshot().state is CircuitState.OPEN


def test_snapshot_contents(make: Make, clock: FakeClock) -> None:
    breaker = make("me")
    fail(breaker, 2, errors.RateLimited("429"))
    snap = breaker.snapshot()
    assert (snap.key, snap.state, snap.failures, snap.last_error, snap.opened_at,
            snap.retry_at, snap.trial_owner) == (
        KEY, CircuitState.CLOSED, 2, "RATE_LIMITED", None, None, None)

    fail(breaker, 3)
    snap = breaker.snapshot()
    assert (snap.state, snap.failures, snap.last_error, snap.opened_at, snap.retry_at) == (
        CircuitState.OPEN, 5, "TIMEOUT", T0, T0 + RESET)

    clock.advance(RESET)
    breaker.acquire()
    snap = breaker.snapshot()
    assert (snap.state, snap.trial_owner, snap.retry_at) == (
        CircuitState.HALF_OPEN, "me", T0 + RESET + LEASE)

    data = json.loads(json.dumps(dump(snap)))
    assert data == {"key": KEY, "state": "half-open", "failures": 5, "opened_at": T0,
                    "retry_at": T0 + RESET + LEASE, "last_error": "TIMEOUT",
                    "trial_owner": "me"}
    with pytest.raises(FrozenInstanceError):
        snap.failures = 0  # type: ignore[misc]


def test_reset_closes_for_operators(make: Make) -> None:
    breaker = make()
    open_circuit(breaker)
    make("operator").reset()
    snap = breaker.snapshot()
    assert (snap.state, snap.failures) == (CircuitState.CLOSED, 0)
    breaker.acquire()


def test_keys_are_independent(make: Make) -> None:
    render = make(key="http:render_video")
    open_circuit(render)
    make(key="http:transcribe_audio").acquire()
    make(key="modal:render_video").acquire()


def test_guard_records_the_outcome(make: Make, clock: FakeClock) -> None:
    breaker = make()
    for _ in range(THRESHOLD):
        with pytest.raises(errors.Timeout), breaker.guard():
            raise errors.Timeout("timed out")
    with pytest.raises(errors.CircuitOpen), breaker.guard():
        pytest.fail("an open circuit must not run the call")
    clock.advance(RESET)
    with breaker.guard() as permit:
        assert permit.trial
    assert breaker.snapshot().state is CircuitState.CLOSED


def test_open_error_envelope(make: Make) -> None:
    breaker = make()
    open_circuit(breaker)
    with pytest.raises(errors.CircuitOpen) as caught:
        breaker.acquire()
    body = caught.value.to_dict()
    assert body["code"] == "CIRCUIT_OPEN" and body["retryable"] is False
    assert (body["key"], body["retry_at"], body["last_error"]) == (KEY, T0 + RESET, "TIMEOUT")


def test_times_are_encoded_like_every_record(storage: BreakerStorage) -> None:
    # Unix seconds to the millisecond, in the snapshot and in the open error alike.
    clock = FakeClock(T0 + 0.1 + 0.2)  # 1700000000.3000002
    breaker = CircuitBreaker(storage, KEY, failure_threshold=1, reset_timeout=1 / 3,
                             clock=clock)
    fail(breaker)
    with pytest.raises(BreakerOpen) as caught:
        breaker.acquire()
    assert caught.value.retry_at == clock.now + 1 / 3  # exact in memory
    retry_at = round(clock.now + 1 / 3, 3)
    body = caught.value.to_dict()
    assert (body["retry_at"], body["key"], body["last_error"]) == (retry_at, KEY, "TIMEOUT")
    snap = dump(breaker.snapshot())
    assert (snap["retry_at"], snap["opened_at"]) == (retry_at, round(clock.now, 3))
    assert body["message"] == str(caught.value) and json.dumps(body)


def test_invalid_settings_are_refused(storage: BreakerStorage) -> None:
    with pytest.raises(ValueError, match="failure_threshold"):
        CircuitBreaker(storage, KEY, failure_threshold=0)
    with pytest.raises(ValueError, match="reset_timeout"):
        CircuitBreaker(storage, KEY, reset_timeout=0)


def test_default_owners_are_unique(storage: BreakerStorage) -> None:
    owners = {CircuitBreaker(storage, KEY).owner for _ in range(3)}
    assert len(owners) == 3 and all(str(os.getpid()) in o for o in owners)


# ---------------------------------------------------------------------------------------
# Across processes: the SQLite storage is what separate CLI invocations share

# A child process: opens the state file, says "ready", waits for "go" on stdin (so that
# all children start their work together), runs ACTION, prints its result.
CHILD = """
import sys, time
from canvascast_cli import errors
from canvascast_cli.dispatch.breaker import CircuitBreaker, SQLiteStorage
from canvascast_cli.dispatch.state import StateDB

path, action, count, threshold = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
breaker = CircuitBreaker(SQLiteStorage(StateDB(path)), "http:render_video",
                         failure_threshold=threshold, reset_timeout=60.0)
print("ready", flush=True)
sys.stdin.readline()
if action == "fail":
    for _ in range(count):
        breaker.record_failure(breaker.acquire(), errors.Timeout("timed out"))
    print("done", flush=True)
elif action == "trial":
    try:
        print("trial" if breaker.acquire().trial else "closed", flush=True)
    except errors.CircuitOpen:
        print("refused", flush=True)
"""


def _children(path: Path, action: str, n: int, *, count: int = 1,
              threshold: int = THRESHOLD) -> list[str]:
    """Run ``n`` children together; their last output lines, once all have finished."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen([sys.executable, "-c", CHILD, str(path), action, str(count),
                               str(threshold)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env)
             for _ in range(n)]
    try:
        for proc in procs:  # all have opened the file before any starts
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready", (
                proc.communicate(timeout=60)[1])
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        outputs = []
        for proc in procs:
            out, err = proc.communicate(timeout=120)  # only to catch a hang
            assert proc.returncode == 0, err
            outputs.append(out.strip())
        return outputs
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


@pytest.fixture
def state_path(tmp_path: Path) -> Path:
    return tmp_path / "shared" / "state.sqlite3"


def test_state_persists_across_processes(state_path: Path) -> None:
    assert _children(state_path, "fail", 1, count=THRESHOLD) == ["done"]
    breaker = CircuitBreaker(SQLiteStorage(StateDB(state_path)), KEY)
    snap = breaker.snapshot()
    assert snap.state is CircuitState.OPEN and snap.failures == THRESHOLD
    assert snap.trial_owner is None and snap.last_error == "TIMEOUT"
    with pytest.raises(errors.CircuitOpen):
        breaker.acquire()


@pytest.mark.parametrize("n", [2, 8])
def test_one_trial_across_processes(state_path: Path, n: int) -> None:
    # Opened long ago (by the clock of the children, which is the real one).
    past = CircuitBreaker(SQLiteStorage(StateDB(state_path)), KEY,
                          clock=lambda: time.time() - 3600)
    open_circuit(past)
    results = _children(state_path, "trial", n)
    assert sorted(results) == ["refused"] * (n - 1) + ["trial"]
    assert past.snapshot().state is CircuitState.HALF_OPEN


def test_concurrent_failures_are_all_counted(state_path: Path) -> None:
    StateDB(state_path)  # created once; the children race on the counter, not the schema
    assert _children(state_path, "fail", 8, count=50, threshold=10**6) == ["done"] * 8
    snap = CircuitBreaker(SQLiteStorage(StateDB(state_path)), KEY).snapshot()
    assert (snap.state, snap.failures) == (CircuitState.CLOSED, 400)


def test_processes_racing_to_create_the_file(state_path: Path) -> None:
    # Nobody has created it: eight first runs at once must agree on schema and WAL.
    assert _children(state_path, "fail", 8, count=5, threshold=10**6) == ["done"] * 8
    assert CircuitBreaker(SQLiteStorage(StateDB(state_path)), KEY).snapshot().failures == 40


# ---------------------------------------------------------------------------------------
# A broken state file is a clear error, not a traceback


@pytest.fixture
def sqlite_state(state_path: Path) -> Iterator[Path]:
    StateDB(state_path)
    yield state_path


@pytest.mark.parametrize("content", [
    b"this is not a database\n" * 200,
    b"\x00" * 100,
], ids=["text", "zeros"])
def test_corrupt_state_file_is_a_clear_error(state_path: Path, content: bytes) -> None:
    state_path.parent.mkdir(parents=True)
    state_path.write_bytes(content)
    with pytest.raises(StateUnusable) as caught:
        StateDB(state_path)
    assert isinstance(caught.value, errors.JobFailed)
    message = str(caught.value)
    assert str(state_path) in message and "delete it" in message
    assert not errors.is_retryable(caught.value)


def test_state_file_garbled_after_opening(sqlite_state: Path) -> None:
    storage = SQLiteStorage(StateDB(sqlite_state))
    data = bytearray(sqlite_state.read_bytes())
    data[:16] = b"garbage garbage!"
    sqlite_state.write_bytes(bytes(data))
    with pytest.raises(StateUnusable, match=str(sqlite_state)):
        CircuitBreaker(storage, KEY).acquire()


def test_another_programs_database_is_refused(state_path: Path) -> None:
    state_path.parent.mkdir(parents=True)
    conn = sqlite3.connect(state_path)
    conn.execute("PRAGMA application_id = 42")
    conn.execute("CREATE TABLE notes (body TEXT)")
    conn.commit()
    conn.close()
    with pytest.raises(StateUnusable, match="another program"):
        StateDB(state_path)


def test_state_path_that_is_a_folder(state_path: Path) -> None:
    state_path.mkdir(parents=True)
    with pytest.raises(errors.InvalidInput, match=str(state_path)):
        StateDB(state_path)
