"""The one ``Word`` type: a word and when it is spoken, in seconds.

Transcription produces it, script alignment re-times it, the timeline takes it as caption
words, and the job API carries it. A pydantic dataclass: plain and frozen like a
dataclass, validated where it is built (times not negative, ``end`` not before ``start``),
and part of the timeline's JSON Schema.

Its JSON form (``records.dump``, as transcripts are written) is ``{"word", "start",
"end"}``, times to the millisecond, plus ``probability`` only where the recogniser gave one.
"""

from __future__ import annotations

from pydantic import ConfigDict, Field, model_validator
from pydantic.dataclasses import dataclass

from canvascast_cli.records import Ratio, Seconds


def _unknown(value: float | None) -> bool:
    return value is None


# Strict per field (a dataclass with strict config would refuse dicts): "1.5" or true is
# not a time.
@dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class Word:
    word: str = Field(strict=True)
    start: Seconds = Field(ge=0, allow_inf_nan=False, strict=True, description="Seconds.")
    end: Seconds = Field(ge=0, allow_inf_nan=False, strict=True,
                         description="Seconds, not before start.")
    probability: Ratio | None = Field(
        None, ge=0, le=1, strict=True, exclude_if=_unknown,
        description="The recogniser's confidence, where it gives one.")

    @model_validator(mode="after")
    def _ordered(self) -> Word:
        if self.end < self.start:
            raise ValueError(f"end ({self.end:g}) is before start ({self.start:g})")
        return self
