"""Business-hours warm pools: what ``[warm]``'s windows say, when, and what it costs.

A window (``[[warm.windows]]``) keeps ``min_containers`` of one function warm on some
days between ``start`` (inclusive) and ``end`` (exclusive; ``"24:00"`` is the end of the
day), read on the wall clock of ``[warm] timezone``: the local weekday, the local time,
whatever UTC says (an IANA zone, so daylight saving moves the windows with the clock).
Where windows overlap the largest ``min_containers`` wins, and nothing goes below the
function's own ``min_containers`` (``[functions.<name>]``).

The reconciler (one scheduled Modal function, ``reconcile_warm_pools`` in
``modal_functions/app.py``) runs ``reconcile`` on the schedule ``cron_expression`` gives:
at every window edge's minute of every hour and every ``check_every`` minutes between, so
a missed run, or a redeploy (which resets every autoscaler override), heals at the next
one. An operator's override (kept in the progress Dict under ``OVERRIDES_KEY``) wins over
the windows until the operator clears it.

Pure: the standard library's ``zoneinfo``/``datetime`` and the config; Modal is reached
only through the ``Fleet`` handed to ``reconcile``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from itertools import pairwise
from typing import Any, cast
from zoneinfo import ZoneInfo

from canvascast_cli.config import (
    FunctionName,
    Settings,
    WarmWindow,
    function_cost_per_second,
)
from canvascast_cli.ops.fleet import (  # OVERRIDES_KEY: where warm set publishes them
    OVERRIDES_KEY,
    Autoscaler,
    Fleet,
    parse_overrides,
)

__all__ = ["OVERRIDES_KEY", "parse_overrides"]  # the reconciler reads the overrides so

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
DAY_MINUTES = 24 * 60
WEEK_SECONDS = 7 * 24 * 3600
MONTH_WEEKS = 30 / 7  # a 30-day month, in weeks
SEARCH_DAYS = 8  # how far ahead next_change looks
OUTSIDE = "outside windows"
OVERRIDE = "override"


# ---------------------------------------------------------------------------------------
# Windows


def minutes(hhmm: str) -> int:
    """``"09:30"`` -> 570; ``"24:00"`` -> 1440."""
    hours, mins = hhmm.split(":")
    return int(hours) * 60 + int(mins)


def days_text(days: Iterable[str]) -> str:
    """``mon..fri`` -> ``"mon-fri"``; runs of three or more days as ranges."""
    ordered = sorted(set(days), key=DAYS.index)
    runs: list[list[str]] = []
    for day in ordered:
        if runs and DAYS.index(day) == DAYS.index(runs[-1][-1]) + 1:
            runs[-1].append(day)
        else:
            runs.append([day])
    return ",".join(f"{run[0]}-{run[-1]}" if len(run) >= 3 else ",".join(run)
                    for run in runs)


def describe(window: WarmWindow) -> str:
    """``"window mon-fri 09:00-21:00"``."""
    return f"window {days_text(window.days)} {window.start}-{window.end}"


def windows_of(settings: Settings, function: str) -> list[WarmWindow]:
    return [w for w in settings.warm.windows if w.function == function]


def functions_with_windows(settings: Settings) -> list[str]:
    """The functions some window names, in the order they are first named."""
    return list(dict.fromkeys(w.function for w in settings.warm.windows))


def configured_min(settings: Settings, function: str) -> int:
    return int(getattr(settings.functions, function).min_containers)


def zone(settings: Settings) -> ZoneInfo:
    return ZoneInfo(settings.warm.timezone)


def _local(settings: Settings, at: datetime) -> datetime:
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"{at!r}: a time zone-aware instant is needed")
    return at.astimezone(zone(settings))


@dataclass(frozen=True)
class Target:
    """What the windows say for one function at one instant, and why."""

    function: str
    min_containers: int
    why: str  # "window mon-fri 09:00-21:00", "outside windows", "configured min_containers"
    window: WarmWindow | None = None


def target(settings: Settings, function: str, at: datetime) -> Target:
    """The min_containers ``function`` should have at instant ``at`` (aware), and why."""
    local = _local(settings, at)
    day = DAYS[local.weekday()]
    minute = local.hour * 60 + local.minute
    configured = configured_min(settings, function)
    active = [w for w in windows_of(settings, function)
              if day in w.days and minutes(w.start) <= minute < minutes(w.end)]
    if not active:
        return Target(function, configured, OUTSIDE)
    best = max(active, key=lambda w: w.min_containers)  # the first of the largest
    if best.min_containers >= configured:
        return Target(function, best.min_containers, describe(best), best)
    return Target(function, configured, "configured min_containers", best)


def target_min(settings: Settings, function: str, at: datetime) -> int:
    """``target(...).min_containers``: max(configured, every window open at ``at``)."""
    return target(settings, function, at).min_containers


def desired(settings: Settings, at: datetime) -> dict[str, int]:
    """min_containers at ``at`` of every function that has windows."""
    return {fn: target_min(settings, fn, at) for fn in functions_with_windows(settings)}


def next_change(settings: Settings, function: str,
                after: datetime) -> tuple[datetime, int] | None:
    """The first instant after ``after`` at which ``function``'s target changes (UTC,
    minute resolution), and the new target; None when it does not change within
    ``SEARCH_DAYS`` days (no windows, or windows that never change it).

    The target is a function of the local weekday and wall-clock minute, so it can only
    change where the wall clock reaches a window edge or jumps (a daylight saving
    switch): those instants are the only ones checked.
    """
    windows = windows_of(settings, function)
    if not windows:
        return None
    current = target_min(settings, function, after)
    edges = {minutes(w.start) for w in windows} | {minutes(w.end) for w in windows}
    for when in _candidates(zone(settings), edges, after):
        value = target_min(settings, function, when)
        if value != current:
            return when, value
    return None


def _candidates(tz: ZoneInfo, edges: set[int], after: datetime) -> list[datetime]:
    """Every instant in (after, after + SEARCH_DAYS] where the local wall clock shows an
    edge minute (both readings of a repeated hour) or jumps (a DST switch). A wall time
    that a spring-forward skips is covered by the switch itself."""
    start = after.astimezone(UTC)
    limit = start + timedelta(days=SEARCH_DAYS)
    first_day = after.astimezone(tz).date() - timedelta(days=1)
    found: set[datetime] = set()
    for offset in range(SEARCH_DAYS + 2):
        day = first_day + timedelta(days=offset)
        midnight = datetime.combine(day, time())
        for edge in edges:
            wall = midnight + timedelta(minutes=edge)
            for fold in (0, 1):
                found.add(wall.replace(tzinfo=tz, fold=fold).astimezone(UTC))
        found.update(_switches(tz, midnight.replace(tzinfo=tz).astimezone(UTC),
                               (midnight + timedelta(days=1)).replace(tzinfo=tz)
                               .astimezone(UTC)))
    return sorted(t for t in found if start < t <= limit)


def _switches(tz: ZoneInfo, low: datetime, high: datetime) -> Iterator[datetime]:
    """The UTC offset change in [low, high) (UTC instants about a day apart), found to the
    minute by bisection; at most one a day in every zone's rules."""
    def offset(t: datetime) -> timedelta | None:
        return t.astimezone(tz).utcoffset()

    before = offset(low)
    if offset(high) == before:
        return
    while high - low > timedelta(minutes=1):
        middle = low + timedelta(minutes=(high - low) // timedelta(minutes=1) // 2)
        if offset(middle) == before:
            low = middle
        else:
            high = middle
    yield high


def cron_expression(settings: Settings) -> str | None:
    """The reconciler's schedule, read in ``[warm] timezone``: every ``check_every``
    minutes and at every window edge's minute, every hour (``"0,7,15,30,45 * * * *"``);
    None without windows."""
    if not settings.warm.windows:
        return None
    marks = set(range(0, 60, settings.warm.check_every))
    for window in settings.warm.windows:
        marks |= {minutes(window.start) % 60, minutes(window.end) % 60}
    return ",".join(str(m) for m in sorted(marks)) + " * * * *"


# ---------------------------------------------------------------------------------------
# Cost


def weekly_idle(settings: Settings, function: str) -> int:
    """Container-seconds of warm (min_containers) containers in a typical week: each
    day's 24 wall-clock hours at the target the windows give. A fixed-offset week: a week
    with a daylight saving switch is an hour shorter or longer, which is not counted."""
    windows = windows_of(settings, function)
    configured = configured_min(settings, function)
    total = 0
    for day in DAYS:
        today = [w for w in windows if day in w.days]
        cuts = sorted({0, DAY_MINUTES} | {minutes(w.start) for w in today}
                      | {minutes(w.end) for w in today})
        for low, high in pairwise(cuts):
            level = max([configured] + [w.min_containers for w in today
                                        if minutes(w.start) <= low < minutes(w.end)])
            total += level * (high - low) * 60
    return total


@dataclass(frozen=True)
class WeeklyCost:
    """A function's warm containers over a typical week, in container-seconds and USD
    (idle cost: what warm containers cost while no job runs on them)."""

    function: str
    rate: float  # USD per container-second (function_cost_per_second)
    warm_seconds: int  # with the windows
    configured_seconds: int  # the configured min_containers alone (no windows)
    peak: int  # the largest min_containers the windows set
    always_on_seconds: int  # the peak kept warm 24/7 (what the windows save against)

    @property
    def usd(self) -> float:
        return self.warm_seconds * self.rate

    @property
    def configured_usd(self) -> float:
        return self.configured_seconds * self.rate

    @property
    def always_on_usd(self) -> float:
        return self.always_on_seconds * self.rate

    def to_dict(self) -> dict[str, Any]:
        return {
            "function": self.function, "usd_per_container_second": self.rate,
            "warm_container_hours": self.warm_seconds / 3600,
            "usd_per_week": self.usd, "usd_per_30_days": self.usd * MONTH_WEEKS,
            "configured_min_usd_per_week": self.configured_usd,
            "peak_min_containers": self.peak,
            "always_on_container_hours": self.always_on_seconds / 3600,
            "always_on_usd_per_week": self.always_on_usd,
            "always_on_usd_per_30_days": self.always_on_usd * MONTH_WEEKS,
        }


def weekly_cost(settings: Settings, function: str) -> WeeklyCost:
    configured = configured_min(settings, function)
    peak = max([configured] + [w.min_containers for w in windows_of(settings, function)])
    return WeeklyCost(
        function=function,
        rate=function_cost_per_second(settings, cast(FunctionName, function)),
        warm_seconds=weekly_idle(settings, function),
        configured_seconds=configured * WEEK_SECONDS,
        peak=peak,
        always_on_seconds=peak * WEEK_SECONDS,
    )


# ---------------------------------------------------------------------------------------
# The reconciler


@dataclass(frozen=True)
class Applied:
    """What the reconciler set on one function, and why."""

    function: str
    min_containers: int | None
    why: str  # "window mon-fri 09:00-21:00", "outside windows", "override", ...
    settings: Autoscaler = field(default_factory=Autoscaler)

    def line(self) -> str:
        extra = {k: v for k, v in self.settings.given().items() if k != "min_containers"}
        more = "".join(f" {k}={v}" for k, v in extra.items())
        return f"{self.function}: min_containers={self.min_containers}{more} ({self.why})"


class ReconcileError(RuntimeError):
    """Some functions could not be updated; ``applied`` holds those that were."""

    def __init__(self, applied: list[Applied], errors: list[str]) -> None:
        noun = "function" if len(errors) == 1 else "functions"
        super().__init__(f"warm pools: {len(errors)} {noun} not updated: "
                         + "; ".join(errors))
        self.applied = applied
        self.errors = errors


def reconcile(settings: Settings, fleet: Fleet, at: datetime,
              overrides: Mapping[str, Autoscaler] | None = None) -> list[Applied]:
    """Set every windowed function's min_containers to its target at ``at``; an
    operator's override of a function is applied instead (its settings over the
    target: the operator's explicit choice wins until it is cleared). A failure on one
    function does not stop the others: ``ReconcileError`` at the end names them all."""
    overrides = overrides or {}
    applied: list[Applied] = []
    errors: list[str] = []
    for function in functions_with_windows(settings):
        goal = target(settings, function, at)
        wanted = Autoscaler(min_containers=goal.min_containers)
        why = goal.why
        override = overrides.get(function)
        if override is not None and override.given():
            wanted = override.over(wanted)
            if override.min_containers is not None:
                why = OVERRIDE
            else:
                why = f"{why}; {OVERRIDE} of " + ", ".join(override.given())
        try:
            fleet.update(function, wanted)
        except Exception as exc:  # one function's failure must not stop the rest
            errors.append(f"{function}: {type(exc).__name__}: {exc}")
            continue
        applied.append(Applied(function, wanted.min_containers, why, wanted))
    if errors:
        raise ReconcileError(applied, errors)
    return applied
