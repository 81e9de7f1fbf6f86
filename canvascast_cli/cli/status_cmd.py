"""``canvascast status``: breakers, warm pools, the ledger's metrics, spend and the
operators' log — for a person (tables), a script (``--json``), a monitoring system
(``--check``) or Prometheus (``--prometheus``, ``--prometheus-file``).

The report itself is ``ops.report``; this module gathers its inputs (the state file,
modal.toml, Modal's live pools when a token is configured) and picks the output.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from canvascast_cli.cli.context import Application, command_app
from canvascast_cli.cli.options import JsonFlag
from canvascast_cli.cli.output import as_error, reporting
from canvascast_cli.errors import InvalidInput

if TYPE_CHECKING:
    from canvascast_cli.config import Settings
    from canvascast_cli.dispatch.state import StateDB
    from canvascast_cli.ops.pools import PoolsReport
    from canvascast_cli.ops.report import Report

STATUS_HELP = (
    "Breakers, warm pools, invocations, errors, spend and the operators' recent actions.\n\n"
    "Per backend and function: the circuit breaker (state, consecutive failures, when it "
    "opened, when it lets the next trial through); the warm pools as `canvascast warm "
    "status` shows them (Modal unreachable is shown, within seconds); from the ledger over "
    "--since (default 24h): invocations, p50/p95 duration, cold starts, errors by code, "
    "fallbacks, actual and estimated cost, the last failures; spend over the last 24 h "
    "and 30 days against \\[budget]; the operators' log (breaker resets, overrides, "
    "deploys).\n\n"
    "Exit codes: 0 healthy, 1 a breaker is open (also with --json); an unreachable Modal "
    "is shown, not an exit code. 2 bad input (--since, --prometheus-file, modal.toml).\n\n"
    "--check prints one line for Nagios, Icinga or Sensu, 'CANVASCAST OK|WARNING|CRITICAL|"
    "UNKNOWN - summary | perfdata', and exits 0 OK, 1 WARNING (a breaker half-open, a warm "
    "pool below target, spend over budget), 2 CRITICAL (a breaker open, or a function's "
    "error rate on a backend over \\[status] error_rate with at least min_invocations "
    "attempts), 3 UNKNOWN (Modal asked and unreachable, or the check could not run at all: "
    "a broken modal.toml or state file, a bad --since). The worst known state wins: an "
    "open breaker is CRITICAL even when Modal cannot be asked.\n\n"
    "--prometheus prints the Prometheus text exposition; --prometheus-file writes it "
    "atomically to a .prom file for node-exporter's textfile collector. Their counters are "
    "totals over every row the ledger retains (monotonic, so increase() works) unless "
    "--since is given. Both exit 0 once written: the breakers' state is in the metrics.")


def status_command(
    ctx: typer.Context,
    since: Annotated[str | None, typer.Option(
        "--since", metavar="AGE", help="The window of the ledger's metrics, failures and "
        "events: 90s, 30m, 24h, 7d (default 24h; with --prometheus alone, all history).")
    ] = None,
    prometheus: Annotated[bool, typer.Option(
        "--prometheus", help="Print the Prometheus text exposition instead of tables.")
    ] = False,
    prometheus_file: Annotated[Path | None, typer.Option(
        "--prometheus-file", metavar="PATH", help="Also write the exposition to PATH (a "
        ".prom file, replaced atomically) for node-exporter's textfile collector.")
    ] = None,
    check: Annotated[bool, typer.Option(
        "--check", help="One line for Nagios/Icinga/Sensu; exit 0 OK, 1 WARNING, "
        "2 CRITICAL, 3 UNKNOWN.")] = False,
    json_output: JsonFlag = False,
) -> None:
    application = command_app(ctx, json_output)
    if check:
        raise typer.Exit(_check(application, since, prometheus, prometheus_file))
    out = application.out
    with reporting(out):
        if prometheus and out.json:
            raise InvalidInput("--prometheus and --json both print on stdout; give one")
        window = _window(since, default=None if prometheus else 86400.0)
        report = _report(application, window, rollups=not prometheus)
        if prometheus_file is not None:
            from canvascast_cli.ops.report import write_textfile

            # A window of its own: the file's counters are totals over all history unless
            # --since says otherwise, whatever the tables beside it show.
            file_window = _window(since, None)
            file_report = report if file_window == window else _report(
                application, file_window, pools=report.pools, rollups=False)
            write_textfile(file_report, prometheus_file)
            out.note(f"Wrote the Prometheus metrics to {prometheus_file}")
        if prometheus:
            from canvascast_cli.ops.report import exposition

            out.data(None, text=exposition(report).rstrip("\n"))
            return
        if prometheus_file is not None and not out.json:
            return  # the file was what was asked for (a cron job): nothing on stdout
        if out.json:
            from canvascast_cli.records import dump

            out.data(dump(report))
        else:
            _print(application, report)
    if report.exit_code:
        raise typer.Exit(report.exit_code)


def _check(application: Application, since: str | None, prometheus: bool,
           prometheus_file: Path | None) -> int:
    """--check: exactly one line on stdout, whatever happens; every failure to judge is
    UNKNOWN (exit 3), never a usage error's 2, which a monitoring system would misread."""
    from canvascast_cli.ops.report import check_line, unknown_line, write_textfile

    try:
        if prometheus:
            raise InvalidInput("--check and --prometheus both print on stdout; give one")
        report = _report(application, _window(since, default=86400.0))
        if prometheus_file is not None:
            write_textfile(report if since is not None else _report(
                application, None, pools=report.pools, rollups=False), prometheus_file)
        line, code = check_line(report)
    except (typer.Exit, SystemExit):
        raise
    except BaseException as exc:
        line, code = unknown_line(as_error(exc))
    typer.echo(line)
    return code


