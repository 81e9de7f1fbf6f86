"""The status report: breakers, warm pools, the ledger's metrics, spend and the operators'
log — one record, shown four ways by ``canvascast status``:

    human       Rich tables on stdout
    --json      ``dump(report)``: one document
    --check     one line in the monitoring plugin convention (Nagios, Icinga, Sensu):
                ``CANVASCAST OK|WARNING|CRITICAL|UNKNOWN - summary | perfdata``
    Prometheus  the text exposition (``prometheus_client``), on stdout or written
                atomically for node-exporter's textfile collector

Health is judged here, once, from what the report holds (``findings``):

    critical   a breaker open; a function's error rate on a backend over
               ``[status] error_rate`` with at least ``min_invocations`` attempts
    warning    a breaker half-open (a trial running); a warm pool below its target;
               spend over ``[budget]`` (last 24 h against daily_usd, last 30 d against
               monthly_usd)
    unknown    Modal was asked and did not answer (unreachable, or the token refused)

The worst *known* state wins: critical over warning over unknown over ok, so an open
breaker is critical even when Modal cannot be asked.

Costs: each attempt's actual cost where the provider reported one, else its estimate;
the two are kept apart (``actual_cost``, ``estimated_cost``) and add up to
``total_cost``. Every backend counts (modal, http, local), so a development loop through
the local job API shows up like production.

Nothing here imports ``modal``; ``prometheus_client`` is imported where it is used.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, Literal

from pydantic.dataclasses import dataclass

from canvascast_cli.dispatch.breaker import CircuitBreaker, CircuitState, SQLiteStorage
from canvascast_cli.dispatch.ledger import Attempt, FunctionMetrics, Ledger
from canvascast_cli.errors import CanvasCastError, InvalidInput
from canvascast_cli.ops.overrides import Event, Events
from canvascast_cli.ops.pools import PoolsReport
from canvascast_cli.records import Seconds, Usd

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry
    from prometheus_client.metrics_core import Metric

    from canvascast_cli.config import Settings
    from canvascast_cli.dispatch.state import StateDB

Health = Literal["ok", "warning", "critical", "unknown"]
HEALTHS: tuple[Health, ...] = ("ok", "unknown", "warning", "critical")  # worse to the right
CHECK_EXIT: dict[Health, int] = {"ok": 0, "warning": 1, "critical": 2, "unknown": 3}
BREAKER_VALUE = {CircuitState.CLOSED: 0, CircuitState.HALF_OPEN: 1, CircuitState.OPEN: 2}

DEFAULT_WINDOW = 86400.0  # the report's window without --since: the last 24 h
DAY, MONTH = 86400.0, 30 * 86400.0
FAILURES_SHOWN = 5
EVENTS_SHOWN = 20

_AGE = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
_UNIT_SECONDS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
SINCE_FORM = "a number and a unit: 90s, 30m, 24h or 7d"


def parse_since(text: str) -> float:
    """``--since``'s age (``90s``, ``30m``, ``24h``, ``7d``, ``1.5h``) in seconds;
    ``InvalidInput`` (exit 2) naming ``--since`` and the form otherwise."""
    match = _AGE.fullmatch(text.strip().lower())
    seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)] if match else 0.0
    if not match or not math.isfinite(seconds) or seconds <= 0:
        raise InvalidInput(f"--since: {text!r} is not an age; give {SINCE_FORM}")
    return seconds


def window_label(seconds: float | None) -> str:
    """``86400`` -> ``24h``; None -> ``all`` (the ledger's retained history)."""
    if seconds is None:
        return "all"
    if seconds >= 2 * 86400 and seconds % 86400 == 0:
        return f"{seconds / 86400:g}d"
    for unit, size in (("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


@dataclass(frozen=True, kw_only=True)
class BreakerRow:
    """One circuit (``key`` is ``<backend>:<function>``); ``retry_at``: when an open
    circuit lets its next trial through, or a running trial's lease ends."""

    key: str
    backend: str
    function: str
    state: CircuitState
    failures: int
    opened_at: Seconds | None
    retry_at: Seconds | None
    last_error: str | None


@dataclass(frozen=True, kw_only=True)
class Spend:
    """Spend over one fixed window (``24h`` or ``30d``) against its budget, if set."""

    window: Literal["24h", "30d"]
    spent: Usd
    budget: Usd | None
    over: bool


@dataclass(frozen=True, kw_only=True)
class Finding:
    """One reason the health is not ok."""

    level: Health
    message: str


@dataclass(frozen=True, kw_only=True)
class Report:
    """Everything ``canvascast status`` shows. ``since`` (unix time) starts the window of
    ``metrics``, ``backends``, ``failures`` and ``events``; None: the ledger's whole
    retained history. ``metrics`` is per function and backend, ``functions`` per function
    over every backend (``backend`` ``"*"``), ``backends`` per backend over every function
    (``function`` ``"*"``). ``findings`` come worst first. ``pools`` is None when it
    could not be built."""

    generated_at: Seconds
    window: str
    since: Seconds | None
    health: Health
    findings: list[Finding]
    breakers: list[BreakerRow]
    pools: PoolsReport | None
    metrics: list[FunctionMetrics]
    functions: list[FunctionMetrics]
    backends: list[FunctionMetrics]
    failures: list[Attempt]
    spend: list[Spend]
    events: list[Event]

    @property
    def open_breakers(self) -> list[BreakerRow]:
        return [row for row in self.breakers if row.state is CircuitState.OPEN]

    @property
    def exit_code(self) -> int:
        """Without ``--check``: 1 when a breaker is open, else 0 (an unreachable Modal
        is shown, not an exit code)."""
        return 1 if self.open_breakers else 0


def build_report(settings: Settings, db: StateDB | None, pools: PoolsReport | None, *,
                 now: float, window: float | None, rollups: bool = True) -> Report:
    """The report at ``now`` over the last ``window`` seconds (None: every retained
    row). ``db`` None: no state file yet (an empty report). Spend is always over the last
    24 h and 30 d, whatever the window. ``rollups`` False leaves ``functions`` and
    ``backends`` empty (the Prometheus exposition does not use them, and over a long
    history each is another pass over the rows)."""
    since = None if window is None else now - window
    breakers: list[BreakerRow] = []
    metrics: list[FunctionMetrics] = []
    functions: list[FunctionMetrics] = []
    backends: list[FunctionMetrics] = []
    failures: list[Attempt] = []
    events: list[Event] = []
    spent_day = spent_month = 0.0
    if db is not None:
        ledger = Ledger(db)
        metrics = ledger.metrics(since)
        if rollups:
            functions = ledger.metrics(since, by=("function",))
            backends = ledger.metrics(since, by=("backend",))
        failures = ledger.failures(since, limit=FAILURES_SHOWN)
        spent_day, spent_month = ledger.spend(now - DAY), ledger.spend(now - MONTH)
        events = Events(db).since(since, limit=EVENTS_SHOWN)
        breakers = _breakers(settings, db, metrics)
    spend = [
        Spend(window="24h", spent=spent_day, budget=settings.budget.daily_usd,
              over=settings.budget.daily_usd is not None
              and spent_day > settings.budget.daily_usd),
        Spend(window="30d", spent=spent_month, budget=settings.budget.monthly_usd,
              over=settings.budget.monthly_usd is not None
              and spent_month > settings.budget.monthly_usd),
    ]
    findings = sorted(_findings(settings, breakers, pools, metrics, spend),
                      key=lambda f: -HEALTHS.index(f.level))
    health: Health = max((f.level for f in findings), key=HEALTHS.index, default="ok")
    return Report(generated_at=now, window=window_label(window), since=since, health=health,
                  findings=findings, breakers=breakers, pools=pools, metrics=metrics,
                  functions=functions, backends=backends, failures=failures, spend=spend,
                  events=events)


def _breakers(settings: Settings, db: StateDB, metrics: list[FunctionMetrics]
              ) -> list[BreakerRow]:
    """Every stored circuit, and a closed one for each remote backend and function the
    window's ledger names (a circuit never tripped, or reset, is not stored)."""
    storage = SQLiteStorage(db)
    keys = set(storage.all())
    keys.update(f"{m.backend}:{m.function}" for m in metrics if m.backend != "local")
    rows = []
    for key in sorted(keys):
        snap = CircuitBreaker(storage, key,
                              failure_threshold=settings.breaker.failure_threshold,
                              reset_timeout=settings.breaker.reset_timeout).snapshot()
        backend, _, function = key.partition(":")
        rows.append(BreakerRow(key=key, backend=backend, function=function or "?",
                               state=snap.state, failures=snap.failures,
                               opened_at=snap.opened_at, retry_at=snap.retry_at,
                               last_error=snap.last_error))
    return rows


def _findings(settings: Settings, breakers: list[BreakerRow], pools: PoolsReport | None,
              metrics: list[FunctionMetrics], spend: list[Spend]) -> Iterator[Finding]:
    for row in breakers:
        if row.state is CircuitState.OPEN:
            yield Finding(level="critical", message=f"breaker {row.key} open after "
                          f"{row.failures} failures (last {row.last_error or 'unknown'})")
        elif row.state is CircuitState.HALF_OPEN:
            yield Finding(level="warning", message=f"breaker {row.key} half-open (a trial "
                          "call is running)")
    limit, least = settings.status.error_rate, settings.status.min_invocations
    for m in metrics:
        if m.invocations >= least and m.failures / m.invocations > limit:
            yield Finding(level="critical", message=f"{m.function} on {m.backend}: "
                          f"{m.failures} of {m.invocations} attempts failed "
                          f"({m.failures / m.invocations:.0%} > {limit:.0%})")
    for s in spend:
        if s.over:
            yield Finding(level="warning", message=f"spend ${s.spent:.2f} over the "
                          f"{s.window} budget ${s.budget:.2f}")
    if pools is not None:
        for pool in pools.rows:
            if pool.below_target:
                yield Finding(level="warning", message=f"warm pool {pool.function}: "
                              f"{pool.runners} runners, target min "
                              f"{pool.target.min_containers}")
        if pools.reachable is False:
            yield Finding(level="unknown", message=f"Modal unreachable: {pools.error}")


# ---------------------------------------------------------------------------------------
# --check: the monitoring plugin convention


def check_line(report: Report) -> tuple[str, int]:
    """``CANVASCAST <STATE> - <summary> | <perfdata>`` and the plugin's exit code (0 OK,
    1 WARNING, 2 CRITICAL, 3 UNKNOWN)."""
    ordered = report.findings
    invocations = sum(m.invocations for m in report.metrics)
    failed = sum(m.failures for m in report.metrics)
    if ordered:
        summary = "; ".join(f.message for f in ordered)
    else:
        summary = (f"{invocations} invocations, {failed} failed in {report.window}; "
                   f"breakers closed; ${report.spend[0].spent:.2f} spent in 24h")
    return (f"CANVASCAST {report.health.upper()} - {_one_line(summary)} | "
            f"{' '.join(perfdata(report))}", CHECK_EXIT[report.health])


def unknown_line(error: CanvasCastError) -> tuple[str, int]:
    """The line for a check that could not judge at all (a broken modal.toml or state
    file, a bad flag): UNKNOWN, exit 3; the error's details joined in."""
    text = "; ".join([error.message, *error.details])
    return f"CANVASCAST UNKNOWN - {_one_line(text)}", CHECK_EXIT["unknown"]


def perfdata(report: Report) -> list[str]:
    """``'label'=value[UOM];warn;crit;min;max`` items: totals, then per function."""
    items = [
        _perf("invocations", sum(m.invocations for m in report.metrics), "c"),
        _perf("errors", sum(m.failures for m in report.metrics), "c"),
        _perf("fallbacks", sum(m.fallbacks for m in report.metrics), "c"),
        _perf("breakers_open", len(report.open_breakers), crit="0"),
        _perf("cost_usd", sum(m.total_cost for m in report.metrics)),
    ]
    for s in report.spend:
        items.append(_perf(f"spend_{s.window}_usd", s.spent,
                           warn="" if s.budget is None else _number(s.budget)))
    for m in report.functions:
        items.append(_perf(f"{m.function}_invocations", m.invocations, "c"))
        items.append(_perf(f"{m.function}_errors", m.failures, "c"))
        if m.p95_duration is not None:
            items.append(_perf(f"{m.function}_p95", m.p95_duration, "s"))
    if report.pools is not None and report.pools.reachable is not None:
        items.append(_perf("modal_reachable", int(report.pools.reachable), maximum="1"))
    return items


def _perf(label: str, value: float, uom: str = "", *, warn: str = "", crit: str = "",
          maximum: str = "") -> str:
    return f"'{label}'={_number(value)}{uom};{warn};{crit};0;{maximum}".rstrip(";")


def _number(value: float) -> str:
    """Plain decimal, never exponent notation (perfdata parsers do not read ``1e-05``)."""
    text = f"{value:.6f}".rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


def _one_line(text: str) -> str:
    # A "|" would start the perfdata; a newline would end the plugin's output.
    return " ".join(text.replace("|", "/").split())


# ---------------------------------------------------------------------------------------
# Prometheus


class _Collector:
    """The report as metric families (a custom collector: values are read, not counted)."""

    def __init__(self, report: Report) -> None:
        self.report = report

    def collect(self) -> Iterable[Metric]:
        return list(families(self.report))


def families(report: Report) -> Iterator[Metric]:
    """Every family the exposition holds. The ledger's counters are totals over the
    report's window: with ``--prometheus`` alone that is every row the ledger retains
    (monotonic while retention drops none, so ``increase()`` and ``rate()`` work)."""
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    over = ("every attempt the ledger retains" if report.since is None
            else f"attempts started in the last {report.window} (--since)")
    fb = ["function", "backend"]
    invocations = CounterMetricFamily("modal_invocations", f"Attempts at a function, over "
                                      f"{over}; every backend (modal, http, local).",
                                      labels=[*fb, "status"])
    duration = GaugeMetricFamily("modal_duration_seconds", "Duration of successful "
                                 f"attempts, quantile 0.5 and 0.95, over {over}.",
                                 labels=[*fb, "quantile"])
    cold = CounterMetricFamily("modal_cold_starts", f"Cold starts, over {over}.", labels=fb)
    errors = CounterMetricFamily("modal_errors", f"Attempts that ended with an error code, "
                                 f"over {over}.", labels=[*fb, "code"])
    fallbacks = CounterMetricFamily("modal_fallbacks", "Attempts that ran on this backend "
                                    f"because another could not, over {over}.", labels=fb)
    cost = CounterMetricFamily("modal_cost_usd", "USD: kind=actual as billed, kind=estimated "
                               f"where no actual cost is known; over {over}.",
                               labels=[*fb, "kind"])
    for m in report.metrics:
        labels = [m.function, m.backend]
        for status, value in (("ok", m.successes), ("failed", m.failures),
                              ("cancelled", m.cancelled)):
            invocations.add_metric([*labels, status], value)
        for q, seconds in (("0.5", m.p50_duration), ("0.95", m.p95_duration)):
            if seconds is not None:
                duration.add_metric([*labels, q], seconds)
        cold.add_metric(labels, m.cold_starts)
        for code, count in m.error_codes.items():
            errors.add_metric([*labels, code], count)
        fallbacks.add_metric(labels, m.fallbacks)
        cost.add_metric([*labels, "actual"], m.actual_cost)
        cost.add_metric([*labels, "estimated"], m.estimated_cost)
    yield from (invocations, duration, cold, errors, fallbacks, cost)

    state = GaugeMetricFamily("canvascast_breaker_state", "Circuit breaker: 0 closed, "
                              "1 half-open, 2 open.", labels=["backend", "function"])
    failures = GaugeMetricFamily("canvascast_breaker_failures", "Consecutive retryable "
                                 "failures the breaker counts.", labels=["backend", "function"])
    for row in report.breakers:
        state.add_metric([row.backend, row.function], BREAKER_VALUE[row.state])
        failures.add_metric([row.backend, row.function], row.failures)
    yield from (state, failures)

    pools = report.pools
    if pools is not None:
        target = GaugeMetricFamily("canvascast_warm_min_containers", "Warm containers the "
                                   "pool should keep (modal.toml, windows, overrides).",
                                   labels=["function"])
        runners = GaugeMetricFamily("canvascast_warm_runners", "Live containers on Modal.",
                                    labels=["function"])
        backlog = GaugeMetricFamily("canvascast_warm_backlog", "Inputs waiting on Modal.",
                                    labels=["function"])
        for pool in pools.rows:
            target.add_metric([pool.function], pool.target.min_containers or 0)
            if pool.runners is not None:
                runners.add_metric([pool.function], pool.runners)
            if pool.backlog is not None:
                backlog.add_metric([pool.function], pool.backlog)
        yield from (target, runners, backlog)
        if pools.reachable is not None:
            yield GaugeMetricFamily("canvascast_modal_reachable", "1 when Modal answered, "
                                    "0 when it was asked and did not.",
                                    value=int(pools.reachable))

    spend = GaugeMetricFamily("canvascast_spend_usd", "USD spent over the last 24h or 30d "
                              "(actual cost, else the estimate).", labels=["window"])
    budget = GaugeMetricFamily("canvascast_budget_usd", "The [budget] for the window.",
                               labels=["window"])
    for s in report.spend:
        spend.add_metric([s.window], s.spent)
        if s.budget is not None:
            budget.add_metric([s.window], s.budget)
    yield spend
    if budget.samples:
        yield budget


def registry(report: Report) -> CollectorRegistry:
    """A registry holding only the report's metrics (none of the process's own)."""
    from prometheus_client import CollectorRegistry

    reg = CollectorRegistry(auto_describe=False)
    reg.register(_Collector(report))
    return reg


def exposition(report: Report) -> str:
    """The Prometheus text exposition of the report."""
    from prometheus_client import generate_latest

    return generate_latest(registry(report)).decode("utf-8")


def write_textfile(report: Report, path: Any) -> None:
    """Write the exposition to ``path`` (``.prom``) atomically: a temporary file beside
    it, renamed into place (``prometheus_client.write_to_textfile``); a reader sees the
    old file or the new one, never half of one. ``InvalidInput`` (exit 2) naming the
    path when it cannot be written, before anything is."""
    import os
    from pathlib import Path

    from prometheus_client import write_to_textfile

    target = Path(path)
    if target.suffix != ".prom":
        raise InvalidInput(f"--prometheus-file: {target} must end in .prom (node-exporter's "
                           "textfile collector reads only those)")
    folder = target.parent
    if not folder.is_dir():
        raise InvalidInput(f"--prometheus-file: {target}: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise InvalidInput(f"--prometheus-file: {target}: the folder {folder} is not writable")
    if target.is_dir():
        raise InvalidInput(f"--prometheus-file: {target} is a folder")
    try:
        write_to_textfile(str(target), registry(report))
    except OSError as exc:
        raise InvalidInput(f"--prometheus-file: {target}: {exc.strerror or exc}") from None
