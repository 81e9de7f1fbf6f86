"""Cost estimates against a seeded ledger: run and cold-start seconds kept apart, the kind
of start expected, first guesses, and how estimates are encoded."""

from __future__ import annotations

import json
import re
import statistics
from dataclasses import dataclass
from pathlib import Path

import pytest

from canvascast_cli.config import Settings
from canvascast_cli.dispatch import cost
from canvascast_cli.dispatch.cost import GUESSES, Estimate
from canvascast_cli.dispatch.ledger import Attempt, Ledger
from canvascast_cli.dispatch.state import StateDB
from canvascast_cli.protocol import FUNCTIONS
from canvascast_cli.records import dump

T0 = 1_700_000_000.0
SETTINGS = Settings()
TOLERANCE = 0.25  # an estimate from history is within 25 % of the actual


@dataclass(frozen=True)
class Run:
    """One seeded attempt: when (s after T0), units, the billed run, the cold start."""

    at: float
    units: float
    billed: float
    startup: float | None = None


# Realistic mixes on Modal with the default resources: a cold first run, warm runs while
# the container is up (within scaledown_window of the previous end), a long idle, another
# cold start. Billed seconds vary around one speed per unit, as real runs do.
HISTORY: dict[str, list[Run]] = {
    # Whisper on an A10G (scaledown 60 s): ~0.2 s per audio second, cold starts ~40 s.
    "transcribe_audio": [
        Run(0, 31.0, 6.4, startup=40.0),
        Run(50, 45.0, 9.1), Run(90, 20.0, 4.2), Run(130, 62.0, 12.0),
        Run(7200, 38.0, 7.9, startup=36.0),
        Run(7260, 55.0, 11.3), Run(7300, 28.0, 5.5),
    ],
    # 15-30 s social clips on 4 CPUs (scaledown 120 s): ~0.026 s per frame, starts ~9 s.
    "render_video": [
        Run(0, 450, 11.9, startup=9.0),
        Run(60, 900, 23.0), Run(120, 450, 11.5),
        Run(5000, 300, 8.1, startup=8.0), Run(5040, 600, 15.8),
        Run(9000, 450, 12.0, startup=10.0),
    ],
}
# The next job of each, as it really ran: warm right after the history, or cold after a
# long idle (units, billed run, cold start).
FOLLOW_UP: dict[str, tuple[float, float, float]] = {
    "transcribe_audio": (40.0, 8.3, 41.0),
    "render_video": (600, 15.5, 9.5),
}


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    return Ledger(StateDB(tmp_path / "state.sqlite3"))


def seed(ledger: Ledger, function: str, backend: str = "modal") -> float:
    """Record ``HISTORY[function]``; returns when the last run ended."""
    unit = FUNCTIONS[function].unit
    end = T0
    for run in HISTORY[function]:
        duration = (run.startup or 0.0) + run.billed + 2.0  # + queue and transfers
        ledger.record(Attempt(
            function=function, backend=backend, started=T0 + run.at, status="ok",
            duration=duration, cold_start=run.startup is not None, units=run.units,
            unit=unit, billed_seconds=run.billed, startup_seconds=run.startup))
        end = max(end, T0 + run.at + duration)
    return end


def off_by(estimated: float, actual: float) -> float:
    return estimated / actual - 1


# ---------------------------------------------------------------------------------------
# Estimates from history


