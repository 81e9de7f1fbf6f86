"""What a transcription produces: small frozen dataclasses, and their JSON form.

The JSON keeps the seed's shape — ``{"segments": [...], "words": [{"word", "start",
"end"}]}`` — plus ``language``, ``duration``, ``engine``, ``model`` and, where the engine
gives it, each word's ``probability``. ``canvascast render`` reads exactly this file as
captions (``captions.transcript``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any


@dataclass(frozen=True)
class Word:
    word: str  # as spoken/written, without surrounding whitespace
    start: float
    end: float
    probability: float | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"word": self.word, "start": round(self.start, 3),
                               "end": round(self.end, 3)}
        if self.probability is not None:
            out["probability"] = round(self.probability, 4)
        return out


@dataclass(frozen=True)
class Segment:
    id: int
    start: float
    end: float
    text: str
    words: tuple[Word, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "start": round(self.start, 3), "end": round(self.end, 3),
                "text": self.text}


@dataclass(frozen=True)
class Alignment:
    """How ``--script`` words were timed."""

    script_words: int
    matched: int  # timed from a recognised word
    interpolated: int  # no recognised match: timed between their neighbours
    dropped: int  # recognised words the script lacks (still in segments)

    def to_dict(self) -> dict[str, int]:
        return {"script_words": self.script_words, "matched": self.matched,
                "interpolated": self.interpolated, "dropped_recognised": self.dropped}


@dataclass(frozen=True)
class Transcript:
    segments: tuple[Segment, ...]
    words: tuple[Word, ...]
    language: str
    duration: float  # seconds of audio
    engine: str
    model: str
    alignment: Alignment | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def text(self) -> str:
        return " ".join(s.text.strip() for s in self.segments if s.text.strip())

    def shifted(self, offset: float) -> Transcript:
        """The same transcript with every time moved by ``offset`` seconds (for chunks of
        a longer recording transcribed separately)."""
        if not offset:
            return self

        def move(w: Word) -> Word:
            return replace(w, start=w.start + offset, end=w.end + offset)

        segments = tuple(replace(s, start=s.start + offset, end=s.end + offset,
                                 words=tuple(move(w) for w in s.words)) for s in self.segments)
        return replace(self, segments=segments, words=tuple(move(w) for w in self.words))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "language": self.language,
            "duration": round(self.duration, 3),
            "engine": self.engine,
            "model": self.model,
            "text": self.text,
            "segments": [s.to_dict() for s in self.segments],
            "words": [w.to_dict() for w in self.words],
        }
        if self.alignment is not None:
            out["alignment"] = self.alignment.to_dict()
        out.update(self.extra)
        return out
