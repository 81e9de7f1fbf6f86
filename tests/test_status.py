"""``canvascast status``: the report over a seeded ledger, as tables, --json, --check
(the monitoring plugin convention) and the Prometheus exposition; a fresh home; a state
file another process writes meanwhile; the Grafana dashboard against what is exported."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from canvascast_cli.cli.context import Services
from canvascast_cli.config import Settings
from canvascast_cli.dispatch.breaker import BreakerRecord, CircuitState, SQLiteStorage
from canvascast_cli.dispatch.ledger import Attempt, Ledger
from canvascast_cli.dispatch.state import StateDB, default_path
from canvascast_cli.errors import ModalUnavailable
from canvascast_cli.ops.fleet import Autoscaler, PoolStats
from canvascast_cli.ops.overrides import Events, Overrides
from canvascast_cli.ops.report import parse_since, window_label
from tests.helpers import REPO, Result

NOW = 1_700_000_000.0
HOUR, DAY = 3600.0, 86400.0
CHECK = re.compile(r"CANVASCAST (OK|WARNING|CRITICAL|UNKNOWN) - [^|\n]+( \| (.*))?")
PERF = re.compile(r"'[^'=]+'=-?\d+(\.\d+)?[a-zA-Z%]*(;[-\d.]*){0,4}")

Cli = Callable[..., Result]


class FakeFleet:
    """Modal's pools: answering (``runners`` live, ``backlog`` waiting) or unreachable."""

    def __init__(self, *, reachable: bool = True, runners: int = 0, backlog: int = 2) -> None:
        self.reachable, self.runners, self.backlog = reachable, runners, backlog
        self.calls: list[str] = []
        self.closed = False

    def settings(self, function: str) -> Autoscaler:
        self.calls.append(f"settings {function}")
        if not self.reachable:
            raise ModalUnavailable("read the autoscaler: Modal did not answer within 5 s")
        return Autoscaler(min_containers=0, max_containers=5)

    def stats(self, function: str) -> PoolStats:
        self.calls.append(f"stats {function}")
        return PoolStats(runners=self.runners, backlog=self.backlog)

    def published_overrides(self) -> dict[str, Autoscaler]:
        self.calls.append("published")
        if not self.reachable:
            raise ModalUnavailable("read the warm-pool overrides: Modal did not answer "
                                   "within 5 s")
        return {}

    def close(self) -> None:
        self.closed = True


def services(fleet: FakeFleet | None = None) -> Services:
    return Services(clock=lambda: NOW,
                    fleet=None if fleet is None else (lambda _settings: fleet))


@pytest.fixture
def db() -> StateDB:
    return StateDB(default_path())  # $CANVASCAST_HOME/state.sqlite3, as status reads it


def seed(db: StateDB) -> None:
    """Three backends, failures with codes, a fallback, cold starts, actual and
    estimated costs; one row 3 days old, one 40 days old."""
    ledger = Ledger(db)
    rows = [
        dict(function="render_video", backend="modal", started=NOW - 3600, duration=10.0,
             cold_start=True, actual_cost=0.5, estimated_cost=0.4),
        dict(function="render_video", backend="modal", started=NOW - 3000, duration=20.0,
             cold_start=False, actual_cost=0.25),
        dict(function="render_video", backend="modal", started=NOW - 2000, duration=30.0,
             estimated_cost=0.125),
        dict(function="render_video", backend="modal", started=NOW - 1000, duration=600.0,
             status="failed", error_code="TIMEOUT", estimated_cost=0.0625, job_id="job-1"),
        dict(function="render_video", backend="local", started=NOW - 900, duration=40.0,
             fallback_from="modal", fallback_reason="modal unavailable"),
        dict(function="transcribe_audio", backend="http", started=NOW - 500, duration=5.0,
             actual_cost=0.03125),
        dict(function="transcribe_audio", backend="http", started=NOW - 400,
             status="failed", error_code="SERVER_ERROR"),
        dict(function="generate_images", backend="modal", started=NOW - 3 * DAY,
             duration=8.0, actual_cost=1.0),
        dict(function="generate_images", backend="modal", started=NOW - 40 * DAY,
             duration=8.0, actual_cost=100.0),
    ]
    for row in rows:
        ledger.record(Attempt(**{"status": "ok", **row}))  # type: ignore[arg-type]
    Events(db, clock=lambda: NOW - 60).record("breaker_reset", "modal:render_video",
                                              "by hand", by="ops@host")
    Events(db, clock=lambda: NOW - 5 * DAY).record("deploy", "canvascast", "old")


