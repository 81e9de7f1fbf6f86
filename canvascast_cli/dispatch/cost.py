"""What a job costs on Modal: an estimate before, the actual after.

Estimate: the seconds this function took per unit in the ledger's recent history (per
frame for a render, per audio second for a transcription, per image), times the units of
this job, times the per-second price of the function's configured resources
(``[functions.*]`` and ``[pricing]`` in modal.toml). Without history, a stated guess per
unit (``GUESS_SECONDS_PER_UNIT``) stands in, and the estimate says so. Actual: the billed
seconds the job reports (its execution time in the container) times the same price.
Modal also bills a container's cold boot and its idle ``scaledown_window``; those are not
attributable to one job and are not in these figures (``canvascast status`` shows
cold starts).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from canvascast_cli.config import FunctionName, Settings, function_cost_per_second

# Rough seconds per unit on the seed's resources, used until the ledger has history:
# 4-CPU render ~1x real time at 30 fps; Whisper on an A10G ~20x real time; a 4-step
# FLUX.1-schnell image on an A10G ~3 s.
GUESS_SECONDS_PER_UNIT: dict[str, float] = {
    "render_video": 1 / 30,
    "transcribe_audio": 1 / 20,
    "generate_images": 3.0,
}


@dataclass(frozen=True)
class Estimate:
    usd: float
    seconds: float
    basis: str  # "history" | "guess"

    def to_dict(self) -> dict[str, Any]:
        return {"usd": self.usd, "seconds": self.seconds, "basis": self.basis}


def rate(settings: Settings, function: str) -> float:
    return function_cost_per_second(settings, _name(function))


def estimate(settings: Settings, function: str, units: float,
             seconds_per_unit: float | None) -> Estimate:
    basis = "history" if seconds_per_unit is not None else "guess"
    per_unit = seconds_per_unit if seconds_per_unit is not None else \
        GUESS_SECONDS_PER_UNIT[function]
    seconds = per_unit * max(0.0, units)
    return Estimate(usd=seconds * rate(settings, function), seconds=seconds, basis=basis)


def actual(settings: Settings, function: str, billed_seconds: float) -> float:
    return max(0.0, billed_seconds) * rate(settings, function)


def _name(function: str) -> FunctionName:
    if function not in GUESS_SECONDS_PER_UNIT:
        raise ValueError(f"unknown function {function!r}")
    return function  # type: ignore[return-value]
