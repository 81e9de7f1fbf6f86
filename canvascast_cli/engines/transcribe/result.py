"""What a transcription produces: small frozen pydantic dataclasses, and their JSON form.

The JSON (``records.dump(transcript)``) keeps the seed's shape — ``{"segments": [...],
"words": [{"word", "start", "end"}]}`` — plus ``language``, ``duration``, ``engine``,
``model``, ``text`` and, where the engine gives it, each word's ``probability``; times to
the millisecond (``records.Seconds``). ``canvascast render`` reads exactly this file as
captions (``captions.transcript``), keeping only the keys a ``Word`` has, and a remote
job's transcript comes back as it (``Transcript.from_dict``).

When word timing refinement ran (``refine``), each word also says whether its times were
refined (``"refined": true``) or kept as recognised and why (``"refined": false, "kept":
"not in dictionary"``), and ``refinement`` sums it up. ``alignment``, ``refinement`` and
``warnings`` appear only when there is something to say; ``extra`` is merged in at the
top level.
"""

from __future__ import annotations

from dataclasses import field, replace
from typing import Annotated, Any

from pydantic import (
    Field,
    SerializationInfo,
    SerializerFunctionWrapHandler,
    TypeAdapter,
    computed_field,
    model_serializer,
)
from pydantic.dataclasses import dataclass

from canvascast_cli.records import Ratio, Seconds
from canvascast_cli.words import Word

__all__ = ["Alignment", "Refinement", "Segment", "Transcript", "Word"]


def _absent(value: object) -> bool:
    """Left out of the JSON: None, or nothing in it."""
    return value is None or value == ()


@dataclass(frozen=True)
class Segment:
    id: int
    start: Seconds
    end: Seconds
    text: str
    words: tuple[Word, ...] = Field(default=(), exclude=True)  # in the transcript's ``words``


@dataclass(frozen=True)
class Alignment:
    """How ``--script`` words were timed."""

    script_words: int
    matched: int  # timed from a recognised word
    interpolated: int  # no recognised match: timed between their neighbours
    # recognised words the script lacks (still in segments)
    dropped: int = Field(serialization_alias="dropped_recognised")

    @computed_field  # type: ignore[prop-decorator]
    @property
    def matched_share(self) -> Ratio:
        """Share of the script's words timed from a recognised word (0-1)."""
        return self.matched / self.script_words if self.script_words else 0.0


@dataclass(frozen=True)
class Refinement:
    """How word times were re-timed against the audio (``refine``).

    JSON: ``{"aligner", "refined", "kept", "kept_because"}`` (counts; the per-word reasons
    go on the transcript's words), or ``{"skipped": why}`` alone when nothing was refined.
    """

    aligner: str | None  # e.g. "pocketsphinx 5.1.1 en-us"; None when skipped
    # per word: why its time was kept; None: refined
    kept: tuple[str | None, ...] = Field(default=(), exclude=True)
    # why no word was refined (no aligner for the language...)
    skipped: str | None = Field(default=None, exclude_if=_absent)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def refined(self) -> int:
        return sum(reason is None for reason in self.kept)

    @computed_field(alias="kept")  # type: ignore[prop-decorator]
    @property
    def kept_count(self) -> int:
        """How many words kept their recognised times."""
        return len(self.kept) - self.refined

    @computed_field  # type: ignore[prop-decorator]
    @property
    def kept_because(self) -> dict[str, int]:
        return self.reasons()

    def reasons(self) -> dict[str, int]:
        """How many words were kept, by reason."""
        counts: dict[str, int] = {}
        for reason in self.kept:
            if reason is not None:
                counts[reason] = counts.get(reason, 0) + 1
        return counts

    @model_serializer(mode="wrap")
    def _skipped_alone(self, handler: SerializerFunctionWrapHandler) -> Any:
        return {"skipped": self.skipped} if self.skipped is not None else handler(self)


# The transcript's keys in the order they are written; ``extra``'s are merged in last.
_ORDER = ("language", "duration", "engine", "model", "text", "segments", "words",
          "alignment", "refinement", "warnings")


@dataclass(frozen=True)
class Transcript:
    segments: tuple[Segment, ...]
    # Written by ``_document`` (after ``segments``, with each word's refinement).
    words: Annotated[tuple[Word, ...], Field(exclude=True)]
    language: str
    duration: Seconds  # seconds of audio
    engine: str
    model: str
    alignment: Alignment | None = Field(default=None, exclude_if=_absent)
    extra: dict[str, Any] = field(default_factory=dict)  # more keys, merged at the top level
    warnings: tuple[str, ...] = Field(default=(), exclude_if=_absent)
    refinement: Refinement | None = Field(default=None, exclude_if=_absent)

    @computed_field  # type: ignore[prop-decorator]
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
        """The transcript ``records.dump`` wrote (a transcript that came back from a
        remote job). Segment word lists are not in the JSON; ``words`` has them all."""
        words = tuple(Word(**{k: w[k] for k in ("word", "start", "end", "probability")
                              if k in w}) for w in data.get("words") or [])
        segments = tuple(Segment(int(s.get("id", i)), float(s["start"]), float(s["end"]),
                                 str(s["text"]))
                         for i, s in enumerate(data.get("segments") or []))
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

    @model_serializer(mode="wrap")
    def _document(self, handler: SerializerFunctionWrapHandler,
                  info: SerializationInfo) -> Any:
        data = handler(self)
        data["words"] = self._word_entries(info)
        document = {key: data[key] for key in _ORDER if key in data}
        document.update(data["extra"])
        return document

    def _word_entries(self, info: SerializationInfo) -> Any:
        """The words, each with its ``refined`` (and ``kept``: why not) when refinement
        ran. Without refinement, the ``Word`` records themselves, which the encoder of the
        document encodes as it goes: each word is encoded once, not twice (100,000-word
        transcripts)."""
        refinement = self.refinement
        if refinement is None or len(refinement.kept) != len(self.words):
            return self.words
        entries = _WORDS.dump_python(self.words, mode="json" if info.mode_is_json() else "python")
        for entry, reason in zip(entries, refinement.kept, strict=True):
            entry["refined"] = reason is None
            if reason is not None:
                entry["kept"] = reason
        return entries


_WORDS: TypeAdapter[tuple[Word, ...]] = TypeAdapter(tuple[Word, ...])


def _refinement(raw: Any, words: list[Any]) -> Refinement | None:
    """``Refinement`` back from a transcript's JSON (its per-word flags included)."""
    if not isinstance(raw, dict):
        return None
    if raw.get("skipped") is not None:
        return Refinement(aligner=None, skipped=str(raw["skipped"]))
    kept = tuple(None if w.get("refined") else str(w.get("kept") or "unknown")
                 for w in words if isinstance(w, dict))
    return Refinement(aligner=str(raw.get("aligner") or ""), kept=kept)