def trip(db: StateDB, key: str = "modal:render_video", *, half: bool = False) -> None:
    if half:
        record = BreakerRecord(CircuitState.HALF_OPEN, 3, NOW - 100, "SERVER_ERROR",
                               "host:1:abc", NOW - 10, NOW + 590)
    else:
        record = BreakerRecord(CircuitState.OPEN, 5, NOW - 30, "TIMEOUT")
    SQLiteStorage(db).update(key, lambda _old: record)


def config(text: str) -> None:
    Path("modal.toml").write_text(text, encoding="utf-8")  # the test's cwd


def status(cli: Cli, *args: str, fleet: FakeFleet | None = None) -> Result:
    return cli("status", *args, services=services(fleet))


def check(cli: Cli, *args: str, fleet: FakeFleet | None = None) -> tuple[str, str, int]:
    result = status(cli, "--check", *args, fleet=fleet)
    lines = result.stdout.splitlines()
    assert len(lines) == 1, result.stdout
    match = CHECK.fullmatch(lines[0])
    assert match, lines[0]
    for item in (match.group(3) or "").split():
        assert PERF.fullmatch(item), item
    return match.group(1), lines[0], result.exit_code


def prom(text: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """Sample name -> {sorted labels: value}."""
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = (
                sample.value)
    return samples


def labels(**kv: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(kv.items()))


# ---------------------------------------------------------------------------------------
# A fresh home


def test_a_fresh_home_is_an_empty_healthy_report(cli: Cli) -> None:
    result = status(cli, "--json")
    assert result.exit_code == 0, result.stdout + result.stderr
    data = result.json()
    assert data["health"] == "ok" and data["findings"] == []
    assert (data["metrics"], data["backends"], data["failures"], data["breakers"],
            data["events"]) == ([], [], [], [], [])
    assert [(s["window"], s["spent"], s["budget"]) for s in data["spend"]] == [
        ("24h", 0.0, None), ("30d", 0.0, None)]
    assert data["pools"]["reachable"] is None  # no token here: Modal not asked
    assert data["window"] == "24h" and data["since"] == NOW - DAY
    assert not default_path().exists()  # a report creates nothing
    assert status(cli).exit_code == 0
    state, line, code = check(cli)
    assert (state, code) == ("OK", 0) and "'invocations'=0c;;;0" in line
    exposed = status(cli, "--prometheus")
    assert exposed.exit_code == 0
    assert prom(exposed.stdout)["canvascast_spend_usd"] == {
        labels(window="24h"): 0.0, labels(window="30d"): 0.0}
    assert not default_path().exists()


# ---------------------------------------------------------------------------------------
# --json


def test_json_figures(cli: Cli, db: StateDB) -> None:
    seed(db)
    result = status(cli, "--json")
    assert result.exit_code == 0, result.stdout + result.stderr
    data = result.json()
    assert data["health"] == "ok" and data["window"] == "24h"
    pairs = {(m["function"], m["backend"]): m for m in data["metrics"]}
    assert set(pairs) == {("render_video", "modal"), ("render_video", "local"),
                          ("transcribe_audio", "http")}  # generate_images: 3 days ago
    modal = pairs[("render_video", "modal")]
    assert (modal["invocations"], modal["successes"], modal["failures"]) == (4, 3, 1)
    assert modal["error_codes"] == {"TIMEOUT": 1}
    assert (modal["p50_duration"], modal["p95_duration"]) == (20.0, 29.0)
    assert modal["cold_starts"] == 1 and modal["fallbacks"] == 0
    assert (modal["actual_cost"], modal["estimated_cost"], modal["total_cost"]) == (
        0.75, 0.1875, 0.9375)
    local = pairs[("render_video", "local")]
    assert (local["invocations"], local["fallbacks"], local["p50_duration"]) == (1, 1, 40.0)
    http = pairs[("transcribe_audio", "http")]
    assert (http["failures"], http["error_codes"], http["actual_cost"]) == (
        1, {"SERVER_ERROR": 1}, 0.03125)
    functions = {m["function"]: m for m in data["functions"]}
    assert (functions["render_video"]["invocations"], functions["render_video"]["backend"],
            functions["render_video"]["p95_duration"]) == (5, "*", 38.5)
    backends = {m["backend"]: m for m in data["backends"]}
    assert {b: m["invocations"] for b, m in backends.items()} == {
        "http": 2, "local": 1, "modal": 4}
    assert all(m["function"] == "*" for m in data["backends"])
    assert [(f["error_code"], f["backend"], f["started"]) for f in data["failures"]] == [
        ("SERVER_ERROR", "http", NOW - 400), ("TIMEOUT", "modal", NOW - 1000)]
    assert data["failures"][1]["job_id"] == "job-1"
    # Spend: the last 24 h and 30 d whatever --since says (the 40-day-old row in neither).
    assert [(s["window"], s["spent"], s["over"]) for s in data["spend"]] == [
        ("24h", 0.96875, False), ("30d", 1.96875, False)]
    assert [(e["kind"], e["subject"], e["actor"]) for e in data["events"]] == [
        ("breaker_reset", "modal:render_video", "ops@host")]
    # Remote pairs the ledger names show as closed breakers; local has none.
    assert [(b["key"], b["state"]) for b in data["breakers"]] == [
        ("http:transcribe_audio", "closed"), ("modal:render_video", "closed")]

    narrow = status(cli, "--json", "--since", "30m").json()
    assert narrow["window"] == "30m"
    pairs = {(m["function"], m["backend"]): m["invocations"] for m in narrow["metrics"]}
    assert pairs == {("render_video", "modal"): 1, ("render_video", "local"): 1,
                     ("transcribe_audio", "http"): 2}
    assert narrow["spend"][0]["spent"] == 0.96875  # spend ignores --since
    wide = status(cli, "--json", "--since", "7d").json()
    assert ("generate_images", "modal") in {(m["function"], m["backend"])
                                            for m in wide["metrics"]}
    assert [e["kind"] for e in wide["events"]] == ["deploy", "breaker_reset"]


def test_human_tables_on_stdout(cli: Cli, db: StateDB) -> None:
    seed(db)
    trip(db)
    result = status(cli)
    assert result.exit_code == 1
    out = result.stdout
    for text in ("CRITICAL", "Breakers", "modal:render_video open after 5 failures",
                 "Invocations (24h)", "render_video", "transcribe_audio", "TIMEOUT:1",
                 "Last failures", "SERVER_ERROR", "Spend: 24h $0.97; 30d $1.97",
                 "breaker_reset", "(all)", "not asked"):
        assert text in out, text


def test_help_names_the_exit_codes_and_config_tables(cli: Cli) -> None:
    text = " ".join(cli("status", "--help").stdout.split())
    assert "against [budget]" in text and "over [status] error_rate" in text
    assert "1 a breaker is open" in text and "3 UNKNOWN" in text


# ---------------------------------------------------------------------------------------
# Exit codes without --check


def test_an_open_breaker_exits_1_with_and_without_json(cli: Cli, db: StateDB) -> None:
    seed(db)
    trip(db)
    trip(db, "http:transcribe_audio", half=True)
    result = status(cli, "--json")
    assert result.exit_code == 1
    data = result.json()
    assert data["health"] == "critical"
    rows = {b["key"]: b for b in data["breakers"]}
    opened = rows["modal:render_video"]
    assert (opened["state"], opened["failures"], opened["opened_at"], opened["retry_at"],
            opened["last_error"]) == ("open", 5, NOW - 30, NOW - 30 + 60, "TIMEOUT")
    half = rows["http:transcribe_audio"]
    assert (half["state"], half["retry_at"]) == ("half-open", NOW + 590)
    assert [f["level"] for f in data["findings"]] == ["critical", "warning"]
    assert status(cli).exit_code == 1
    # Half-open alone is not an exit code (without --check).
    SQLiteStorage(db).delete("modal:render_video")
    assert status(cli, "--json").exit_code == 0


def test_an_unreachable_modal_is_shown_not_an_exit_code(cli: Cli, db: StateDB) -> None:
    seed(db)
    fleet = FakeFleet(reachable=False)
    began = time.monotonic()
    result = status(cli, "--json", fleet=fleet)
    assert time.monotonic() - began < 20  # asks once, then stops: never a hang
    assert result.exit_code == 0
    data = result.json()
    assert data["pools"]["reachable"] is False and "did not answer" in data["pools"]["error"]
    assert data["health"] == "unknown"
    assert fleet.calls == ["published"] and fleet.closed
    assert "Modal unreachable" in status(cli, fleet=FakeFleet(reachable=False)).stdout


# ---------------------------------------------------------------------------------------
# --check


def test_check_ok_with_perfdata(cli: Cli, db: StateDB) -> None:
    seed(db)
    state, line, code = check(cli, fleet=FakeFleet(runners=1))
    assert (state, code) == ("OK", 0)
    assert "7 invocations, 2 failed in 24h" in line
    for item in ("'invocations'=7c;;;0", "'errors'=2c;;;0", "'fallbacks'=1c;;;0",
                 "'breakers_open'=0;;0;0", "'cost_usd'=0.96875;;;0",
                 "'spend_24h_usd'=0.96875;;;0", "'spend_30d_usd'=1.96875;;;0",
                 "'render_video_invocations'=5c;;;0", "'render_video_errors'=1c;;;0",
                 "'render_video_p95'=38.5s;;;0", "'transcribe_audio_p95'=5s;;;0",
                 "'modal_reachable'=1;;;0;1"):
        assert item in line.split(" | ")[1].split(), item


def test_check_warning_for_budget_half_open_and_pools(cli: Cli, db: StateDB) -> None:
    seed(db)
    config("[budget]\ndaily_usd = 0.5\nmonthly_usd = 10.0\n")
    state, line, code = check(cli)
    assert (state, code) == ("WARNING", 1)
    assert "spend $0.97 over the 24h budget $0.50" in line
    assert "'spend_24h_usd'=0.96875;0.5;;0" in line and "'spend_30d_usd'=1.96875;10;;0" in line

    config("")
    trip(db, "http:transcribe_audio", half=True)
    state, line, code = check(cli)
    assert (state, code) == ("WARNING", 1) and "half-open" in line
    SQLiteStorage(db).delete("http:transcribe_audio")

    Overrides(db, Settings().app.name).set("render_video", Autoscaler(min_containers=2))
    state, line, code = check(cli, fleet=FakeFleet(runners=1))
    assert (state, code) == ("WARNING", 1)
    assert "warm pool render_video: 1 runners, target min 2" in line


def test_check_critical_for_an_open_breaker_and_an_error_rate(cli: Cli, db: StateDB) -> None:
    seed(db)
    trip(db)
    state, line, code = check(cli)
    assert (state, code) == ("CRITICAL", 2) and "'breakers_open'=1;;0;0" in line
    SQLiteStorage(db).delete("modal:render_video")
    # transcribe_audio on http: 1 of 2 failed; counts once 2 attempts are enough.
    assert check(cli)[0] == "OK"
    config("[status]\nmin_invocations = 2\nerror_rate = 0.25\n")
    state, line, code = check(cli)
    assert (state, code) == ("CRITICAL", 2)
    assert "transcribe_audio on http: 1 of 2 attempts failed (50% > 25%)" in line
    config("[status]\nmin_invocations = 2\nerror_rate = 0.5\n")
    assert check(cli)[0] == "OK"  # over the rate, not at it


def test_check_unknown_when_modal_is_unreachable(cli: Cli, db: StateDB) -> None:
    seed(db)
    state, line, code = check(cli, fleet=FakeFleet(reachable=False))
    assert (state, code) == ("UNKNOWN", 3)
    assert "Modal unreachable" in line and "'modal_reachable'=0;;;0;1" in line
    # Not asked (no token) is not unknown.
    assert check(cli)[0] == "OK"


def test_an_open_breaker_is_critical_even_when_modal_is_unreachable(cli: Cli,
                                                                    db: StateDB) -> None:
    seed(db)
    trip(db)
    config("[budget]\ndaily_usd = 0.5\n")
    state, line, code = check(cli, fleet=FakeFleet(reachable=False))
    assert (state, code) == ("CRITICAL", 2)
    summary = line.split(" | ")[0]
    # Worst first, every finding named.
    assert summary.index("breaker modal:render_video open") < summary.index("spend") < (
        summary.index("Modal unreachable"))


def test_check_failures_to_judge_are_unknown_lines(cli: Cli, db: StateDB) -> None:
    config("[budget]\ndaily_usd = -1\n")
    state, line, code = check(cli)
    assert (state, code) == ("UNKNOWN", 3) and "budget.daily_usd" in line
    broken = status(cli)  # without --check: the usual exit 2
    assert broken.exit_code == 2 and "budget.daily_usd" in broken.stderr
    config("")
    state, line, code = check(cli, "--since", "yesterday")
    assert (state, code) == ("UNKNOWN", 3) and "--since" in line
    state, line, code = check(cli, "--prometheus")
    assert (state, code) == ("UNKNOWN", 3)
    default_path().parent.mkdir(parents=True, exist_ok=True)
    default_path().write_bytes(b"not a database at all" * 100)
    state, line, code = check(cli)
    assert (state, code) == ("UNKNOWN", 3) and "state.sqlite3" in line


# ---------------------------------------------------------------------------------------
# --since


@pytest.mark.parametrize(("text", "seconds"), [
    ("90s", 90.0), ("30m", 1800.0), ("24h", 86400.0), ("7d", 604800.0), ("1.5h", 5400.0),
    (" 2D ", 172800.0)])
def test_since_ages(text: str, seconds: float) -> None:
    assert parse_since(text) == seconds


@pytest.mark.parametrize("text", ["", "24", "h", "3x", "0h", "-5m", "1e3s", "24 h", "7w"])
def test_since_refuses_what_is_not_an_age(cli: Cli, text: str) -> None:
    result = status(cli, "--since", text)
    assert result.exit_code == 2
    assert "--since" in result.stderr and "90s, 30m, 24h or 7d" in result.stderr
    data = status(cli, "--json", "--since", text).json()
    assert data["error"]["code"] == "INVALID_INPUT" and "--since" in data["error"]["message"]


def test_window_labels() -> None:
    assert [window_label(s) for s in (None, 90, 1800, 5400, 86400, 172800, 604800, 61)] == [
        "all", "90s", "30m", "90m", "24h", "2d", "7d", "61s"]


# ---------------------------------------------------------------------------------------
# Prometheus


def test_prometheus_exposition(cli: Cli, db: StateDB) -> None:
    seed(db)
    trip(db)
    trip(db, "http:transcribe_audio", half=True)
    config("[budget]\ndaily_usd = 5.0\n")
    result = status(cli, "--prometheus", fleet=FakeFleet(runners=1, backlog=3))
    assert result.exit_code == 0  # written: the open breaker is in the metrics
    s = prom(result.stdout)
    # Totals over every retained row (no --since): the 40-day-old row counts.
    inv = s["modal_invocations_total"]
    assert inv[labels(function="render_video", backend="modal", status="ok")] == 3
    assert inv[labels(function="render_video", backend="modal", status="failed")] == 1
    assert inv[labels(function="render_video", backend="local", status="ok")] == 1
    assert inv[labels(function="generate_images", backend="modal", status="ok")] == 2
    assert inv[labels(function="transcribe_audio", backend="http", status="failed")] == 1
    dur = s["modal_duration_seconds"]
    assert dur[labels(function="render_video", backend="modal", quantile="0.5")] == 20.0
    assert dur[labels(function="render_video", backend="modal", quantile="0.95")] == 29.0
    assert s["modal_cold_starts_total"][labels(function="render_video", backend="modal")] == 1
    assert s["modal_errors_total"] == {
        labels(function="render_video", backend="modal", code="TIMEOUT"): 1,
        labels(function="transcribe_audio", backend="http", code="SERVER_ERROR"): 1}
    assert s["modal_fallbacks_total"][labels(function="render_video", backend="local")] == 1
    cost = s["modal_cost_usd_total"]
    assert cost[labels(function="render_video", backend="modal", kind="actual")] == 0.75
    assert cost[labels(function="render_video", backend="modal", kind="estimated")] == 0.1875
    assert cost[labels(function="generate_images", backend="modal", kind="actual")] == 101.0
    assert s["canvascast_breaker_state"] == {
        labels(backend="modal", function="render_video"): 2,
        labels(backend="http", function="transcribe_audio"): 1,
        labels(backend="modal", function="generate_images"): 0}
    assert s["canvascast_breaker_failures"][labels(backend="modal",
                                                   function="render_video")] == 5
    assert s["canvascast_warm_runners"][labels(function="render_video")] == 1
    assert s["canvascast_warm_backlog"][labels(function="render_video")] == 3
    assert s["canvascast_warm_min_containers"][labels(function="render_video")] == 0
    assert s["canvascast_modal_reachable"] == {(): 1}
    assert s["canvascast_spend_usd"] == {labels(window="24h"): 0.96875,
                                         labels(window="30d"): 1.96875}
    assert s["canvascast_budget_usd"] == {labels(window="24h"): 5.0}
    assert "every attempt the ledger retains" in result.stdout  # HELP names the window

    narrow = prom(status(cli, "--prometheus", "--since", "24h").stdout)
    assert not any(dict(k)["function"] == "generate_images"
                   for k in narrow["modal_invocations_total"])
    assert "canvascast_modal_reachable" not in narrow  # not asked: absent
    assert "canvascast_warm_runners" not in narrow
    down = prom(status(cli, "--prometheus", fleet=FakeFleet(reachable=False)).stdout)
    assert down["canvascast_modal_reachable"] == {(): 0}


def test_prometheus_refuses_json(cli: Cli) -> None:
    result = status(cli, "--prometheus", "--json")
    assert result.exit_code == 2 and "--prometheus" in result.json()["error"]["message"]


def test_prometheus_file_is_written_atomically(cli: Cli, db: StateDB, tmp_path: Path) -> None:
    seed(db)
    folder = tmp_path / "textfile"
    folder.mkdir()
    target = folder / "canvascast.prom"
    target.write_text("old\n")
    result = status(cli, "--prometheus-file", str(target))
    assert result.exit_code == 0, result.stderr
    assert result.stdout == ""  # the file is what was asked for (cron: no mail)
    assert sorted(p.name for p in folder.iterdir()) == ["canvascast.prom"]  # no temp left
    written = target.read_text()
    assert prom(written) == prom(status(cli, "--prometheus").stdout)
    # With --json beside it: the report on stdout, the file still all history.
    both = status(cli, "--json", "--prometheus-file", str(target))
    assert both.exit_code == 0 and both.json()["window"] == "24h"
    assert any(dict(k)["function"] == "generate_images"
               for k in prom(target.read_text())["modal_invocations_total"])
    # --check can write it too, and still prints its one line.
    state, _line, code = check(cli, "--prometheus-file", str(target))
    assert (state, code) == ("OK", 0)


@pytest.mark.parametrize("where", ["suffix", "missing", "folder"])
def test_prometheus_file_refusals(cli: Cli, db: StateDB, tmp_path: Path, where: str) -> None:
    seed(db)
    path = {"suffix": tmp_path / "canvascast.txt",
            "missing": tmp_path / "nowhere" / "canvascast.prom",
            "folder": tmp_path / "dir.prom"}[where]
    if where == "folder":
        path.mkdir()
    result = status(cli, "--prometheus-file", str(path))
    assert result.exit_code == 2
    assert str(path) in result.stderr and "--prometheus-file" in result.stderr
    assert where == "folder" or not path.exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name not in ("home", "work")) == (
        ["dir.prom"] if where == "folder" else [])


