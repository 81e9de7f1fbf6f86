"""What a job costs on Modal: an estimate before, the actual after.

Modal bills a container for every second it runs: the start of a cold one (booting,
importing, loading models) as well as the job. The two are kept apart, because only the
first job of a container pays for its start:

    estimate = (run seconds + startup seconds) x the function's price per second
    run seconds     = seconds per unit x this job's units (frames, audio seconds, images)
    startup seconds = 0 for a warm start; for a cold one, a typical cold start

Each figure comes from the ledger's recent history of this function on this backend
(``Ledger.seconds_per_unit``, ``Ledger.startup_seconds``) or, where there is none yet,
from a stated first guess (``GUESSES``); ``basis`` says "guess" when any figure the
estimate used was one. A warm start is expected when a container is kept warm
(``min_containers``) or the last successful attempt ended less than the function's
``scaledown_window`` ago (``Ledger.last_ended``): the container it ran in is still up.
The price is that of the function's configured resources (``[functions.*]`` and
``[pricing]`` in modal.toml, ``config.function_cost_per_second``).

Actual: the billed seconds the job reports (the run), plus its startup seconds when it
was a cold start, at the same price. A container's idle ``scaledown_window`` after its
last job is billed too but belongs to no job, and is in neither figure.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from pydantic.dataclasses import dataclass

from canvascast_cli.config import FunctionName, Settings, function_cost_per_second
from canvascast_cli.dispatch.ledger import Ledger
from canvascast_cli.protocol import FUNCTIONS
from canvascast_cli.records import Seconds, Usd


@dataclass(frozen=True)
class Guess:
    """A function's first guess, used until the ledger has its history: run seconds per
    unit, and the seconds a cold start of its container takes before the run."""

    seconds_per_unit: float
    startup_seconds: float


# Keyed by the protocol's function names (a test checks the keys are exactly
# ``protocol.FUNCTIONS``), on the resources modal.toml gives each by default.
GUESSES: Mapping[str, Guess] = {
    # Per frame: docs/performance.md measured 37.9 fps at 1080p30 (x264 veryfast) on 2
    # cores, and 82.5 fps at 720p; Modal's 4 cores are no slower, so 1/38 s is the
    # 1080p worst case. Start: a CPU image (ffmpeg, OpenCV, fonts), no model: Modal's
    # container boot and the imports, about 5 s.
    "render_video": Guess(seconds_per_unit=1 / 38, startup_seconds=5.0),
    # Per audio second: 0.2 s. A 31 s clip on an A10G was billed ~6.5 s for the run
    # (4.2x the old guess of 1/20 s), i.e. ~5x real time: faster-whisper itself is far
    # faster on a GPU, but fetching the audio, VAD, word timestamps and the CPU-bound
    # refinement (~1 s per audio minute, docs/performance.md) are not. Start: a GPU
    # container boot with the CUDA image (~15-20 s), CUDA/cuDNN initialisation and the
    # Whisper model load (~5-10 s): 30 s, the "tens of seconds" the first run really
    # paid and the old guess left out.
    "transcribe_audio": Guess(seconds_per_unit=0.2, startup_seconds=30.0),
    # Per image: a 4-step FLUX.1-schnell 1024x1024 on an L40S, ~3 s (T5 encoding
    # included). Start: a GPU container boot plus ~31.5 GiB of bfloat16 weights read
    # from the Volume onto the GPU (docs/modal.md: "loading FLUX takes a while"),
    # about 90 s.
    "generate_images": Guess(seconds_per_unit=3.0, startup_seconds=90.0),
}


@dataclass(frozen=True, kw_only=True)
class Estimate:
    """What a job is expected to cost: ``seconds`` of run and ``startup_seconds`` of
    container start (0 when ``start`` is "warm"), ``usd`` for both. ``basis``: "history"
    when every figure came from the ledger, "guess" when any came from ``GUESSES``."""

    usd: Usd
    seconds: Seconds
    startup_seconds: Seconds
    start: Literal["warm", "cold"]
    basis: Literal["history", "guess"]


def rate(settings: Settings, function: str) -> float:
    """USD per second of ``function`` on its configured resources."""
    return function_cost_per_second(settings, _name(function))


def estimate(settings: Settings, function: str, units: float, ledger: Ledger | None,
             backend: str, *, now: float, containers: int = 1) -> Estimate:
    """The expected cost of running ``function`` over ``units`` on ``backend`` at ``now``
    (unix time), from ``ledger``'s history there (None: guesses only). ``containers``:
    a split run's pieces, run at once, each in its own container; those beyond the
    ones kept warm (``min_containers``, or the one the last run left up) start cold."""
    name = _name(function)
    guess = GUESSES[name]
    per_unit = ledger.seconds_per_unit(name, backend) if ledger is not None else None
    guessed = per_unit is None
    seconds = (guess.seconds_per_unit if per_unit is None else per_unit) * max(0.0, units)

    fn = getattr(settings.functions, name)
    last = ledger.last_ended(name, backend) if ledger is not None else None
    recent = last is not None and now - last < fn.scaledown_window
    cold = max(0, containers - max(fn.min_containers, 1 if recent else 0))
    warm = cold == 0
    startup = 0.0
    if not warm:
        typical = ledger.startup_seconds(name, backend) if ledger is not None else None
        guessed = guessed or typical is None
        startup = (guess.startup_seconds if typical is None else typical) * cold
    return Estimate(usd=(seconds + startup) * rate(settings, name), seconds=seconds,
                    startup_seconds=startup, start="warm" if warm else "cold",
                    basis="guess" if guessed else "history")


def actual(settings: Settings, function: str, billed_seconds: float,
           startup_seconds: float | None = None) -> float:
    """What a job cost: its billed run plus its container's start (a cold start), in USD."""
    seconds = max(0.0, billed_seconds) + max(0.0, startup_seconds or 0.0)
    return seconds * rate(settings, function)


def _name(function: str) -> FunctionName:
    if function not in FUNCTIONS:
        raise ValueError(f"unknown function {function!r}; allowed: {', '.join(FUNCTIONS)}")
    return function  # type: ignore[return-value]