def _window(since: str | None, default: float | None) -> float | None:
    if since is None:
        return default
    from canvascast_cli.ops.report import parse_since

    return parse_since(since)


def _report(application: Application, window: float | None, *,
            pools: PoolsReport | None = None, rollups: bool = True) -> Report:
    """The report over ``window`` seconds; Modal is asked for its pools unless ``pools``
    is given (once per run)."""
    from canvascast_cli.ops.report import build_report

    settings = application.config().settings
    now = application.services.clock()
    db = _state()
    if pools is None:
        pools = _pools(application, settings, db, now)
    return build_report(settings, db, pools, now=now, window=window, rollups=rollups)


def _state() -> StateDB | None:
    """The state file, or None before it exists (a fresh CANVASCAST_HOME: an empty
    report; a report creates nothing)."""
    from canvascast_cli.dispatch.state import default_path

    if not default_path().exists():
        return None
    from canvascast_cli.cli.ops_common import state_db

    return state_db()


def _pools(application: Application, settings: Settings, db: StateDB | None, now: float
           ) -> PoolsReport | None:
    """The warm pools as ``canvascast warm status`` shows them. Never raises: a fleet
    that cannot even be opened (no SDK, a token refused) is Modal unreachable."""
    import dataclasses

    from canvascast_cli.cli.ops_common import fleet_available, open_fleet
    from canvascast_cli.ops.overrides import Overrides
    from canvascast_cli.ops.pools import pools_report

    overrides = Overrides(db, settings.app.name).all() if db is not None else {}
    if not fleet_available(application):
        return pools_report(settings, overrides, None, now)
    try:
        fleet = open_fleet(application, settings, "canvascast status")
    except Exception as exc:
        return dataclasses.replace(pools_report(settings, overrides, None, now),
                                   reachable=False, error=as_error(exc).message)
    try:
        return pools_report(settings, overrides, fleet, now)
    finally:
        fleet.close()


# ---------------------------------------------------------------------------------------
# Tables