def test_prometheus_file_failing_midway_leaves_the_old_file(
        cli: Cli, db: StateDB, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seed(db)
    folder = tmp_path / "textfile"
    folder.mkdir()
    target = folder / "canvascast.prom"
    target.write_text("old\n")

    def refuse(_src: str, _dst: str) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(os, "rename", refuse)  # the step that puts the new file in place
    result = status(cli, "--prometheus-file", str(target))
    assert result.exit_code == 2 and str(target) in result.stderr
    assert target.read_text() == "old\n"
    assert [p.name for p in folder.iterdir()] == ["canvascast.prom"]  # the temp file went
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode, **kw: Path(path) != folder and (
        real_access(path, mode, **kw)))
    result = status(cli, "--prometheus-file", str(target))
    assert result.exit_code == 2 and "not writable" in result.stderr


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0,
                    reason="permissions do not bind root")
def test_prometheus_file_in_a_read_only_folder(cli: Cli, db: StateDB, tmp_path: Path) -> None:
    seed(db)
    folder = tmp_path / "ro"
    folder.mkdir()
    target = folder / "canvascast.prom"
    target.write_text("old\n")
    folder.chmod(0o500)
    try:
        result = status(cli, "--prometheus-file", str(target))
        assert result.exit_code == 2 and "not writable" in result.stderr
        assert target.read_text() == "old\n"
        assert [p.name for p in folder.iterdir()] == ["canvascast.prom"]
    finally:
        folder.chmod(0o700)


