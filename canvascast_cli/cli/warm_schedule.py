"""canvascast warm schedule: the warm windows of modal.toml, the reconciler's schedule,
each windowed function's target now and its next change, and what the windows cost a
week against keeping the same containers warm around the clock. Offline: modal.toml
only, no Modal calls (what Modal runs now is ``warm status``'s)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import typer

from canvascast_cli.cli.context import command_app
from canvascast_cli.cli.options import JsonFlag
from canvascast_cli.cli.output import reporting

if TYPE_CHECKING:
    from canvascast_cli.config import Settings

RECONCILER = "reconcile_warm_pools"  # the scheduled Modal function (modal_functions/app.py)


def schedule_command(ctx: typer.Context, json_output: JsonFlag = False) -> None:
    """Show the warm windows ([[warm.windows]] in modal.toml): each window, the reconciler's
    cron, every windowed function's min_containers now and its next change (in the
    windows' time zone and UTC), and the weekly idle cost against always-on. Reads only
    modal.toml; asks Modal nothing."""
    application = command_app(ctx, json_output)
    out = application.out
    with reporting(out):
        settings = application.config().settings
        now = datetime.fromtimestamp(application.services.clock(), UTC)
        document = schedule_document(settings, now)
        out.data(document, text=schedule_text(document))


def schedule_document(settings: Settings, now: datetime) -> dict[str, Any]:
    """The whole schedule at ``now`` as one JSON-ready document."""
    from canvascast_cli.ops import windows

    zone = windows.zone(settings)
    cron = windows.cron_expression(settings)

    def instant(when: datetime) -> dict[str, str]:
        local = when.astimezone(zone)
        return {"utc": when.astimezone(UTC).isoformat(), "local": local.isoformat(),
                "local_text": local.strftime("%a %Y-%m-%d %H:%M %Z"),
                "utc_text": when.astimezone(UTC).strftime("%H:%M UTC")}

    functions = []
    for function in windows.functions_with_windows(settings):
        goal = windows.target(settings, function, now)
        change = windows.next_change(settings, function, now)
        functions.append({
            "function": function,
            "configured_min_containers": windows.configured_min(settings, function),
            "min_containers_now": goal.min_containers,
            "why": goal.why,
            "next_change": None if change is None else {
                **instant(change[0]), "min_containers": change[1]},
            "weekly_cost": windows.weekly_cost(settings, function).to_dict(),
        })
    return {
        "timezone": settings.warm.timezone,
        "now": instant(now),
        "windows": [{"function": w.function, "days": list(w.days),
                     "days_text": windows.days_text(w.days), "start": w.start, "end": w.end,
                     "min_containers": w.min_containers} for w in settings.warm.windows],
        "reconciler": None if cron is None else {
            "function": RECONCILER, "cron": cron, "timezone": settings.warm.timezone,
            "check_every_minutes": settings.warm.check_every},
        "functions": functions,
        "cost_note": "idle cost: warm containers while no job runs on them, at the "
                     "configured resources; a typical week of 7 x 24 wall-clock hours "
                     "(a week with a daylight saving switch differs by an hour); 30 days "
                     "= 30/7 weeks",
    }


def schedule_text(document: dict[str, Any]) -> str:
    """The document for a person."""
    tz = document["timezone"]
    if not document["windows"]:
        return ("No warm windows: modal.toml has no [[warm.windows]]; every function keeps "
                "its configured min_containers and no reconciler is deployed.")
    width = max(len(w["function"]) for w in document["windows"])
    lines = [f"Warm windows ({tz}):"]
    for w in document["windows"]:
        lines.append(f"  {w['function']:<{width}}  {w['days_text']:<15} "
                     f"{w['start']}-{w['end']}  min {w['min_containers']}")
    rec = document["reconciler"]
    lines += ["", f"Reconciler: {rec['function']}, cron \"{rec['cron']}\" ({rec['timezone']}): "
              f"every {rec['check_every_minutes']} min and at every window edge"]
    now = document["now"]
    lines += ["", f"Now {now['local_text']} ({now['utc_text']}):"]
    for fn in document["functions"]:
        change = fn["next_change"]
        nxt = ("no change within 8 days" if change is None else
               f"next: min {change['min_containers']} at {change['local_text']} "
               f"({change['utc_text']})")
        lines.append(f"  {fn['function']:<{width}}  min {fn['min_containers_now']} "
                     f"({fn['why']}); {nxt}")
    lines += ["", "Idle cost of warm containers, a typical week (a 30-day month):"]
    for fn in document["functions"]:
        cost = fn["weekly_cost"]
        lines.append(
            f"  {fn['function']:<{width}}  {cost['warm_container_hours']:.1f} container-h  "
            f"${cost['usd_per_week']:,.2f} (${cost['usd_per_30_days']:,.2f}); always-on "
            f"min {cost['peak_min_containers']}: ${cost['always_on_usd_per_week']:,.2f} "
            f"(${cost['always_on_usd_per_30_days']:,.2f})")
    return "\n".join(lines)
