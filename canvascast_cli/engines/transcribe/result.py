"""What a transcription produces: small frozen dataclasses, and their JSON form.

The JSON keeps the seed's shape — ``{"segments": [...], "words": [{"word", "start",
"end"}]}`` — plus ``language``, ``duration``, ``engine``, ``model`` and, where the engine
gives it, each word's ``probability``. ``canvascast render`` reads exactly this file as
captions (``captions.transcript``), keeping only the keys a ``Word`` has.

When word timing refinement ran (``refine``), each word also says whether its times were
refined (``"refined": true``) or kept as recognised and why (``"refined": false, "kept":
"not in dictionary"``), and ``refinement`` sums it up.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from canvascast_cli.words import Word

__all__ = ["Alignment", "Refinement", "Segment", "Transcript", "Word"]


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
class Refinement:
    """How word times were re-timed against the audio (``refine``)."""

    aligner: str | None  # e.g. "pocketsphinx 5.1.1 en-us"; None when skipped
    kept: tuple[str | None, ...] = ()  # per word: why its time was kept; None: refined
    skipped: str | None = None  # why no word was refined (no aligner for the language...)

    @property
    def refined(self) -> int:
        return sum(reason is None for reason in self.kept)

    def reasons(self) -> dict[str, int]:
        """How many words were kept, by reason."""
        counts: dict[str, int] = {}
        for reason in self.kept:
            if reason is not None:
                counts[reason] = counts.get(reason, 0) + 1
        return counts

    def to_dict(self) -> dict[str, Any]:
        if self.skipped is not None:
            return {"skipped": self.skipped}
        return {"aligner": self.aligner, "refined": self.refined,
                "kept": len(self.kept) - self.refined, "kept_because": self.reasons()}


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
    refinement: Refinement | None = None

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
                 "alignment", "warnings", "refinement"}
        return cls(segments=segments, words=words, language=str(data.get("language", "")),
                   duration=float(data.get("duration", 0.0)),
                   engine=str(data.get("engine", "")), model=str(data.get("model", "")),
                   alignment=alignment,
                   extra={k: v for k, v in data.items() if k not in known},
                   warnings=tuple(str(w) for w in data.get("warnings") or ()),
                   refinement=_refinement(data.get("refinement"), data.get("words") or []))

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
        refinement = self.refinement
        if refinement is not None and len(refinement.kept) == len(self.words):
            for word, reason in zip(out["words"], refinement.kept, strict=True):
                word["refined"] = reason is None
                if reason is not None:
                    word["kept"] = reason
        if self.alignment is not None:
            out["alignment"] = self.alignment.to_dict()
        if refinement is not None:
            out["refinement"] = refinement.to_dict()
        if self.warnings:
            out["warnings"] = list(self.warnings)
        out.update(self.extra)
        return out


def _refinement(raw: Any, words: list[Any]) -> Refinement | None:
    """``Refinement`` back from a transcript's JSON (its per-word flags included)."""
    if not isinstance(raw, dict):
        return None
    if raw.get("skipped") is not None:
        return Refinement(aligner=None, skipped=str(raw["skipped"]))
    kept = tuple(None if w.get("refined") else str(w.get("kept") or "unknown")
                 for w in words if isinstance(w, dict))
    return Refinement(aligner=str(raw.get("aligner") or ""), kept=kept)
