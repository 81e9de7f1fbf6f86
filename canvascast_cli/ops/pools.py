"""The warm pools, as ``canvascast warm status`` and ``canvascast status`` show them.

Per function, four readings of Modal's autoscaler and what they cost:

    configured  modal.toml's [functions.<name>] (what a deploy sets)
    window      what [[warm.windows]] say min_containers should be now (the reconciler
                on Modal sets it; ``ops.windows``)
    override    an operator's ``canvascast warm set``: published in the app's progress
                Dict for every machine (when Modal can be asked), and recorded in the
                state file of the machine that set it
    target      what should be in force: configured, raised by a window, replaced
                field by field by an override
    live        what Modal runs (``fn.autoscaler.settings()``), with its live runners and
                backlog (``fn.get_current_stats()``) — when Modal can be asked

A warm container is billed whether it works or not: the idle cost of a pool is its
``min_containers`` x the function's price per second (``[pricing]``: GPU + CPU + memory
as reserved).

It never hangs: the fleet's calls are bounded, and at the first one that finds Modal
unreachable (or refuses the token) it stops asking and says so.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import TYPE_CHECKING

from pydantic.dataclasses import dataclass

from canvascast_cli.config import FunctionName, Settings, function_cost_per_second
from canvascast_cli.errors import CanvasCastError, NotFound
from canvascast_cli.ops.fleet import Autoscaler, Fleet
from canvascast_cli.protocol import FUNCTIONS
from canvascast_cli.records import Usd

if TYPE_CHECKING:
    from canvascast_cli.ops.overrides import Override

HOUR, DAY = 3600.0, 86400.0


@dataclass(frozen=True, kw_only=True)
class PoolRow:
    function: str
    configured: Autoscaler
    override: Autoscaler | None
    window_min: int | None  # None: no window names this function
    target: Autoscaler
    live: Autoscaler | None  # None: Modal not asked, or unreachable
    runners: int | None
    backlog: int | None
    idle_usd_per_hour: Usd  # the target's min_containers, idle
    idle_usd_per_day: Usd
    below_target: bool | None  # fewer live runners than the target's min_containers


@dataclass(frozen=True, kw_only=True)
class PoolsReport:
    reachable: bool | None  # None: Modal was not asked (no token configured)
    error: str | None
    rows: list[PoolRow]
    idle_usd_per_hour: Usd
    idle_usd_per_day: Usd


def configured(settings: Settings, function: str) -> Autoscaler:
    """modal.toml's autoscaler settings of ``function`` (what a deploy sets)."""
    fn = getattr(settings.functions, function)
    return Autoscaler(min_containers=fn.min_containers, max_containers=fn.max_containers,
                      buffer_containers=fn.buffer_containers or 0,
                      scaledown_window=fn.scaledown_window)


def window_min(settings: Settings, function: str, now: float) -> int | None:
    """What the warm windows say ``function``'s min_containers should be at ``now``
    (unix time); None when no window names it."""
    if not any(w.function == function for w in settings.warm.windows):
        return None
    from canvascast_cli.ops.windows import target_min

    return target_min(settings, function, dt.datetime.fromtimestamp(now, dt.UTC))


def target(settings: Settings, function: str, override: Autoscaler | None,
           now: float) -> Autoscaler:
    """What should be in force for ``function`` at ``now``: configured, with a window's
    min_containers, then an operator's override field by field (an override wins until
    ``canvascast warm reset`` clears it)."""
    base = configured(settings, function)
    window = window_min(settings, function, now)
    if window is not None:
        base = Autoscaler(min_containers=window).over(base)
    return override.over(base) if override is not None else base


def idle_rate(settings: Settings, function: str) -> float:
    """USD per second one idle warm container of ``function`` costs."""
    name: FunctionName = function  # type: ignore[assignment]  # checked by the caller
    return function_cost_per_second(settings, name)


def pools_report(settings: Settings, overrides: Mapping[str, Override], fleet: Fleet | None,
                 now: float) -> PoolsReport:
    """Every function's pool: configured, window, override, target, live (``fleet``
    None: not asked), and its idle cost."""
    rows: list[PoolRow] = []
    reachable: bool | None = None if fleet is None else True
    error: str | None = None
    # This machine's overrides, then those published for every machine (which win: the
    # reconciler and a deploy from CI act on them).
    in_force = {function: o.settings for function, o in overrides.items()}
    if fleet is not None:
        try:
            in_force.update(fleet.published_overrides())
        except CanvasCastError as exc:  # unreachable, or the token refused: stop asking
            reachable, error = False, exc.message
    for function in FUNCTIONS:
        override = in_force.get(function)
        goal = target(settings, function, override, now)
        live = runners = backlog = None
        if fleet is not None and reachable:
            try:
                live = fleet.settings(function)
                stats = fleet.stats(function)
                runners, backlog = stats.runners, stats.backlog
            except NotFound as exc:  # this function alone (not deployed yet): go on
                error = error or exc.message
            except CanvasCastError as exc:  # unreachable, or the token refused: stop asking
                reachable, error = False, exc.message
        per_hour = (goal.min_containers or 0) * idle_rate(settings, function) * HOUR
        rows.append(PoolRow(
            function=function, configured=configured(settings, function), override=override,
            window_min=window_min(settings, function, now), target=goal, live=live,
            runners=runners, backlog=backlog, idle_usd_per_hour=per_hour,
            idle_usd_per_day=per_hour * 24,
            below_target=None if runners is None else runners < (goal.min_containers or 0)))
    total = sum(row.idle_usd_per_hour for row in rows)
    return PoolsReport(reachable=reachable, error=error, rows=rows, idle_usd_per_hour=total,
                       idle_usd_per_day=total * 24)
