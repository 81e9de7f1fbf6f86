"""Business-hours warm pools (canvascast_cli/ops/windows.py), offline: window edges across
time zones and daylight saving, overlaps, the reconciler's cron, next changes, the weekly
cost arithmetic, and reconcile() against a fake fleet."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from canvascast_cli.cli.context import Application, Services
from canvascast_cli.cli.warm_schedule import schedule_command
from canvascast_cli.config import Settings, function_cost_per_second
from canvascast_cli.ops import windows
from canvascast_cli.ops.fleet import Autoscaler, Ping, PoolStats
from tests.helpers import Cli

WEEKDAYS = ["mon", "tue", "wed", "thu", "fri"]


def settings_with(*wins: dict[str, Any], timezone: str = "UTC", check_every: int = 15,
                  functions: dict[str, Any] | None = None,
                  pricing: dict[str, Any] | None = None) -> Settings:
    data: dict[str, Any] = {"warm": {"timezone": timezone, "check_every": check_every,
                                     "windows": list(wins)}}
    if functions:
        data["functions"] = functions
    if pricing is not None:
        data["pricing"] = pricing
    return Settings.model_validate(data)


def window(function: str = "render_video", days: list[str] | None = None,
           start: str = "09:00", end: str = "21:00", min_containers: int = 2) -> dict[str, Any]:
    return {"function": function, "days": WEEKDAYS if days is None else days,
            "start": start, "end": end, "min_containers": min_containers}


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


BERLIN = settings_with(window(), timezone="Europe/Berlin")


# ---------------------------------------------------------------------------------------
# Window edges


@pytest.mark.parametrize(("instant", "expected"), [
    # Winter (CET, UTC+1): 09:00 local is 08:00 UTC, 21:00 local is 20:00 UTC.
    ("2026-03-27T07:59:59", 0), ("2026-03-27T08:00:00", 2), ("2026-03-27T19:59:59", 2),
    ("2026-03-27T20:00:00", 0),
    # Summer after the 2026-03-29 switch (CEST, UTC+2): 07:00 UTC and 19:00 UTC.
    ("2026-03-30T06:59:59", 0), ("2026-03-30T07:00:00", 2), ("2026-03-30T18:59:00", 2),
    ("2026-03-30T19:00:00", 0),
    # Summer before the 2026-10-25 switch, winter after it.
    ("2026-10-23T06:59:00", 0), ("2026-10-23T07:00:00", 2), ("2026-10-26T07:00:00", 0),
    ("2026-10-26T08:00:00", 2), ("2026-10-26T19:59:00", 2), ("2026-10-26T20:00:00", 0),
    # The weekend: no window.
    ("2026-03-28T12:00:00", 0), ("2026-03-29T12:00:00", 0),
])
def test_berlin_business_hours_follow_daylight_saving(instant: str, expected: int) -> None:
    assert windows.target_min(BERLIN, "render_video", utc(instant)) == expected


def test_start_inclusive_end_exclusive_and_why() -> None:
    at = utc("2026-03-27T08:00:00")
    goal = windows.target(BERLIN, "render_video", at)
    assert (goal.min_containers, goal.why) == (2, "window mon-fri 09:00-21:00")
    assert windows.target(BERLIN, "render_video", at - timedelta(microseconds=1)).why == (
        "outside windows")
    assert windows.target_min(BERLIN, "render_video", utc("2026-03-27T20:00:00")) == 0


def test_new_york_windows_move_with_us_daylight_saving() -> None:
    settings = settings_with(window(start="09:00", end="17:00", min_containers=1),
                             timezone="America/New_York")
    # Friday 2026-03-06, EST (UTC-5): 09:00 is 14:00 UTC. Monday 2026-03-09 (the switch
    # was on Sunday the 8th), EDT (UTC-4): 09:00 is 13:00 UTC.
    assert windows.target_min(settings, "render_video", utc("2026-03-06T13:59:00")) == 0
    assert windows.target_min(settings, "render_video", utc("2026-03-06T14:00:00")) == 1
    assert windows.target_min(settings, "render_video", utc("2026-03-06T21:59:00")) == 1
    assert windows.target_min(settings, "render_video", utc("2026-03-06T22:00:00")) == 0
    assert windows.target_min(settings, "render_video", utc("2026-03-09T12:59:00")) == 0
    assert windows.target_min(settings, "render_video", utc("2026-03-09T13:00:00")) == 1
    assert windows.target_min(settings, "render_video", utc("2026-03-09T21:00:00")) == 0


def test_the_weekday_is_the_zones_not_utcs() -> None:
    # Friday 20:00 in New York (EDT) is Saturday 00:30 UTC: a Friday window.
    ny = settings_with(window(days=["fri"], start="18:00", end="24:00"),
                       timezone="America/New_York")
    assert windows.target_min(ny, "render_video", utc("2026-06-06T00:30:00")) == 2
    # Sunday 15:30 UTC is Monday 00:30 in Tokyo: a Monday window.
    tokyo = settings_with(window(days=["mon"], start="00:00", end="06:00"),
                          timezone="Asia/Tokyo")
    assert windows.target_min(tokyo, "render_video", utc("2026-06-07T15:30:00")) == 2
    assert windows.target_min(tokyo, "render_video", utc("2026-06-07T14:59:00")) == 0


def test_24_00_is_the_end_of_the_day() -> None:
    settings = settings_with(window(days=["sat"], start="20:00", end="24:00"))
    assert windows.target_min(settings, "render_video", utc("2026-06-06T23:59:59")) == 2
    assert windows.target_min(settings, "render_video", utc("2026-06-07T00:00:00")) == 0
    assert windows.next_change(settings, "render_video", utc("2026-06-06T21:00:00")) == (
        utc("2026-06-07T00:00:00"), 0)


def test_overlapping_windows_take_the_largest_and_never_go_below_configured() -> None:
    settings = settings_with(
        window(days=list(windows.DAYS), start="08:00", end="20:00", min_containers=1),
        window(start="12:00", end="14:00", min_containers=3),
        functions={"render_video": {"cpu": 4.0, "min_containers": 2}})
    assert windows.target(settings, "render_video", utc("2026-06-08T13:00:00")).why == (
        "window mon-fri 12:00-14:00")
    assert windows.target_min(settings, "render_video", utc("2026-06-08T13:00:00")) == 3
    assert windows.target_min(settings, "render_video", utc("2026-06-08T14:00:00")) == 2
    assert windows.target(settings, "render_video", utc("2026-06-08T09:00:00")).why == (
        "configured min_containers")
    outside = windows.target(settings, "render_video", utc("2026-06-08T22:00:00"))
    assert (outside.min_containers, outside.why) == (2, "outside windows")


def test_a_naive_instant_is_refused() -> None:
    with pytest.raises(ValueError, match="aware"):
        windows.target_min(BERLIN, "render_video", datetime(2026, 3, 27, 9))


def test_desired_names_only_functions_with_windows() -> None:
    settings = settings_with(window(), window("transcribe_audio", min_containers=1))
    assert windows.desired(settings, utc("2026-06-08T10:00:00")) == {
        "render_video": 2, "transcribe_audio": 1}
    assert windows.desired(settings_with(), utc("2026-06-08T10:00:00")) == {}


def test_days_text() -> None:
    assert windows.days_text(WEEKDAYS) == "mon-fri"
    assert windows.days_text(["sun", "sat"]) == "sat,sun"
    assert windows.days_text(["mon", "wed", "thu", "fri", "sun"]) == "mon,wed-fri,sun"


# ---------------------------------------------------------------------------------------
# Next change


def test_next_change_across_the_spring_weekend() -> None:
    # Friday's window ends at 20:00 UTC; Monday's (after the switch) opens at 07:00 UTC.
    assert windows.next_change(BERLIN, "render_video", utc("2026-03-27T12:00:00")) == (
        utc("2026-03-27T20:00:00"), 0)
    assert windows.next_change(BERLIN, "render_video", utc("2026-03-27T20:00:00")) == (
        utc("2026-03-30T07:00:00"), 2)
    assert windows.next_change(BERLIN, "render_video", utc("2026-03-30T07:00:00")) == (
        utc("2026-03-30T19:00:00"), 0)


def test_next_change_across_the_autumn_weekend() -> None:
    assert windows.next_change(BERLIN, "render_video", utc("2026-10-23T19:00:00")) == (
        utc("2026-10-26T08:00:00"), 2)


def test_a_window_edge_the_spring_forward_skips_opens_at_the_switch() -> None:
    # 2026-03-29 in Berlin: 02:00 CET jumps to 03:00 CEST (01:00 UTC); 02:30 never shows.
    settings = settings_with(window(days=["sun"], start="02:30", end="04:00"),
                             timezone="Europe/Berlin")
    assert windows.target_min(settings, "render_video", utc("2026-03-29T00:59:00")) == 0
    assert windows.target_min(settings, "render_video", utc("2026-03-29T01:00:00")) == 2
    assert windows.next_change(settings, "render_video", utc("2026-03-29T00:00:00")) == (
        utc("2026-03-29T01:00:00"), 2)
    assert windows.next_change(settings, "render_video", utc("2026-03-29T01:00:00")) == (
        utc("2026-03-29T02:00:00"), 0)  # 04:00 CEST


def test_a_window_in_the_repeated_hour_opens_twice() -> None:
    # 2026-10-25 in Berlin: 03:00 CEST goes back to 02:00 CET (01:00 UTC); the wall clock
    # shows 02:00-02:30 twice.
    settings = settings_with(window(days=["sun"], start="02:00", end="02:30"),
                             timezone="Europe/Berlin")
    assert windows.target_min(settings, "render_video", utc("2026-10-25T00:00:00")) == 2
    assert windows.target_min(settings, "render_video", utc("2026-10-25T00:30:00")) == 0
    assert windows.target_min(settings, "render_video", utc("2026-10-25T01:00:00")) == 2
    assert windows.next_change(settings, "render_video", utc("2026-10-25T00:00:00")) == (
        utc("2026-10-25T00:30:00"), 0)
    assert windows.next_change(settings, "render_video", utc("2026-10-25T00:30:00")) == (
        utc("2026-10-25T01:00:00"), 2)
    assert windows.next_change(settings, "render_video", utc("2026-10-25T01:00:00")) == (
        utc("2026-10-25T01:30:00"), 0)


def test_no_next_change_without_windows_or_when_they_change_nothing() -> None:
    assert windows.next_change(BERLIN, "transcribe_audio", utc("2026-06-08T10:00:00")) is None
    always = settings_with(window(days=list(windows.DAYS), start="00:00", end="24:00"))
    assert windows.next_change(always, "render_video", utc("2026-06-08T10:00:00")) is None
    below = settings_with(window(min_containers=1),
                          functions={"render_video": {"cpu": 4.0, "min_containers": 1}})
    assert windows.next_change(below, "render_video", utc("2026-06-08T10:00:00")) is None


# ---------------------------------------------------------------------------------------
# The reconciler's schedule


def test_cron_runs_every_check_every_and_at_every_edge_minute() -> None:
    settings = settings_with(window(start="09:07", end="21:00"),
                             window("transcribe_audio", start="10:30", end="24:00"))
    assert windows.cron_expression(settings) == "0,7,15,30,45 * * * *"
    hourly = settings_with(window(start="09:00", end="17:00"), check_every=60)
    assert windows.cron_expression(hourly) == "0 * * * *"
    odd = settings_with(window(start="08:50", end="17:05"), check_every=20)
    assert windows.cron_expression(odd) == "0,5,20,40,50 * * * *"
    assert windows.cron_expression(settings_with()) is None


# ---------------------------------------------------------------------------------------
# Cost


H100 = {"transcribe_audio": {"gpu": "H100"}}  # cpu/memory unset: 0.125 core, 128 MiB
MONTH = 3600 * 24 * 30


def test_two_h100s_always_on_for_a_month_and_business_hours_only() -> None:
    # GPU alone (CPU and memory priced at nothing): 2 x 0.001097 x 3600 x 24 x 30.
    gpu_only = settings_with(
        window("transcribe_audio", start="08:00", end="20:00", min_containers=2),
        functions=H100, pricing={"cpu_core_second": 0.0, "memory_gib_second": 0.0})
    cost = windows.weekly_cost(gpu_only, "transcribe_audio")
    assert cost.rate == 0.001097
    assert cost.always_on_seconds == 2 * 7 * 86400 == 1_209_600
    month = cost.always_on_usd * windows.MONTH_WEEKS
    assert month == pytest.approx(2 * 0.001097 * MONTH) == pytest.approx(5686.848, abs=1e-6)
    # 12 h on weekdays: 2 x 12 x 3600 x 5 container-seconds a week, 60/168 of always-on.
    assert cost.warm_seconds == windows.weekly_idle(gpu_only, "transcribe_audio") == 432_000
    assert cost.usd == pytest.approx(473.904, abs=1e-9)
    assert cost.usd / cost.always_on_usd == pytest.approx(60 / 168)  # about a third
    assert cost.configured_usd == 0.0
    assert cost.peak == 2


def test_weekly_cost_with_cpu_and_memory() -> None:
    settings = settings_with(
        window("transcribe_audio", start="08:00", end="20:00", min_containers=2),
        functions=H100)
    rate = 0.125 * 0.0000131 + 128 / 1024 * 0.00000222 + 0.001097
    assert function_cost_per_second(settings, "transcribe_audio") == pytest.approx(rate)
    assert rate == pytest.approx(0.001098915)
    cost = windows.weekly_cost(settings, "transcribe_audio")
    assert cost.always_on_usd * windows.MONTH_WEEKS == pytest.approx(5696.77536, abs=1e-6)
    assert cost.usd == pytest.approx(474.73128, abs=1e-6)
    data = cost.to_dict()
    assert data["warm_container_hours"] == 120
    assert data["always_on_container_hours"] == 336
    assert data["usd_per_30_days"] == pytest.approx(474.73128 * 30 / 7)


def test_weekly_idle_counts_the_configured_floor_and_overlaps() -> None:
    settings = settings_with(
        window(start="09:00", end="17:00", min_containers=3),
        window(days=["mon"], start="16:00", end="24:00", min_containers=2),
        functions={"render_video": {"cpu": 4.0, "min_containers": 1}})
    # 1 all week (168 h), +2 for 40 weekday hours, +1 on Monday 17:00-24:00 (7 h).
    assert windows.weekly_idle(settings, "render_video") == (168 + 80 + 7) * 3600
    assert windows.weekly_cost(settings, "render_video").configured_seconds == 168 * 3600


# ---------------------------------------------------------------------------------------
# reconcile()


class FakeFleet:
    """A Fleet that records updates; ``fail`` names functions whose update raises."""

    def __init__(self, fail: set[str] | None = None) -> None:
        self.updates: list[tuple[str, Autoscaler]] = []
        self.fail = fail or set()

    def settings(self, function: str) -> Autoscaler:
        return Autoscaler()

    def stats(self, function: str) -> PoolStats:
        return PoolStats(runners=0, backlog=0)

    def update(self, function: str, settings: Autoscaler) -> Autoscaler:
        self.updates.append((function, settings))
        if function in self.fail:
            raise RuntimeError(f"{function} is not deployed")
        return settings

    def ping(self, function: str, timeout: float) -> Ping:
        raise NotImplementedError

    def web_url(self, function: str) -> str | None:
        return None

    def close(self) -> None:
        return None


TWO = settings_with(window(), window("transcribe_audio", days=["sat"], start="10:00",
                                     end="12:00", min_containers=1),
                    timezone="Europe/Berlin")


def test_reconcile_sets_each_windowed_functions_target() -> None:
    fleet = FakeFleet()
    applied = windows.reconcile(TWO, fleet, utc("2026-03-30T07:00:00"))
    assert fleet.updates == [("render_video", Autoscaler(min_containers=2)),
                             ("transcribe_audio", Autoscaler(min_containers=0))]
    assert [(a.function, a.min_containers, a.why) for a in applied] == [
        ("render_video", 2, "window mon-fri 09:00-21:00"),
        ("transcribe_audio", 0, "outside windows")]
    assert applied[0].line() == "render_video: min_containers=2 (window mon-fri 09:00-21:00)"


def test_an_override_wins_over_the_windows() -> None:
    fleet = FakeFleet()
    overrides = {"render_video": Autoscaler(min_containers=5, max_containers=8),
                 "transcribe_audio": Autoscaler(scaledown_window=300),
                 "generate_images": Autoscaler(min_containers=1)}  # no windows: left alone
    applied = windows.reconcile(TWO, fleet, utc("2026-03-30T07:00:00"), overrides)
    assert fleet.updates == [
        ("render_video", Autoscaler(min_containers=5, max_containers=8)),
        ("transcribe_audio", Autoscaler(min_containers=0, scaledown_window=300))]
    assert applied[0].why == "override"
    assert applied[1].why == "outside windows; override of scaledown_window"
    assert applied[1].line() == ("transcribe_audio: min_containers=0 scaledown_window=300 "
                                 "(outside windows; override of scaledown_window)")


def test_one_failing_function_does_not_stop_the_others() -> None:
    fleet = FakeFleet(fail={"render_video"})
    with pytest.raises(windows.ReconcileError, match="1 function not updated") as caught:
        windows.reconcile(TWO, fleet, utc("2026-03-30T07:00:00"))
    assert [f for f, _ in fleet.updates] == ["render_video", "transcribe_audio"]
    assert [a.function for a in caught.value.applied] == ["transcribe_audio"]
    assert caught.value.errors == ["render_video: RuntimeError: render_video is not deployed"]


def test_parse_overrides_is_best_effort() -> None:
    found, problems = windows.parse_overrides({
        "render_video": {"min_containers": 3, "set_by": "ana@host"},
        "transcribe_audio": {"min_containers": "lots"},
        "generate_images": 7})
    assert found == {"render_video": Autoscaler(min_containers=3)}
    assert len(problems) == 2
    assert windows.parse_overrides(None) == ({}, [])
    assert windows.parse_overrides(["x"])[0] == {}


# ---------------------------------------------------------------------------------------
# canvascast warm schedule (offline: modal.toml only)

BERLIN_TOML = """
[functions.transcribe_audio]
gpu = "H100"