def _print(application: Application, report: Report) -> None:
    from rich import box
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console(no_color=not application.out.color or "NO_COLOR" in os.environ,
                      highlight=False, soft_wrap=True)
    colour = {"ok": "green", "warning": "yellow", "critical": "red", "unknown": "magenta"}
    console.print(f"[bold {colour[report.health]}]{report.health.upper()}[/] "
                  f"(window {report.window})")
    for finding in report.findings:
        console.print(f"  - {escape(finding.message)}")

    def table(title: str, *columns: str) -> Table:
        grid = Table(title=title, title_justify="left", title_style="bold",
                     box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False,
                     collapse_padding=True)
        for column in columns:
            numeric = column[:1] in "$p" or column in (
                "calls", "failed", "cold", "fb", "failures", "runners", "backlog")
            grid.add_column(column, justify="right" if numeric else "left",
                            no_wrap=numeric or column in ("function", "backend", "started",
                                                          "at", "opened", "next trial"),
                            overflow="fold")
        return grid

    if report.breakers:
        grid = table("Breakers", "backend", "function", "state", "failures", "opened",
                     "next trial", "last error")
        for row in report.breakers:
            grid.add_row(row.backend, row.function, row.state.value, str(row.failures),
                         _when(row.opened_at), _when(row.retry_at),
                         escape(row.last_error or "-"))
        console.print(grid)
    else:
        console.print("Breakers: none tripped")

    pools = report.pools
    if pools is not None:
        grid = table("Warm pools", "function", "target min", "live min", "runners",
                     "backlog", "$ idle/day")
        for pool in pools.rows:
            grid.add_row(pool.function, _int(pool.target.min_containers),
                         "?" if pool.live is None else _int(pool.live.min_containers),
                         _int(pool.runners) + (" (below target)" if pool.below_target else ""),
                         _int(pool.backlog), f"{pool.idle_usd_per_day:.2f}")
        console.print(grid)
        if pools.reachable is None:
            console.print("Live pools: not asked (no Modal token configured)")
        elif not pools.reachable:
            console.print(f"Live pools: Modal unreachable: {escape(pools.error or '')}")

    if report.metrics:
        grid = table(f"Invocations ({report.window})", "function", "backend", "calls",
                     "failed", "p50 s", "p95 s", "cold", "fb", "$", "errors")
        for m in [*report.metrics, *report.backends]:
            if m.function == "*" and m is report.backends[0]:
                grid.add_section()
            grid.add_row("(all)" if m.function == "*" else m.function, m.backend,
                         str(m.invocations), str(m.failures), _secs(m.p50_duration),
                         _secs(m.p95_duration), str(m.cold_starts), str(m.fallbacks),
                         _usd(m.actual_cost, m.estimated_cost),
                         " ".join(f"{c}:{n}" for c, n in m.error_codes.items()) or "-")
        console.print(grid)
        console.print("fb: fallbacks (ran locally); $: actual cost, ~ where part is the "
                      "estimate (`--json` has both)", style="dim")
    else:
        console.print(f"Invocations ({report.window}): none")

    if report.failures:
        grid = table("Last failures", "started", "function", "backend", "code", "attempt",
                     "job")
        for attempt in report.failures:
            grid.add_row(_when(attempt.started), attempt.function, attempt.backend,
                         attempt.error_code or "-", str(attempt.attempt), attempt.job_id or "-")
        console.print(grid)

    spend = "; ".join(
        f"{s.window} ${s.spent:.2f}" + (f" of ${s.budget:.2f}" if s.budget is not None else "")
        + (" [red](over budget)[/red]" if s.over else "") for s in report.spend)
    console.print(f"Spend: {spend}")

    if report.events:
        grid = table("Operators' log", "at", "kind", "subject", "detail", "by")
        for event in report.events:
            grid.add_row(_when(event.at), escape(event.kind), escape(event.subject or "-"),
                         escape(event.detail or "-"), escape(event.actor or "-"))
        console.print(grid)


def _when(at: float | None) -> str:
    if at is None:
        return "-"
    return dt.datetime.fromtimestamp(at).strftime("%m-%d %H:%M")


def _usd(actual: float, estimated: float) -> str:
    total = actual + estimated
    text = f"{total:.4f}" if 0 < total < 0.01 else f"{total:.2f}"
    return ("~" if estimated else "") + text


def _secs(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _int(value: int | None) -> str:
    return "?" if value is None else str(value)
