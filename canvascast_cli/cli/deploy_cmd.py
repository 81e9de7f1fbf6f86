"""``canvascast deploy``: the Modal app from modal.toml — the plan, then the deploy.

The plan (``ops.plan``) is built from the same decorator arguments the app gets, so what
is shown is what Modal is asked for. ``--dry-run`` stops there, after importing the app
in a child Python (Modal's own decoration-time checks; no network, no token): what a
pull request's CI runs. A real deploy runs in a child process with a deadline
(``ops.deploy``), then puts the operator's warm-pool overrides back (Modal resets them
on every redeploy) and records a ``deploy`` event in the state file.
"""

from __future__ import annotations

import os
from contextlib import suppress
from typing import TYPE_CHECKING, Annotated, Any

import typer

from canvascast_cli.cli.context import command_app
from canvascast_cli.cli.options import JsonFlag
from canvascast_cli.cli.output import reporting

if TYPE_CHECKING:
    from rich.console import Console

    from canvascast_cli.cli.context import Application
    from canvascast_cli.config import Settings
    from canvascast_cli.ops.plan import Plan

DEPLOY_HELP = (
    "Deploy the Modal functions as modal.toml describes them.\n\n"
    "Validates modal.toml and prints the plan: each function's GPU/CPU/memory, timeouts, "
    "retries and container limits, the warm-pool schedule, the Volume and Secrets, each "
    "image's pinned packages, and what warm containers cost while idle. --dry-run stops "
    "there (offline, no token: for pull-request CI). Otherwise the app is deployed "
    "(MODAL_TOKEN_ID and MODAL_TOKEN_SECRET, or a profile from `modal token new`), "
    "within --timeout seconds, and the warm-pool overrides set with `canvascast warm set` "
    "are applied again.\n\n"
    "Exit codes: 0 deployed (or planned), 1 the deploy failed, 2 invalid modal.toml, no "
    "token or a refused one, bad flags, 3 Modal unreachable or the deploy did not finish "
    "in time, 130 interrupted (143 SIGTERM)."
)


def deploy_command(
    ctx: typer.Context,
    environment: Annotated[str | None, typer.Option(
        "--env", metavar="NAME", help="Modal environment to deploy to (default: \\[app] "
        "environment, else MODAL_ENVIRONMENT, else the profile's).")] = None,
    tag: Annotated[str, typer.Option(
        "--tag", metavar="TAG", help="Modal's deployment tag (in CI: the commit sha).")] = "",
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Show the plan and check the app imports; deploy nothing "
        "(no network, no token).")] = False,
    timeout: Annotated[float, typer.Option(
        "--timeout", metavar="SECONDS", min=1, help="Give up (exit 3) when the deploy "
        "takes longer; a first deploy builds every image.")] = 1800.0,
    json_output: JsonFlag = False,
) -> None:
    application = command_app(ctx, json_output)
    out = application.out
    with reporting(out):
        from canvascast_cli.cli.remote import environ_of
        from canvascast_cli.ops import deploy as ops_deploy
        from canvascast_cli.ops.plan import build_plan, image_packages

        config = application.config()  # ConfigError: exit 2, every problem listed
        environ = dict(environ_of(application))
        if config.path is not None:
            environ["CANVASCAST_CONFIG"] = str(config.path)
        settings = config.settings
        if environment is not None:
            import re

            from canvascast_cli.config import ENVIRONMENT_PATTERN
            from canvascast_cli.errors import InvalidInput

            if not re.fullmatch(ENVIRONMENT_PATTERN, environment):
                raise InvalidInput(f"--env: {environment!r}; a Modal environment name is "
                                   "1-63 letters, digits, dashes, periods or underscores")
            settings = settings.model_copy(update={
                "app": settings.app.model_copy(update={"environment": environment})})
        target = settings.app.environment
        if not dry_run:  # no token: exit 2 at once, before anything slow
            from canvascast_cli.ops.access import require_credentials

            require_credentials(environ, "canvascast deploy")
        plan = build_plan(settings, environment=target, images=image_packages())

        if dry_run:
            ops_deploy.check_import(environ)
            if not out.json and not out.quiet:
                show_plan(plan, _stdout(application), packages=True)
            out.note(f"[green]Plan ok[/green]: {plan.app} imports and would deploy "
                     f"{len(plan.functions)} functions (nothing was deployed)")
            out.data(_payload(plan, dry_run=True, tag=tag or None))
            return

        if not out.quiet and not out.json:
            show_plan(plan, out.err, packages=False)
        out.note(f"Deploying [bold]{plan.app}[/bold]"
                 + (f" to environment {target}" if target else "")
                 + (f" (tag {tag})" if tag else "") + f"; giving up after {timeout:g} s")
        deployed = ops_deploy.deploy_in_child(
            environ=environ, environment=target, tag=tag, timeout=timeout,
            progress=not (out.json or out.quiet))
        out.note(f"[green]Deployed[/green] {plan.app} (app id {deployed.get('app_id')})"
                 + (f"; job API at {deployed['web_url']}" if deployed.get("web_url") else ""))
        reapplied = _reapply(application, settings)
        _record(plan, deployed, reapplied)
        payload = _payload(plan, dry_run=False, tag=tag, deployed=deployed,
                           reapplied=reapplied)
        out.data(payload, text=deployed.get("web_url") or deployed.get("app_id") or plan.app)