@pytest.mark.parametrize("function", sorted(HISTORY))
def test_estimates_from_history_are_within_25_percent(ledger: Ledger, function: str) -> None:
    end = seed(ledger, function)
    units, billed, startup = FOLLOW_UP[function]
    scaledown = getattr(SETTINGS.functions, function).scaledown_window

    warm = cost.estimate(SETTINGS, function, units, ledger, "modal", now=end + scaledown / 2)
    warm_actual = cost.actual(SETTINGS, function, billed)
    assert (warm.start, warm.basis, warm.startup_seconds) == ("warm", "history", 0.0)
    assert abs(off_by(warm.usd, warm_actual)) <= TOLERANCE, (warm, warm_actual)

    cold = cost.estimate(SETTINGS, function, units, ledger, "modal", now=end + 3600)
    cold_actual = cost.actual(SETTINGS, function, billed, startup)
    assert (cold.start, cold.basis) == ("cold", "history")
    assert cold.seconds == pytest.approx(warm.seconds)
    assert cold.startup_seconds == statistics.median(  # transcription 38 s, render 9 s
        r.startup for r in HISTORY[function] if r.startup is not None)
    assert abs(off_by(cold.usd, cold_actual)) <= TOLERANCE, (cold, cold_actual)

    # The old formula averaged each cold start into the seconds per unit, as if every
    # run had one, and added no start of its own. On the same history it overshoots the
    # warm follow-up by far more than 25 % (transcription: +129 %, render: +34 %; the
    # issue measured +48-88 % and +39 %), and misses a cold start's cost (transcription:
    # -61 %).
    runs = HISTORY[function]
    old_per_unit = sum(r.billed + (r.startup or 0.0) for r in runs) / sum(r.units for r in runs)
    old = old_per_unit * units * cost.rate(SETTINGS, function)
    assert off_by(old, warm_actual) > TOLERANCE
    if function == "transcribe_audio":
        assert off_by(old, warm_actual) == pytest.approx(1.29, abs=0.01)
        assert off_by(old, cold_actual) == pytest.approx(-0.61, abs=0.01)
        # and the new one, for the record: -2.6 % warm, -6.5 % cold
        assert off_by(warm.usd, warm_actual) == pytest.approx(-0.025, abs=0.005)
        assert off_by(cold.usd, cold_actual) == pytest.approx(-0.065, abs=0.005)


def test_start_expected_follows_the_scaledown_window(ledger: Ledger) -> None:
    end = seed(ledger, "transcribe_audio")
    window = SETTINGS.functions.transcribe_audio.scaledown_window  # 60 s

    def start(now: float, settings: Settings = SETTINGS, backend: str = "modal") -> str:
        return cost.estimate(settings, "transcribe_audio", 10, ledger, backend, now=now).start

    assert start(end + window - 1) == "warm"
    assert start(end + window) == "cold"
    # Another backend's containers are not this one's.
    assert start(end + 1, backend="http") == "cold"
    # A container kept warm all the time (min_containers) is always a warm start.
    kept = Settings.model_validate({"functions": {"transcribe_audio": {
        "gpu": "A10G", "min_containers": 1}}})
    assert start(end + 86400, settings=kept) == "warm"


def test_a_failed_run_leaves_no_container_to_be_warm(ledger: Ledger) -> None:
    ledger.record(Attempt(function="render_video", backend="modal", started=T0,
                          status="failed", duration=5.0, error_code="CONTAINER_CRASH"))
    est = cost.estimate(SETTINGS, "render_video", 300, ledger, "modal", now=T0 + 10)
    assert est.start == "cold"


def test_history_of_runs_without_a_cold_start_guesses_the_start(ledger: Ledger) -> None:
    # Only warm runs recorded (say, the cold one was recorded by an older canvascast):
    # the run is known, the start is a guess, and the estimate says so.
    ledger.record(Attempt(function="render_video", backend="modal", started=T0,
                          status="ok", duration=12.0, units=300, billed_seconds=9.0,
                          cold_start=False))
    est = cost.estimate(SETTINGS, "render_video", 300, ledger, "modal", now=T0 + 3600)
    assert (est.start, est.basis) == ("cold", "guess")
    assert est.seconds == pytest.approx(9.0)
    assert est.startup_seconds == GUESSES["render_video"].startup_seconds
    warm = cost.estimate(SETTINGS, "render_video", 300, ledger, "modal", now=T0 + 30)
    assert (warm.start, warm.basis) == ("warm", "history")


# ---------------------------------------------------------------------------------------
# First guesses


