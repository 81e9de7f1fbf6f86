"""The one ``Word`` type: a word and when it is spoken, in seconds.

Transcription produces it, script alignment re-times it, the timeline takes it as caption
words, and the job API carries it. A pydantic dataclass: plain and frozen like a
dataclass, validated where it is built (times not negative, ``end`` not before ``start``),
and part of the timeline's JSON Schema.
"""

from __future__ import annotations

from typing import Any

from pydantic import ConfigDict, Field, model_validator
from pydantic.dataclasses import dataclass


# Strict per field (a dataclass with strict config would refuse dicts): "1.5" or true is
# not a time.
@dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class Word:
    word: str = Field(strict=True)
    start: float = Field(ge=0, allow_inf_nan=False, strict=True, description="Seconds.")
    end: float = Field(ge=0, allow_inf_nan=False, strict=True,
                       description="Seconds, not before start.")
    probability: float | None = Field(
        None, ge=0, le=1, strict=True,
        description="The recogniser's confidence, where it gives one.")

    @model_validator(mode="after")
    def _ordered(self) -> Word:
        if self.end < self.start:
            raise ValueError(f"end ({self.end:g}) is before start ({self.start:g})")
        return self

    def to_dict(self) -> dict[str, Any]:
        """JSON form, times to the millisecond (as transcripts are written)."""
        out: dict[str, Any] = {"word": self.word, "start": round(self.start, 3),
                               "end": round(self.end, 3)}
        if self.probability is not None:
            out["probability"] = round(self.probability, 4)
        return out