[warm]
timezone = "Europe/Berlin"

[[warm.windows]]
function = "transcribe_audio"
days = ["mon", "tue", "wed", "thu", "fri"]
start = "08:00"
end = "20:00"
min_containers = 2
"""
FRIDAY_EVENING = utc("2026-03-27T19:30:00").timestamp()  # 20:30 CET: outside


def _services() -> Services:
    return Services(clock=lambda: FRIDAY_EVENING)


def _check_document(data: dict[str, Any]) -> None:
    assert data["timezone"] == "Europe/Berlin"
    assert data["windows"] == [{"function": "transcribe_audio", "days": WEEKDAYS,
                                "days_text": "mon-fri", "start": "08:00", "end": "20:00",
                                "min_containers": 2}]
    assert data["reconciler"] == {"function": "reconcile_warm_pools",
                                  "cron": "0,15,30,45 * * * *", "timezone": "Europe/Berlin",
                                  "check_every_minutes": 15}
    [fn] = data["functions"]
    assert (fn["min_containers_now"], fn["why"]) == (0, "outside windows")
    # Monday 08:00 CEST, after the 2026-03-29 switch, is 06:00 UTC.
    assert fn["next_change"]["utc"] == "2026-03-30T06:00:00+00:00"
    assert fn["next_change"]["local"] == "2026-03-30T08:00:00+02:00"
    assert fn["next_change"]["min_containers"] == 2
    assert fn["weekly_cost"]["usd_per_week"] == pytest.approx(474.73128)
    assert fn["weekly_cost"]["always_on_usd_per_30_days"] == pytest.approx(5696.77536)


def test_schedule_command_function(isolated_env: Path) -> None:
    (isolated_env / "modal.toml").write_text(BERLIN_TOML, encoding="utf-8")
    mini = typer.Typer()
    mini.command("schedule")(schedule_command)
    runner = CliRunner()
    result = runner.invoke(mini, ["--json"], obj=Application(services=_services()),
                           catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    _check_document(json.loads(result.stdout))
    text = runner.invoke(mini, [], obj=Application(services=_services())).stdout
    assert "transcribe_audio  mon-fri" in text
    assert 'cron "0,15,30,45 * * * *" (Europe/Berlin)' in text
    assert "next: min 2 at Mon 2026-03-30 08:00 CEST (06:00 UTC)" in text
    assert "$474.73" in text and "$5,696.78" in text


def test_warm_schedule_through_the_app(isolated_env: Path, cli: Cli) -> None:
    (isolated_env / "modal.toml").write_text(BERLIN_TOML, encoding="utf-8")
    result = cli("warm", "schedule", "--json", services=_services())
    assert result.exit_code == 0, result.stderr
    _check_document(result.json())


def test_warm_schedule_without_windows(cli: Cli) -> None:
    result = cli("warm", "schedule", "--json", services=_services())
    assert result.exit_code == 0, result.stderr
    data = result.json()
    assert (data["windows"], data["reconciler"], data["functions"]) == ([], None, [])
    text = cli("warm", "schedule", services=_services()).stdout
    assert "No warm windows" in text


def test_warm_schedule_reports_a_bad_config(isolated_env: Path, cli: Cli) -> None:
    (isolated_env / "modal.toml").write_text('[warm]\ntimezone = "Mars/Olympus"\n',
                                             encoding="utf-8")
    result = cli("warm", "schedule", "--json")
    assert result.exit_code == 2
    assert "Mars/Olympus" in result.stdout
