"""``canvascast warm``: Modal's warm pools — what they are, what they cost, and overrides.

    warm status     per function: configured, window, override, target and live settings,
                    live runners and backlog, the idle cost of the pool
    warm set        an autoscaler override (``fn.autoscaler.update``), recorded in the
                    state file so ``canvascast deploy`` applies it again
    warm reset      drop the override: back to modal.toml and the windows
    warm ping       one minimal invocation: latency, cold or warm start
    warm schedule   the [[warm.windows]], the next change, the weekly idle cost

Exit codes: 0 ok, 2 bad input or no Modal token, 3 Modal unreachable (within a few
seconds, never the SDK's 60 s), 130 interrupted.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from canvascast_cli.cli import warm_schedule
from canvascast_cli.cli.context import Application, command_app
from canvascast_cli.cli.options import JsonFlag
from canvascast_cli.cli.output import reporting
from canvascast_cli.errors import EXIT_CODES_HELP, CanvasCastError, InvalidInput

if TYPE_CHECKING:
    from canvascast_cli.config import Settings
    from canvascast_cli.ops.fleet import Autoscaler
    from canvascast_cli.ops.overrides import Overrides
    from canvascast_cli.ops.pools import PoolsReport

app = typer.Typer(
    help="Warm pools on Modal: containers kept ready when traffic needs them, at a known "
    "cost. Overrides last until `canvascast warm reset` (and survive redeploys: "
    f"`canvascast deploy` applies them again).\n\n{EXIT_CODES_HELP}",
    no_args_is_help=True)

FunctionArg = Annotated[str, typer.Argument(
    metavar="FUNCTION", help="render_video, transcribe_audio or generate_images.")]


def _function(name: str) -> str:
    from canvascast_cli.protocol import FUNCTIONS

    if name not in FUNCTIONS:
        raise InvalidInput(f"FUNCTION: {name!r}; allowed: {', '.join(FUNCTIONS)}")
    return name


def _settings(application: Application) -> Settings:
    return application.config().settings


@app.command("status", short_help="Each pool: settings, live runners, idle cost.")
def status(ctx: typer.Context, json_output: JsonFlag = False) -> None:
    """Each function's pool: configured, window, override, target and live settings, live
    runners and backlog, and what the warm containers cost idle. Modal unreachable is
    shown (within seconds), not an error."""
    application = command_app(ctx, json_output)
    out = application.out
    with reporting(out):
        from canvascast_cli.records import dump

        report = _pools(application, _settings(application), "canvascast warm status")
        if out.json:
            out.data(dump(report))
        else:
            _print_pools(application, report)


@app.command("set", short_help="Override a function's autoscaler (recorded; cost shown).")
def set_(
    ctx: typer.Context,
    function: FunctionArg,
    min_containers: Annotated[int | None, typer.Option(
        "--min", min=0, max=100, help="Containers kept warm (0-100).")] = None,
    max_containers: Annotated[int | None, typer.Option(
        "--max", min=1, max=1000, help="Upper bound on containers (1-1000).")] = None,
    buffer_containers: Annotated[int | None, typer.Option(
        "--buffer", min=0, max=100, help="Idle containers kept ready beyond current "
        "demand (0-100).")] = None,
    scaledown: Annotated[int | None, typer.Option(
        "--scaledown", min=2, max=3600, metavar="SECONDS",
        help="Idle seconds before a container stops (2-3600).")] = None,
    json_output: JsonFlag = False,
) -> None:
    """Override FUNCTION's autoscaler on Modal now (settings not given stay as they are),
    record it in the state file, and print what it adds per hour and per day."""
    application = command_app(ctx, json_output)
    out = application.out
    with reporting(out):
        from canvascast_cli.cli.ops_common import open_fleet
        from canvascast_cli.ops import pools
        from canvascast_cli.ops.fleet import Autoscaler
        from canvascast_cli.ops.overrides import Events, actor
        from canvascast_cli.records import dump

        name = _function(function)
        asked = Autoscaler(min_containers=min_containers, max_containers=max_containers,
                           buffer_containers=buffer_containers, scaledown_window=scaledown)
        if not asked.given():
            raise InvalidInput("give at least one of --min, --max, --buffer, --scaledown")
        settings = _settings(application)
        overrides, earlier, before, now = _in_force(application, settings, name)
        merged = asked.over(earlier) if earlier else asked
        after = pools.target(settings, name, merged, now)
        _check_bounds(after)
        fleet = open_fleet(application, settings, "canvascast warm set")
        try:
            fleet.update(name, merged)  # Modal first: nothing is recorded if it refuses
            try:
                recorded = overrides.set(name, merged, by=actor())
                Events(overrides.db, clock=application.services.clock).record(
                    "warm_set", name, _describe(merged), by=recorded.set_by)
            except CanvasCastError as exc:
                raise exc.rewritten(lambda text: (
                    f"the override of {name} is set on Modal but was not recorded, so a "
                    f"redeploy will drop it ({text}); fix that and run `canvascast warm "
                    "set` again")) from None
            published = _publish(application, fleet, name, merged)
        finally:
            fleet.close()
        added = _added(settings, name, before, after)
        out.note(f"[green]Set[/green] {name}: {_describe(merged)} (recorded; `canvascast "
                 "deploy` applies it again after a redeploy, `canvascast warm reset` "
                 "drops it)")
        _note_cost(application, added)
        out.data({"function": name, "override": dump(merged), "target": dump(after),
                  "published": published, **added},
                 text=None)


@app.command("reset", short_help="Drop an override: back to modal.toml and the windows.")
def reset(ctx: typer.Context, function: FunctionArg, json_output: JsonFlag = False) -> None:
    """Drop FUNCTION's override: Modal gets modal.toml's settings (raised by a window now
    open) again."""
    application = command_app(ctx, json_output)
    out = application.out
    with reporting(out):
        from canvascast_cli.cli.ops_common import open_fleet
        from canvascast_cli.ops import pools
        from canvascast_cli.ops.overrides import Events, actor
        from canvascast_cli.records import dump

        name = _function(function)
        settings = _settings(application)
        overrides, _earlier, before, now = _in_force(application, settings, name)
        after = pools.target(settings, name, None, now)
        fleet = open_fleet(application, settings, "canvascast warm reset")
        try:
            fleet.update(name, after)
            had = overrides.clear(name)
            Events(overrides.db, clock=application.services.clock).record(
                "warm_reset", name, _describe(after), by=actor())
            published = _publish(application, fleet, name, None)
        finally:
            fleet.close()
        added = _added(settings, name, before, after)
        out.note(f"[green]Reset[/green] {name}: {_describe(after)}"
                 + ("" if had else " (it had no override)"))
        _note_cost(application, added)
        out.data({"function": name, "had_override": had, "target": dump(after),
                  "published": published, **added}, text=None)


@app.command("ping", short_help="One minimal invocation: latency, cold or warm.")
def ping(
    ctx: typer.Context,
    function: FunctionArg,
    timeout: Annotated[float, typer.Option(
        "--timeout", min=1, max=3600, metavar="SECONDS",
        help="How long to wait for the answer (a cold start loads the function's "
        "models first).")] = 300.0,
    json_output: JsonFlag = False,
) -> None:
    """One minimal invocation of FUNCTION: the round trip, and whether it started a cold
    container (and what that start took)."""
    application = command_app(ctx, json_output)
    out = application.out
    with reporting(out):
        from canvascast_cli.cli.ops_common import open_fleet
        from canvascast_cli.records import dump

        name = _function(function)
        settings = _settings(application)
        fleet = open_fleet(application, settings, "canvascast warm ping")
        try:
            result = fleet.ping(name, timeout)
        finally:
            fleet.close()
        start = ("cold start" + (f", {result.startup_seconds:.1f} s to start"
                                 if result.startup_seconds is not None else "")
                 if result.cold_start else "warm container")
        out.data(dump(result), text=f"{name}: {result.latency * 1000:.0f} ms, {start}"
                 + (f" ({result.container_id})" if result.container_id else ""))


app.command("schedule", short_help="The warm windows, the next change, the weekly idle cost.")(
    warm_schedule.schedule_command)

# ---------------------------------------------------------------------------------------


def _in_force(application: Application, settings: Settings, name: str
              ) -> tuple[Overrides, Autoscaler | None, Autoscaler, float]:
    """The state file's overrides, ``name``'s override (if any), the settings in force
    for it now (configured, window, override) and now."""
    from canvascast_cli.cli.ops_common import state_db
    from canvascast_cli.ops.overrides import Overrides
    from canvascast_cli.ops.pools import target

    overrides = Overrides(state_db(), settings.app.name, clock=application.services.clock)
    now = application.services.clock()
    earlier = overrides.get(name)
    override = earlier.settings if earlier else None
    return overrides, override, target(settings, name, override, now), now


def _pools(application: Application, settings: Settings, doing: str) -> PoolsReport:
    """The pools report; Modal asked when a token (or a test's fleet) is there."""
    from canvascast_cli.cli.ops_common import fleet_available, open_fleet, state_db
    from canvascast_cli.ops.overrides import Overrides
    from canvascast_cli.ops.pools import pools_report

    overrides = Overrides(state_db(), settings.app.name).all()
    fleet = open_fleet(application, settings, doing) if fleet_available(application) else None
    try:
        return pools_report(settings, overrides, fleet, application.services.clock())
    finally:
        if fleet is not None:
            fleet.close()


def _print_pools(application: Application, report: PoolsReport) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Warm pools", title_justify="left")
    table.add_column("function", no_wrap=True)
    table.add_column("target", no_wrap=True)
    table.add_column("from", no_wrap=True)
    table.add_column("live", no_wrap=True)
    table.add_column("up", justify="right")
    table.add_column("queued", justify="right", no_wrap=True)
    table.add_column("$/h idle", justify="right")
    table.add_column("$/day", justify="right", no_wrap=True)
    for row in report.rows:
        source = ("override" if row.override is not None else
                  f"window min {row.window_min}" if row.window_min is not None else
                  "modal.toml")
        runners = "?" if row.runners is None else str(row.runners)
        if row.below_target:
            runners += " [yellow]< target[/yellow]"
        table.add_row(row.function, _compact(row.target), source,
                      "?" if row.live is None else _compact(row.live), runners,
                      "?" if row.backlog is None else str(row.backlog),
                      f"{row.idle_usd_per_hour:.2f}", f"{row.idle_usd_per_day:.2f}")
    Console(no_color=not application.out.color, highlight=False, soft_wrap=True).print(table)
    application.out.note("target, live: min/max/buffer containers/scaledown s; up: live "
                         "containers; queued: inputs waiting")
    if report.reachable is None:
        live = "not asked (no Modal token configured)"
    elif report.reachable:
        live = "from Modal" + (f"; {report.error}" if report.error else "")
    else:
        live = f"[yellow]Modal unreachable[/yellow]: {report.error}"
    application.out.note(f"Live settings and runners: {live}")
    application.out.note(f"Idle cost of the warm pools: ${report.idle_usd_per_hour:.2f} an "
                         f"hour, ${report.idle_usd_per_day:.2f} a day")


def _compact(settings: Autoscaler) -> str:
    values = [settings.min_containers, settings.max_containers, settings.buffer_containers,
              settings.scaledown_window]
    return "/".join("-" if v is None else str(v) for v in values)


def _short(settings: Autoscaler) -> str:
    labels = {"min_containers": "min", "max_containers": "max",
              "buffer_containers": "buffer", "scaledown_window": "scaledown"}
    return " ".join(f"{labels[k]} {v}" for k, v in settings.given().items()) or "-"


def _describe(settings: Autoscaler) -> str:
    return ", ".join(f"{k}={v}" for k, v in settings.given().items())


def _check_bounds(settings: Autoscaler) -> None:
    low, high = settings.min_containers, settings.max_containers
    if low is not None and high is not None and low > high:
        raise InvalidInput(f"--min {low} is more than the max_containers in force ({high}); "
                           "give --max too")
    buffer = settings.buffer_containers or 0
    if high is not None and buffer > high:
        raise InvalidInput(f"--buffer {buffer} is more than the max_containers in force "
                           f"({high})")


def _added(settings: Settings, function: str, before: Autoscaler, after: Autoscaler
           ) -> dict[str, Any]:
    """What the change adds to the idle cost (negative: saves), per hour and per day."""
    from canvascast_cli.ops.pools import DAY, HOUR, idle_rate

    rate = idle_rate(settings, function)
    delta = (after.min_containers or 0) - (before.min_containers or 0)
    return {"min_containers_before": before.min_containers or 0,
            "min_containers_after": after.min_containers or 0,
            "idle_usd_per_hour_added": round(delta * rate * HOUR, 6),
            "idle_usd_per_day_added": round(delta * rate * DAY, 6)}


def _note_cost(application: Application, added: dict[str, Any]) -> None:
    per_hour, per_day = added["idle_usd_per_hour_added"], added["idle_usd_per_day_added"]
    verb = "adds" if per_hour >= 0 else "saves"
    application.out.note(
        f"Warm containers {added['min_containers_before']} -> "
        f"{added['min_containers_after']}: {verb} ${abs(per_hour):.2f} an hour, "
        f"${abs(per_day):.2f} a day idle")


def _publish(application: Application, fleet: Any, function: str,
             settings: Autoscaler | None) -> bool:
    """Publish ``function``'s override (None: drop it) where every machine sees it: the
    reconciler on Modal (which would otherwise undo it at its next run) and a deploy from
    CI (which applies the published overrides again). A failure is a warning: the
    override itself is set."""
    try:
        fleet.publish_override(function, settings)
    except Exception as exc:
        application.out.warn(f"the override of {function} was not published ({exc}): the "
                             "reconciler may undo it, and a deploy from another machine "
                             "will not apply it again; run `canvascast warm set` again")
        return False
    return True
