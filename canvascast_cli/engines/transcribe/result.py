"""What a transcription produces: small frozen dataclasses, and their JSON form.

The JSON keeps the seed's shape — ``{"segments": [...], "words": [{"word", "start",
"end"}]}`` — plus ``language``, ``duration``, ``engine``, ``model`` and, where the engine
gives it, each word's ``probability``. ``canvascast render`` reads exactly this file as
captions (``captions.transcript``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from canvascast_cli.words import Word

__all__ = ["Alignment", "Segment", "Transcript", "Word"]


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

    @property
    def matched_share(self) -> float:
        """Share of the script's words timed from a recognised word (0-1)."""
        return self.matched / self.script_words if self.script_words else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"script_words": self.script_words, "matched": self.matched,
                "interpolated": self.interpolated, "dropped_recognised": self.dropped,
                "matched_share": round(self.matched_share, 4)}


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
    warnings: tuple[str, ...] = ()

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

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Transcript:
        """The transcript ``to_dict`` wrote (a transcript that came back from a remote
        job). Segment word lists are not in the JSON; ``words`` has them all."""
        words = tuple(Word(**{k: w[k] for k in ("word", "start", "end", "probability")
                              if k in w}) for w in data.get("words") or [])
        segments = tuple(Segment(int(s["id"]), float(s["start"]), float(s["end"]),
                                 str(s["text"])) for s in data.get("segments") or [])
        raw = data.get("alignment")
        alignment = None
        if isinstance(raw, dict):
            alignment = Alignment(script_words=int(raw["script_words"]),
                                  matched=int(raw["matched"]),
                                  interpolated=int(raw["interpolated"]),
                                  dropped=int(raw.get("dropped_recognised", 0)))
        known = {"language", "duration", "engine", "model", "text", "segments", "words",
                 "alignment", "warnings"}
        return cls(segments=segments, words=words, language=str(data.get("language", "")),
                   duration=float(data.get("duration", 0.0)),
                   engine=str(data.get("engine", "")), model=str(data.get("model", "")),
                   alignment=alignment,
                   extra={k: v for k, v in data.items() if k not in known},
                   warnings=tuple(str(w) for w in data.get("warnings") or ()))

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
        if self.warnings:
            out["warnings"] = list(self.warnings)
        out.update(self.extra)
        return out
