"""``canvascast warm`` and ``canvascast breaker``: overrides, pools and resets.

Modal's cloud cannot be reached here, so the commands run against a fake fleet that
records its calls, ``ModalFleet`` runs against a fake SDK with Modal's method shapes
(``.aio`` coroutines), every SDK name it uses is checked on the installed ``modal``, and
the real SDK is pointed at a local server that never answers (it must give up within
seconds, not the SDK's 60)."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from canvascast_cli.cli.context import Services
from canvascast_cli.config import load_config
from canvascast_cli.dispatch.breaker import BreakerRecord, CircuitState, SQLiteStorage
from canvascast_cli.dispatch.state import StateDB
from canvascast_cli.errors import AuthFailed, ModalUnavailable, NotFound
from canvascast_cli.ops.fleet import OVERRIDES_KEY, Autoscaler, ModalFleet, Ping, PoolStats
from canvascast_cli.ops.overrides import Events, Overrides
from canvascast_cli.ops.pools import pools_report
from canvascast_cli.protocol import PING_PAYLOAD
from tests.helpers import REPO, Result

T0 = 1_796_000_000.0  # a Wednesday, 2026-11-30... any fixed instant will do
RENDER_RATE = 4.0 * 0.0000131 + 8192 / 1024 * 0.00000222  # 4 cores + 8 GiB, per second


class FakeFleet:
    """``Fleet`` with a live autoscaler per function; records every call."""

    def __init__(self, *, unreachable: bool = False, missing: tuple[str, ...] = ()) -> None:
        self.live: dict[str, Autoscaler] = {}
        self.calls: list[tuple[str, Any, ...]] = []
        self.unreachable = unreachable
        self.missing = missing
        self.published: dict[str, Autoscaler] = {}
        self.closed = False

    def _check(self, function: str) -> None:
        if self.unreachable:
            raise ModalUnavailable("read: Modal did not answer within 5 s")
        if function in self.missing:
            raise NotFound(f"no deployed function {function}")

    def settings(self, function: str) -> Autoscaler:
        self.calls.append(("settings", function))
        self._check(function)
        return self.live.get(function, Autoscaler(min_containers=0, max_containers=10,
                                                  buffer_containers=0, scaledown_window=60))

    def stats(self, function: str) -> PoolStats:
        self.calls.append(("stats", function))
        self._check(function)
        return PoolStats(runners=(self.live.get(function) or Autoscaler()).min_containers or 0,
                         backlog=3)

    def update(self, function: str, settings: Autoscaler) -> Autoscaler:
        self.calls.append(("update", function, settings))
        self._check(function)
        self.live[function] = settings.over(self.live.get(function, Autoscaler()))
        return self.live[function]

    def ping(self, function: str, timeout: float) -> Ping:
        self.calls.append(("ping", function, timeout))
        self._check(function)
        return Ping(function=function, latency=0.25, cold_start=True, container_id="ta-1",
                    startup_seconds=4.5)

    def web_url(self, function: str) -> str | None:
        return None

    def published_overrides(self) -> dict[str, Autoscaler]:
        self.calls.append(("published",))
        if self.unreachable:
            raise ModalUnavailable("read the warm-pool overrides: Modal did not answer "
                                   "within 5 s")
        return dict(self.published)

    def publish_override(self, function: str, settings: Autoscaler | None) -> None:
        self.calls.append(("publish", function, settings))
        if settings is None:
            self.published.pop(function, None)
        else:
            self.published[function] = settings

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def fleet() -> FakeFleet:
    return FakeFleet()


@pytest.fixture
def run(cli: Callable[..., Result], fleet: FakeFleet) -> Callable[..., Result]:
    def go(*args: str, with_fleet: FakeFleet | None = fleet, clock: float = T0) -> Result:
        services = Services(fleet=(lambda settings: with_fleet) if with_fleet else None,
                            clock=lambda: clock,
                            environ={**{k: v for k, v in os.environ.items()
                                        if k.startswith("CANVASCAST_")},
                                     "MODAL_CONFIG_PATH": "/nonexistent/.modal.toml"})
        return cli(*args, services=services)
    return go


def state() -> StateDB:
    return StateDB()


# ---------------------------------------------------------------------------------------
# warm set / reset


def test_set_updates_modal_records_and_prints_the_cost(run: Callable[..., Result],
                                                       fleet: FakeFleet) -> None:
    result = run("warm", "set", "render_video", "--min", "2", "--scaledown", "300", "--json")
    assert result.exit_code == 0, result.stderr
    body = json.loads(result.stdout)
    assert ("update", "render_video", Autoscaler(min_containers=2, scaledown_window=300)) \
        in fleet.calls
    assert body["override"] == {"min_containers": 2, "max_containers": None,
                                "buffer_containers": None, "scaledown_window": 300}
    assert body["min_containers_before"] == 0 and body["min_containers_after"] == 2
    assert body["idle_usd_per_hour_added"] == pytest.approx(2 * RENDER_RATE * 3600, abs=1e-6)
    assert body["idle_usd_per_day_added"] == pytest.approx(2 * RENDER_RATE * 86400, abs=1e-6)
    assert body["published"] is True
    assert fleet.published == {"render_video": Autoscaler(min_containers=2,
                                                              scaledown_window=300)}
    (override,) = Overrides(state(), "canvascast").all().values()
    assert override.settings == Autoscaler(min_containers=2, scaledown_window=300)
    (event,) = Events(state()).since()
    assert (event.kind, event.subject) == ("warm_set", "render_video")
    assert "min_containers=2" in (event.detail or "")
    assert fleet.closed


def test_set_in_text_says_what_it_adds(run: Callable[..., Result]) -> None:
    result = run("warm", "set", "transcribe_audio", "--min", "1")
    assert result.exit_code == 0, result.stderr
    per_hour = (0.125 * 0.0000131 + 128 / 1024 * 0.00000222 + 0.000306) * 3600
    assert f"adds ${per_hour:.2f} an hour" in result.stderr
    assert "canvascast warm reset" in result.stderr


def test_a_second_set_keeps_the_first_ones_settings(run: Callable[..., Result]) -> None:
    assert run("warm", "set", "render_video", "--min", "2").exit_code == 0
    assert run("warm", "set", "render_video", "--max", "8").exit_code == 0
    override = Overrides(state(), "canvascast").get("render_video")
    assert override is not None
    assert override.settings == Autoscaler(min_containers=2, max_containers=8)


def test_set_refuses_bad_input_without_calling_modal(run: Callable[..., Result],
                                                     fleet: FakeFleet) -> None:
    cases = [
        (("warm", "set", "render", "--min", "1"), "FUNCTION: 'render'; allowed: "),
        (("warm", "set", "render_video"), "give at least one of --min"),
        (("warm", "set", "render_video", "--min", "9"), "max_containers in force (5)"),
        (("warm", "set", "render_video", "--min", "-1"), "--min"),
        (("warm", "set", "render_video", "--scaledown", "1"), "--scaledown"),
    ]
    for args, message in cases:
        result = run(*args, "--json")
        assert result.exit_code == 2, (args, result.stdout, result.stderr)
        assert message in json.loads(result.stdout)["error"]["message"], args
    assert not [c for c in fleet.calls if c[0] == "update"]
    assert Overrides(state(), "canvascast").all() == {}


def test_set_records_nothing_when_modal_is_unreachable(run: Callable[..., Result]) -> None:
    result = run("warm", "set", "render_video", "--min", "1", "--json",
                 with_fleet=FakeFleet(unreachable=True))
    assert result.exit_code == 3
    assert json.loads(result.stdout)["error"]["code"] == "MODAL_UNAVAILABLE"
    assert Overrides(state(), "canvascast").all() == {}
    assert Events(state()).since() == []


def test_set_says_so_when_modal_took_it_but_the_state_file_did_not(
        run: Callable[..., Result], monkeypatch: pytest.MonkeyPatch) -> None:
    from canvascast_cli.dispatch.state import StateBusy

    def locked(*args: Any, **kwargs: Any) -> Any:
        raise StateBusy("state.sqlite3 stayed locked by another process for over 10 s")

    monkeypatch.setattr(Overrides, "set", locked)
    result = run("warm", "set", "render_video", "--min", "1", "--json")
    assert result.exit_code == 1
    message = json.loads(result.stdout)["error"]["message"]
    assert message.startswith("the override of render_video is set on Modal but was not "
                              "recorded, so a redeploy will drop it (state.sqlite3 stayed")


def test_reset_goes_back_to_modal_toml(run: Callable[..., Result], fleet: FakeFleet) -> None:
    assert run("warm", "set", "render_video", "--min", "3", "--buffer", "1").exit_code == 0
    result = run("warm", "reset", "render_video", "--json")
    assert result.exit_code == 0, result.stderr
    body = json.loads(result.stdout)
    assert body["had_override"] is True
    assert fleet.calls[-2] == ("update", "render_video", Autoscaler(
        min_containers=0, max_containers=5, buffer_containers=0, scaledown_window=120))
    assert body["idle_usd_per_hour_added"] == pytest.approx(-3 * RENDER_RATE * 3600, abs=1e-6)
    assert Overrides(state(), "canvascast").all() == {}
    assert fleet.published == {}
    assert [e.kind for e in Events(state()).since()] == ["warm_set", "warm_reset"]


def test_reset_within_a_window_keeps_the_windows_minimum(run: Callable[..., Result],
                                                         fleet: FakeFleet,
                                                         monkeypatch: pytest.MonkeyPatch,
                                                         ) -> None:
    monkeypatch.setenv("CANVASCAST_WARM__WINDOWS", '[{function = "render_video", start = '
                       '"00:00", end = "24:00", min_containers = 2}]')
    result = run("warm", "reset", "render_video", "--json")
    assert result.exit_code == 0, result.stderr
    assert fleet.calls[0][2].min_containers == 2


def test_no_token_is_exit_2_naming_the_variables(run: Callable[..., Result]) -> None:
    result = run("warm", "set", "render_video", "--min", "1", "--json", with_fleet=None)
    assert result.exit_code == 2
    message = json.loads(result.stdout)["error"]["message"]
    assert "MODAL_TOKEN_ID" in message and "MODAL_TOKEN_SECRET" in message
    assert "modal.com/settings/tokens" in message


# ---------------------------------------------------------------------------------------
# warm status / ping


def test_status_shows_configured_override_target_live_and_cost(
        run: Callable[..., Result], fleet: FakeFleet) -> None:
    assert run("warm", "set", "render_video", "--min", "1").exit_code == 0
    result = run("warm", "status", "--json")
    assert result.exit_code == 0, result.stderr
    body = json.loads(result.stdout)
    assert body["reachable"] is True
    rows = {row["function"]: row for row in body["rows"]}
    render = rows["render_video"]
    assert render["configured"]["max_containers"] == 5
    assert render["override"]["min_containers"] == 1
    assert render["target"]["min_containers"] == 1
    assert render["live"]["min_containers"] == 1 and render["runners"] == 1
    assert render["backlog"] == 3 and render["below_target"] is False
    assert render["idle_usd_per_hour"] == pytest.approx(RENDER_RATE * 3600, abs=1e-6)
    assert body["idle_usd_per_day"] == pytest.approx(RENDER_RATE * 86400, abs=1e-6)
    assert rows["generate_images"]["idle_usd_per_hour"] == 0


def test_status_without_a_token_does_not_ask_modal(run: Callable[..., Result]) -> None:
    result = run("warm", "status", "--json", with_fleet=None)
    assert result.exit_code == 0
    body = json.loads(result.stdout)
    assert body["reachable"] is None and all(r["live"] is None for r in body["rows"])
    text = run("warm", "status", with_fleet=None)
    assert "not asked (no Modal token configured)" in text.stderr
    assert "render_video" in text.stdout


def test_status_stops_asking_an_unreachable_modal(run: Callable[..., Result]) -> None:
    down = FakeFleet(unreachable=True)
    result = run("warm", "status", "--json", with_fleet=down)
    assert result.exit_code == 0
    body = json.loads(result.stdout)
    assert body["reachable"] is False and "did not answer" in body["error"]
    assert len(down.calls) == 1  # the first refusal ends the asking


def test_status_goes_on_past_a_function_not_deployed(run: Callable[..., Result]) -> None:
    partial = FakeFleet(missing=("generate_images",))
    body = json.loads(run("warm", "status", "--json", with_fleet=partial).stdout)
    assert body["reachable"] is True and "generate_images" in body["error"]
    rows = {row["function"]: row for row in body["rows"]}
    assert rows["generate_images"]["live"] is None and rows["render_video"]["live"]


def test_ping_reports_latency_and_cold_start(run: Callable[..., Result],
                                             fleet: FakeFleet) -> None:
    result = run("warm", "ping", "transcribe_audio", "--timeout", "30")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip() == ("transcribe_audio: 250 ms, cold start, 4.5 s to start "
                                     "(ta-1)")
    assert fleet.calls == [("ping", "transcribe_audio", 30.0)]
    body = json.loads(run("warm", "ping", "render_video", "--json").stdout)
    assert body["cold_start"] is True and body["latency"] == 0.25


def test_pools_report_target_is_configured_window_then_override() -> None:
    settings = load_config(search=False, env={
        "CANVASCAST_WARM__WINDOWS": '[{function = "transcribe_audio", start = "00:00", '
                                    'end = "24:00", min_containers = 2}]'}).settings
    overrides = Overrides(state(), "canvascast")
    overrides.set("transcribe_audio", Autoscaler(max_containers=4))
    report = pools_report(settings, overrides.all(), None, T0)
    row = next(r for r in report.rows if r.function == "transcribe_audio")
    assert row.window_min == 2
    assert row.target == Autoscaler(min_containers=2, max_containers=4, buffer_containers=0,
                                    scaledown_window=60)
    assert report.reachable is None and row.below_target is None


# ---------------------------------------------------------------------------------------
# ModalFleet over a fake SDK with Modal's shapes, and the real SDK's names


class Aio:
    """A Modal SDK method: callable, with an ``.aio`` coroutine twin."""

    def __init__(self, log: list[Any], name: str, result: Any = None,
                 delay: float = 0.0) -> None:
        self.log, self.name, self.result, self.delay = log, name, result, delay

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"{self.name} called blocking; the fleet must use .aio")

    async def aio(self, *args: Any, **kwargs: Any) -> Any:
        import asyncio

        self.log.append((self.name, args, kwargs))
        if self.delay:
            await asyncio.sleep(self.delay)
        if isinstance(self.result, BaseException):
            raise self.result
        return self.result


class AioCall(Aio):
    """A Modal SDK method whose ``.aio`` runs ``fn`` (a Dict's get and put)."""

    def __init__(self, log: list[Any], name: str, fn: Callable[..., Any]) -> None:
        super().__init__(log, name)
        self.fn = fn

    async def aio(self, *args: Any, **kwargs: Any) -> Any:
        self.log.append((self.name, args, kwargs))
        return self.fn(*args, **kwargs)


class FakeSdk:
    def __init__(self, *, delay: float = 0.0, error: BaseException | None = None) -> None:
        from types import SimpleNamespace

        from modal.types import FunctionAutoscalerSettings, FunctionCurrentStats

        self.log: list[Any] = []
        live = FunctionAutoscalerSettings(min_containers=1, max_containers=5,
                                          scaledown_window=120, buffer_containers=0)
        stats = FunctionCurrentStats(backlog=2, num_total_runners=1, num_running_inputs=1,
                                     input_headroom=0)
        log = self.log
        fn = SimpleNamespace(
            autoscaler=SimpleNamespace(settings=Aio(log, "autoscaler.settings", error or live,
                                                    delay),
                                       update=Aio(log, "autoscaler.update", error or live)),
            get_current_stats=Aio(log, "get_current_stats", error or stats),
            remote=Aio(log, "remote", error or {"pong": True, "container_id": "ta-9",
                                                "cold_start": False}),
            get_web_url=Aio(log, "get_web_url", "https://x--api.modal.run"))
        self.stored: dict[str, Any] = {}
        store = SimpleNamespace(get=AioCall(log, "dict.get", self.stored.get),
                                put=AioCall(log, "dict.put", self.stored.__setitem__))

        def function_from_name(app: str, name: str, *, environment_name: str | None = None
                               ) -> Any:
            log.append(("Function.from_name", (app, name), {"environment_name":
                                                             environment_name}))
            return fn

        def dict_from_name(name: str, *, environment_name: str | None = None,
                           create_if_missing: bool = False) -> Any:
            log.append(("Dict.from_name", (name,), {"create_if_missing": create_if_missing}))
            return store

        self.Function = SimpleNamespace(from_name=function_from_name)
        self.Dict = SimpleNamespace(from_name=dict_from_name)


def test_modal_fleet_speaks_the_sdk() -> None:
    sdk = FakeSdk()
    fleet = ModalFleet("canvascast", environment="prod", sdk=sdk)
    try:
        assert fleet.settings("render_video") == Autoscaler(
            min_containers=1, max_containers=5, buffer_containers=0, scaledown_window=120)
        assert fleet.stats("render_video") == PoolStats(runners=1, backlog=2,
                                                         running_inputs=1)
        fleet.update("render_video", Autoscaler(min_containers=2))
        ping = fleet.ping("render_video", 10)
        fleet.publish_override("render_video", Autoscaler(min_containers=2))
        fleet.publish_override("transcribe_audio", Autoscaler(min_containers=1))
        fleet.publish_override("render_video", None)
    finally:
        fleet.close()
    assert ping.cold_start is False and ping.container_id == "ta-9" and ping.latency >= 0
    calls = [(name, args, kwargs) for name, args, kwargs in sdk.log]
    assert ("Function.from_name", ("canvascast", "render_video"),
            {"environment_name": "prod"}) in calls
    assert ("autoscaler.update", (), {"min_containers": 2}) in calls
    assert ("remote", (dict(PING_PAYLOAD),), {}) in calls
    assert ("Dict.from_name", ("canvascast-progress",), {"create_if_missing": True}) in calls
    assert ("dict.put", (OVERRIDES_KEY, {"render_video": {"min_containers": 2}}), {}) in calls
    # Each publish changes its own function's entry only.
    assert sdk.stored[OVERRIDES_KEY] == {"transcribe_audio": {"min_containers": 1}}
    assert ("dict.put", (OVERRIDES_KEY, {"render_video": {"min_containers": 2},
                                         "transcribe_audio": {"min_containers": 1}}), {}) \
        in calls
    # One lazy handle per function: looked up once.
    assert sum(1 for c in calls if c[0] == "Function.from_name") == 1


def test_modal_fleet_bounds_every_call() -> None:
    fleet = ModalFleet("canvascast", timeout=0.2, sdk=FakeSdk(delay=30))
    began = time.monotonic()
    with pytest.raises(ModalUnavailable, match=r"did not answer within 0\.2 s"):
        fleet.settings("render_video")
    assert time.monotonic() - began < 10
    fleet.close()


def test_modal_fleet_translates_the_sdks_errors() -> None:
    import modal.exception

    cases = [(modal.exception.NotFoundError("App 'canvascast' not found"), NotFound),
             (modal.exception.AuthError("bad token"), AuthFailed),
             (modal.exception.ConnectionError("refused"), ModalUnavailable)]
    for error, kind in cases:
        fleet = ModalFleet("canvascast", sdk=FakeSdk(error=error))
        with pytest.raises(kind):
            fleet.stats("render_video")
        fleet.close()


def test_every_sdk_name_the_fleet_uses_exists_in_modal() -> None:
    import inspect

    import modal

    for name in ("autoscaler", "get_current_stats", "remote", "get_web_url", "from_name"):
        assert hasattr(modal.Function, name), name
    manager = modal.functions.FunctionAutoscalerManager
    assert hasattr(manager.settings, "aio") and hasattr(manager.update, "aio")
    update = inspect.signature(modal.functions.FunctionAutoscalerManager.update)
    assert {"min_containers", "max_containers", "buffer_containers",
            "scaledown_window"} <= set(update.parameters)
    assert "environment_name" in inspect.signature(modal.Function.from_name).parameters
    dict_from_name = inspect.signature(modal.Dict.from_name).parameters
    assert {"environment_name", "create_if_missing"} <= set(dict_from_name)
    assert hasattr(modal.Dict, "put")
    from modal.types import FunctionAutoscalerSettings, FunctionCurrentStats

    assert {"backlog", "num_total_runners"} <= set(FunctionCurrentStats.__dataclass_fields__)
    assert set(FunctionAutoscalerSettings.__dataclass_fields__) >= {
        "min_containers", "max_containers", "buffer_containers", "scaledown_window"}


def test_the_real_sdk_against_a_silent_modal_gives_up_in_seconds(
        black_hole: str, tmp_path: Path) -> None:
    environ = {**{k: v for k, v in os.environ.items() if not k.startswith("MODAL_")},
               "MODAL_TOKEN_ID": "ak-notarealtoken", "MODAL_TOKEN_SECRET": "as-notarealsecret",
               "MODAL_SERVER_URL": black_hole,
               "CANVASCAST_HOME": str(tmp_path / "home")}
    began = time.monotonic()
    status = subprocess.run([sys.executable, "-m", "canvascast_cli", "warm", "status", "--json"],
                            env=environ, cwd=tmp_path, capture_output=True, text=True,
                            timeout=60)
    set_ = subprocess.run([sys.executable, "-m", "canvascast_cli", "warm", "set",
                           "render_video", "--min", "1", "--json"], env=environ, cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    took = time.monotonic() - began
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["reachable"] is False
    assert set_.returncode == 3, set_.stdout
    assert json.loads(set_.stdout)["error"]["code"] == "MODAL_UNAVAILABLE"
    assert took < 40  # two commands; the SDK alone waits ~60 s per call
    for stream in (status.stdout, status.stderr, set_.stdout, set_.stderr):
        assert "notarealsecret" not in stream
    assert Overrides(StateDB(tmp_path / "home" / "state.sqlite3"), "canvascast").all() == {}


# ---------------------------------------------------------------------------------------
# breaker reset


def open_breaker(key: str, failures: int = 5) -> None:
    SQLiteStorage(state()).update(key, lambda rec: BreakerRecord(
        CircuitState.OPEN, failures, T0 - 10, "TIMEOUT"))


def test_breaker_reset_closes_and_logs(run: Callable[..., Result]) -> None:
    open_breaker("modal:render_video")
    open_breaker("http:render_video", 2)
    open_breaker("modal:transcribe_audio")
    result = run("breaker", "reset", "render_video", "--backend", "modal", "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["reset"] == [
        {"key": "modal:render_video", "was": "open", "failures": 5, "open": True}]
    assert set(SQLiteStorage(state()).all()) == {"http:render_video", "modal:transcribe_audio"}
    (event,) = Events(state()).since()
    assert (event.kind, event.subject, event.detail) == ("breaker_reset",
                                                         "modal:render_video",
                                                         "was open, 5 failures")
    every = run("breaker", "reset")
    assert every.exit_code == 0 and "Reset http:render_video" in every.stderr
    assert SQLiteStorage(state()).all() == {}
    again = run("breaker", "reset")
    assert again.exit_code == 0 and "every circuit is closed already" in again.stderr


def test_breaker_reset_refuses_unknown_names(run: Callable[..., Result]) -> None:
    for args, message in [(("breaker", "reset", "render"), "FUNCTION: 'render'"),
                          (("breaker", "reset", "--backend", "local"), "--backend: 'local'")]:
        result = run(*args, "--json")
        assert result.exit_code == 2 and message in json.loads(result.stdout)["error"]["message"]


def test_state_file_from_schema_2_gains_the_operators_tables(tmp_path: Path) -> None:
    from canvascast_cli.dispatch.state import _MIGRATIONS, APPLICATION_ID

    path = tmp_path / "old.sqlite3"
    conn = sqlite3.connect(path, isolation_level=None)
    for statements in _MIGRATIONS[:2]:
        for statement in statements:
            conn.execute(statement)
    conn.execute(f"PRAGMA application_id = {APPLICATION_ID:d}")
    conn.execute("PRAGMA user_version = 2")
    conn.close()
    db = StateDB(path)
    Overrides(db, "canvascast").set("render_video", Autoscaler(min_containers=1))
    assert Overrides(db, "other-app").all() == {}  # per app
    assert Overrides(db, "canvascast").get("render_video") is not None
    assert REPO.exists()