# ---------------------------------------------------------------------------------------
# A state file another process writes meanwhile

WRITER = """
import sys, time
from canvascast_cli.dispatch.ledger import Attempt, Ledger
from canvascast_cli.dispatch.state import StateDB

ledger = Ledger(StateDB(sys.argv[1]))
print("ready", flush=True)
end = time.monotonic() + float(sys.argv[2])
i = 0
while time.monotonic() < end:
    ledger.record(Attempt(function="render_video", backend="modal", started=float(sys.argv[3]),
                          status="failed" if i % 7 == 0 else "ok", duration=1.0,
                          error_code="TIMEOUT" if i % 7 == 0 else None, actual_cost=0.001))
    i += 1
print(i, flush=True)
"""


def test_status_reads_a_state_file_another_process_writes(cli: Cli, db: StateDB) -> None:
    seed(db)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(db.path), "2.0", str(NOW - 10)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready", proc.communicate(timeout=60)[1]
        seen = []
        runs = 0
        while proc.poll() is None or runs < 3:
            result = status(cli, "--json")
            assert result.exit_code == 0, result.stdout + result.stderr
            data = result.json()
            seen.append(sum(m["invocations"] for m in data["metrics"]))
            exposed = status(cli, "--prometheus")
            assert exposed.exit_code == 0 and prom(exposed.stdout)
            assert check(cli)[2] in (0, 2)  # healthy, or the writer's TIMEOUTs a rate
            runs += 1
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert seen == sorted(seen)  # each run saw a consistent, growing ledger
    final = status(cli, "--json").json()
    assert sum(m["invocations"] for m in final["metrics"]) == 7 + int(out.strip())