@pytest.mark.parametrize("with_ledger", [True, False])
def test_first_guess_is_cold_and_says_so(ledger: Ledger, with_ledger: bool) -> None:
    est = cost.estimate(SETTINGS, "generate_images", 5, ledger if with_ledger else None,
                        "modal", now=T0)
    guess = GUESSES["generate_images"]
    assert (est.start, est.basis) == ("cold", "guess")
    assert est.seconds == pytest.approx(5 * guess.seconds_per_unit)
    assert est.startup_seconds == guess.startup_seconds
    assert est.usd == pytest.approx(
        (est.seconds + est.startup_seconds) * cost.rate(SETTINGS, "generate_images"))


def test_first_guess_for_a_transcription_includes_the_cold_start() -> None:
    # The case: a 31 s transcription's first run, a cold start on an A10G. The
    # old guess (1/20 s per audio second, no start) was 4.2x under the billed run alone;
    # against the whole first run (a 40 s start and a 6.4 s run, as seeded above) it was
    # 1.55 s for 46.4 s. The guess now counts the start.
    est = cost.estimate(SETTINGS, "transcribe_audio", 31, None, "modal", now=T0)
    first = HISTORY["transcribe_audio"][0]
    actual = cost.actual(SETTINGS, "transcribe_audio", first.billed, first.startup)
    assert est.startup_seconds >= 20
    assert abs(off_by(est.usd, actual)) <= TOLERANCE, (est, actual)


def test_guesses_cover_exactly_the_protocols_functions() -> None:
    assert set(GUESSES) == set(FUNCTIONS)
    for name, guess in GUESSES.items():
        assert guess.seconds_per_unit > 0 and guess.startup_seconds > 0, name
        # the GPU functions load models: their start is tens of seconds, not a few
        if FUNCTIONS[name].resource == "gpu":
            assert guess.startup_seconds >= 20, name


def test_unknown_function_is_refused(ledger: Ledger) -> None:
    with pytest.raises(ValueError, match="unknown function"):
        cost.estimate(SETTINGS, "render_audio", 1, ledger, "modal", now=T0)
    with pytest.raises(ValueError, match="unknown function"):
        cost.actual(SETTINGS, "render_audio", 1.0)


# ---------------------------------------------------------------------------------------
# Actual cost, encoding


def test_actual_counts_the_start_and_the_run() -> None:
    rate = cost.rate(SETTINGS, "transcribe_audio")
    assert rate > 0.000306  # the A10G, plus its CPU and memory
    assert cost.actual(SETTINGS, "transcribe_audio", 10.0) == pytest.approx(10 * rate)
    assert cost.actual(SETTINGS, "transcribe_audio", 10.0, 40.0) == pytest.approx(50 * rate)
    assert cost.actual(SETTINGS, "transcribe_audio", 10.0, None) == pytest.approx(10 * rate)
    assert cost.actual(SETTINGS, "transcribe_audio", -1.0, -1.0) == 0.0


def test_estimate_encodes_with_rounded_numbers(ledger: Ledger) -> None:
    noisy = Estimate(usd=0.00047511284500000007, seconds=1 / 3, startup_seconds=0.0,
                     start="warm", basis="history")
    assert dump(noisy) == {"usd": 0.000475113, "seconds": 0.333, "startup_seconds": 0.0,
                           "start": "warm", "basis": "history"}
    assert noisy.usd == 0.00047511284500000007  # exact in memory

    seed(ledger, "transcribe_audio")
    est = cost.estimate(SETTINGS, "transcribe_audio", 41.3, ledger, "modal", now=T0 + 9999)
    text = json.dumps(dump(est))
    decimals = [len(d) for d in re.findall(r"\d+\.(\d+)", text)]
    assert decimals and max(decimals) <= 9, text


def test_estimate_is_validated() -> None:
    with pytest.raises(ValueError):
        Estimate(usd=0.1, seconds=1.0, startup_seconds=0.0, start="lukewarm",  # type: ignore[arg-type]
                 basis="history")