def _stdout(application: Application) -> Console:
    import sys

    from rich.console import Console

    from canvascast_cli.env import NO_COLOR_STANDARD

    return Console(no_color=not application.out.color or NO_COLOR_STANDARD in os.environ,
                   highlight=False, width=None if sys.stdout.isatty() else 120)


def _reapply(application: Application, settings: Settings) -> list[dict[str, Any]]:
    """The operators' overrides, applied again (Modal dropped them with the redeploy):
    those published in the app's progress Dict — set with `canvascast warm set` on any
    machine, so a deploy from CI keeps them — over those in this machine's state file.
    Problems are warnings: the deploy itself succeeded."""
    from canvascast_cli.cli.ops_common import open_fleet, state_db
    from canvascast_cli.ops.deploy import reapply_overrides
    from canvascast_cli.ops.overrides import Overrides
    from canvascast_cli.records import dump

    out = application.out
    overrides = {}
    try:
        overrides = {name: o.settings
                     for name, o in Overrides(state_db(), settings.app.name).all().items()}
    except Exception as exc:
        out.warn(f"the warm-pool overrides could not be read from the state file ({exc})")
    try:
        fleet = open_fleet(application, settings, "canvascast deploy")
    except Exception as exc:
        message = getattr(exc, "message", str(exc))
        if overrides:
            out.warn(f"the warm-pool overrides were not applied again: {message}")
        return [{"function": name, "settings": o.given(), "ok": False, "error": message}
                for name, o in overrides.items()]
    try:
        try:
            overrides.update(fleet.published_overrides())
        except Exception as exc:
            out.warn("the published warm-pool overrides could not be read "
                     f"({getattr(exc, 'message', exc)}); this machine's were applied")
        done = reapply_overrides(fleet, overrides) if overrides else []
    finally:
        fleet.close()
    for item in done:
        values = ", ".join(f"{k}={v}" for k, v in item.settings.items())
        if item.ok:
            out.note(f"re-applied warm override for {item.function}: {values}")
        else:
            out.warn(f"warm override for {item.function} ({values}) not applied again: "
                     f"{item.error}; set it again with `canvascast warm set`")
    return [dump(item) for item in done]


def _record(plan: Plan, deployed: dict[str, Any], reapplied: list[dict[str, Any]]) -> None:
    from canvascast_cli.cli.ops_common import state_db
    from canvascast_cli.ops.overrides import Events, actor

    detail = (f"app_id={deployed.get('app_id')} environment={deployed.get('environment')} "
              f"tag={deployed.get('tag') or '-'} overrides_reapplied="
              f"{sum(1 for r in reapplied if r.get('ok'))}/{len(reapplied)}")
    # the deploy happened; the log is a record of it, not a condition of it
    with suppress(Exception):
        Events(state_db()).record("deploy", plan.app, detail, by=actor())


def _payload(plan: Plan, *, dry_run: bool, tag: str | None,
             deployed: dict[str, Any] | None = None,
             reapplied: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    from canvascast_cli.records import dump

    deployed = deployed or {}
    return {
        "app": plan.app,
        "app_id": deployed.get("app_id"),
        "environment": deployed.get("environment", plan.environment),
        "tag": tag,
        "functions": deployed.get("functions") or [f.name for f in plan.functions],
        "web_url": deployed.get("web_url"),
        "plan": dump(plan),
        "overrides_reapplied": reapplied or [],
        "dry_run": dry_run,
    }


def show_plan(plan: Plan, console: Console, *, packages: bool) -> None:
    """The plan as a person reads it: a table of functions, then the rest (each image's
    pins listed when ``packages``, else counted)."""
    from rich import box
    from rich.table import Table

    from canvascast_cli.ops.plan import PLAN_COLUMNS, plan_rows

    table = Table(box=box.SIMPLE_HEAD, title=f"deploy plan: app {plan.app}"
                  + (f" (environment {plan.environment})" if plan.environment else ""))
    for column in PLAN_COLUMNS:
        table.add_column(column)
    for row in plan_rows(plan):
        table.add_row(*row)
    console.print(table)
    console.print("containers: min/max/buffer; timeout: per attempt (a container's start); "
                  "resources: memory in MiB", markup=False)
    console.print(f"Volume: {plan.volume}", markup=False)
    console.print(f"Secrets: {', '.join(plan.secrets)}", markup=False)
    if plan.schedule is not None:
        when = plan.schedule.cron or "(see the windows)"
        console.print(f"Schedule: {plan.schedule.function} at {when} "
                      f"({plan.schedule.timezone})", markup=False)
        for window in plan.schedule.windows:
            console.print(f"  window: {window}", markup=False)
        console.print(f"  the windows' warm containers, idle: ${plan.schedule.usd_per_week:,.2f}"
                      f" a typical week, ${plan.schedule.usd_per_30_days:,.2f} a 30-day month "
                      "(canvascast warm schedule)", markup=False)
    else:
        console.print("Schedule: none (no warm windows)", markup=False)
    for image in plan.images:
        console.print(f"Image {image.name} ({', '.join(image.functions)}): "
                      f"{len(image.packages)} pinned packages"
                      + (f": {' '.join(image.packages)}" if packages else ""), markup=False)
    console.print(f"Idle cost of warm containers: ${plan.idle_cost_per_hour:.2f}/hour, "
                  f"${plan.idle_cost_per_day:.2f}/day", markup=False)