# ---------------------------------------------------------------------------------------
# The Grafana dashboard

PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool",
                "and", "or", "unless", "offset", "inf", "nan"}


def metric_names(expr: str) -> set[str]:
    """The metric names an expression reads: what is left once label matchers, ranges,
    strings, grouping clauses, Grafana variables and function calls are taken out."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)
    expr = re.sub(r"\{[^}]*\}", "", expr)
    expr = re.sub(r"\[[^\]]*\]", "", expr)
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    expr = re.sub(r"\$\{?\w+\}?", "", expr)
    return {name for name in re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*(?!\s*\()(?![\w:])", expr)
            if name not in PROMQL_WORDS}


def test_the_grafana_dashboard_reads_only_exported_metrics(cli: Cli, db: StateDB) -> None:
    seed(db)
    trip(db)
    config("[budget]\ndaily_usd = 5.0\nmonthly_usd = 50.0\n")
    exported = set(prom(status(cli, "--prometheus", fleet=FakeFleet(runners=1)).stdout))
    dashboard: dict[str, Any] = json.loads(
        (REPO / "docs" / "grafana" / "canvascast.json").read_text(encoding="utf-8"))
    assert dashboard["schemaVersion"] >= 36
    assert [i["name"] for i in dashboard["__inputs"]] == ["DS_PROMETHEUS"]
    used: set[str] = set()
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}"
        for target in panel["targets"]:
            names = metric_names(target["expr"])
            assert names, target["expr"]
            used |= names
    assert used <= exported, used - exported
    titles = " ".join(p["title"].lower() for p in dashboard["panels"])
    for needed in ("invocations", "errors", "p95", "cold-start", "spend", "breaker",
                   "warm runners"):
        assert needed in titles, needed
    assert {"modal_invocations_total", "modal_errors_total", "modal_duration_seconds",
            "modal_cold_starts_total", "canvascast_spend_usd", "canvascast_breaker_state",
            "canvascast_warm_runners", "canvascast_warm_min_containers"} <= used
    assert metric_names('sum by (a) (rate(x_total{a="b"}[$__rate_interval])) / y') == {
        "x_total", "y"}
