"""The render timeline: a pydantic model (its JSON Schema is the file format) and resolution.

A timeline file is validated in two steps, and every problem of a step is reported at once:

1. ``parse_timeline`` — the shape: types, ranges, dimensions, fps, transitions.
2. ``resolve_timeline`` — the world: files exist and decode, URLs download, caption words
   fall inside the video. Relative paths resolve against the timeline file's folder.

Times are in seconds. A scene's frames are ``round(duration * fps)``; a crossfade overlaps
the end of one scene with the start of the next, so the video lasts the sum of the scenes
minus the crossfades.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from canvascast_cli.errors import InvalidInput

MIN_SIDE, MAX_SIDE = 32, 4096
MAX_PIXELS = 3840 * 2160  # 4K UHD: beyond it x264 levels and memory stop making sense
MIN_FPS, MAX_FPS = 1.0, 120.0
MAX_SCENE_SECONDS = 3600.0

HEX_COLOR = r"^#(?:[0-9A-Fa-f]{6}|[0-9A-Fa-f]{8})$"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _shorthand(key: str) -> Any:
    """Let ``"motion": "zoom_in"`` stand for ``{"type": "zoom_in"}`` (same for others)."""

    def convert(value: Any) -> Any:
        return {key: value} if isinstance(value, str) else value

    return BeforeValidator(convert)


class OutputSpec(_Model):
    width: int = Field(1920, description=f"Even, {MIN_SIDE}-{MAX_SIDE} px.")
    height: int = Field(1080, description=f"Even, {MIN_SIDE}-{MAX_SIDE} px.")
    fps: float = Field(30.0, description=f"Frames per second, {MIN_FPS:g}-{MAX_FPS:g}.")
    background: str = Field("#000000", pattern=HEX_COLOR,
                            description="Fill where an image does not cover the frame.")

    @field_validator("width", "height")
    @classmethod
    def _side(cls, value: int) -> int:
        if not MIN_SIDE <= value <= MAX_SIDE or value % 2:
            raise ValueError(
                f"{value} is not allowed: use an even number of pixels from {MIN_SIDE} to "
                f"{MAX_SIDE} (H.264 4:2:0 needs even sides)")
        return value

    @field_validator("fps")
    @classmethod
    def _fps(cls, value: float) -> float:
        if not MIN_FPS <= value <= MAX_FPS:
            raise ValueError(f"{value:g} is out of range: use {MIN_FPS:g} to {MAX_FPS:g}")
        return value

    @model_validator(mode="after")
    def _area(self) -> OutputSpec:
        if self.width * self.height > MAX_PIXELS:
            raise ValueError(
                f"{self.width}x{self.height} is too large: at most {MAX_PIXELS:,} pixels "
                "(3840x2160)")
        return self

    @property
    def rate(self) -> Fraction:
        """The frame rate as a fraction (29.97 -> 2997/100), for ffmpeg."""
        return Fraction(self.fps).limit_denominator(1001)


MotionType = Literal["none", "zoom_in", "zoom_out", "pan_left", "pan_right", "pan_up", "pan_down"]


class Motion(_Model):
    """Ken Burns motion of a still across its scene.

    ``zoom_in``/``zoom_out`` go between the whole (cover-fitted) image and ``1 + amount``
    magnification around ``focus``; pans travel the full free margin at ``1 + amount``
    magnification (plus any extra width or height the image has beyond the frame's aspect).
    """

    type: MotionType = "none"
    amount: float = Field(0.15, gt=0, le=1.0, description="Zoom amount: 0.15 = 15% closer.")
    easing: Literal["linear", "ease_in_out"] = "linear"
    focus: tuple[float, float] = Field(
        (0.5, 0.5), description="Zoom centre as fractions of the image's width and height.")

    @field_validator("focus")
    @classmethod
    def _focus(cls, value: tuple[float, float]) -> tuple[float, float]:
        if not all(0.0 <= v <= 1.0 for v in value):
            raise ValueError("focus values must be between 0 and 1")
        return value


class Transition(_Model):
    """How a scene hands over to the next one."""

    type: Literal["cut", "crossfade"] = "cut"
    duration: float = Field(0.5, gt=0, le=10.0, description="Crossfade seconds.")


class Scene(_Model):
    image: str = Field(min_length=1, description="Image file (relative to the timeline) or URL.")
    duration: float = Field(description="Seconds on screen, including transition overlaps.")
    motion: Annotated[Motion, _shorthand("type")] = Motion()
    transition: Annotated[Transition, _shorthand("type")] = Field(
        Transition(), description="Transition into the next scene.")

    @field_validator("duration")
    @classmethod
    def _duration(cls, value: float) -> float:
        if not 0 < value <= MAX_SCENE_SECONDS or not math.isfinite(value):
            raise ValueError(f"must be more than 0 and at most {MAX_SCENE_SECONDS:g} seconds")
        return value


class Narration(_Model):
    path: str = Field(min_length=1)
    start: float = Field(0.0, ge=0, description="Seconds into the video the narration starts.")
    volume: float = Field(1.0, ge=0, le=4.0)


class Music(_Model):
    path: str = Field(min_length=1)
    volume: float = Field(0.25, ge=0, le=4.0)
    ducking: bool = Field(True, description="Lower the music while the narration speaks.")
    loop: bool = Field(True, description="Repeat the music if it is shorter than the video.")
    fade_in: float = Field(0.0, ge=0, le=30)
    fade_out: float = Field(1.5, ge=0, le=30)


class Word(_Model):
    word: str
    start: float = Field(ge=0)
    end: float = Field(ge=0)

    @model_validator(mode="after")
    def _ordered(self) -> Word:
        if self.end < self.start:
            raise ValueError(f"end ({self.end:g}) is before start ({self.start:g})")
        return self


class CaptionStyle(_Model):
    font: str = Field("DejaVu Sans", description="Font family name, or a .ttf/.otf file path.")
    size: int | None = Field(None, ge=6, le=400, description="Pixels; default 6% of height.")
    bold: bool = True
    color: str = Field("#FFFFFF", pattern=HEX_COLOR)
    highlight_color: str = Field("#FFD400", pattern=HEX_COLOR)
    outline_color: str = Field("#000000", pattern=HEX_COLOR)
    outline: float | None = Field(None, ge=0, le=50, description="Pixels; default size/12.")
    position: Literal["bottom", "center", "top"] = "bottom"
    margin: int | None = Field(None, ge=0, le=2000, description="Pixels from the edge.")
    max_words_per_line: int = Field(6, ge=1, le=30)


class Captions(_Model):
    words: list[Word] | None = Field(None, description="Word timings, seconds of narration.")
    transcript: str | None = Field(
        None, description="A transcript JSON file (as `canvascast transcribe` writes it).")
    offset: float | None = Field(
        None, description="Seconds added to word times; default: the narration's start.")
    style: CaptionStyle = CaptionStyle()

    @model_validator(mode="after")
    def _one_source(self) -> Captions:
        if (self.words is None) == (self.transcript is None):
            raise ValueError("give exactly one of 'words' or 'transcript'")
        return self


class Timeline(_Model):
    """A CanvasCast video: scenes of stills with motion, narration, music and captions."""

    model_config = ConfigDict(
        extra="forbid", frozen=True,
        json_schema_extra={"$schema": "https://json-schema.org/draft/2020-12/schema"})

    version: Literal[1] = 1
    output: OutputSpec = OutputSpec()
    scenes: list[Scene] = Field(description="At least one scene, shown in order.")
    narration: Annotated[Narration | None, _shorthand("path")] = None
    music: Annotated[Music | None, _shorthand("path")] = None
    captions: Captions | None = None

    @field_validator("scenes")
    @classmethod
    def _some_scenes(cls, value: list[Scene]) -> list[Scene]:
        if not value:
            raise ValueError("the scene list is empty: give at least one scene")
        return value

    @model_validator(mode="after")
    def _transitions_fit(self) -> Timeline:
        problems = []
        frames = [scene_frames(s.duration, self.output.fps) for s in self.scenes]
        for i, scene in enumerate(self.scenes):
            if frames[i] < 1:
                problems.append(f"scenes[{i}].duration: {scene.duration:g} s is shorter than "
                                f"one frame at {self.output.fps:g} fps")
        fades = crossfade_frames(self)
        last = len(self.scenes) - 1
        if self.scenes[last].transition.type != "cut":
            problems.append(f"scenes[{last}].transition: the last scene has no next scene to "
                            "crossfade into; use 'cut'")
        for i, overlap in enumerate(fades):
            if not overlap:
                continue
            seconds = self.scenes[i].transition.duration
            if overlap > frames[i] or overlap > frames[i + 1]:
                problems.append(
                    f"scenes[{i}].transition.duration: a {seconds:g} s crossfade is longer than "
                    f"scene {i} ({self.scenes[i].duration:g} s) or scene {i + 1} "
                    f"({self.scenes[i + 1].duration:g} s)")
        for i in range(1, len(self.scenes) - 1):
            if fades[i - 1] + fades[i] > frames[i]:
                problems.append(
                    f"scenes[{i}]: its incoming and outgoing crossfades "
                    f"({self.scenes[i - 1].transition.duration:g} s + "
                    f"{self.scenes[i].transition.duration:g} s) are longer than the scene "
                    f"({self.scenes[i].duration:g} s)")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def total_frames(self) -> int:
        frames = [scene_frames(s.duration, self.output.fps) for s in self.scenes]
        return sum(frames) - sum(crossfade_frames(self))

    @property
    def duration(self) -> float:
        return self.total_frames / self.output.fps


def scene_frames(duration: float, fps: float) -> int:
    """Frames for ``duration`` seconds: nearest whole frame, halves rounded up."""
    return math.floor(duration * fps + 0.5 + 1e-9)


def crossfade_frames(timeline: Timeline) -> list[int]:
    """Frames of overlap between scene i and i+1 (0 for a cut); one per scene but the last."""
    fps = timeline.output.fps
    return [
        scene_frames(s.transition.duration, fps) if s.transition.type == "crossfade" else 0
        for s in timeline.scenes[:-1]
    ]


def timeline_schema() -> dict[str, Any]:
    """The JSON Schema of a timeline file (``canvascast render --schema``)."""
    return Timeline.model_json_schema()


# ---------------------------------------------------------------------------------------
# Parsing


def parse_timeline(data: Any, *, source: str = "timeline") -> Timeline:
    """Validate the shape of a timeline; every problem is listed in one InvalidInput."""
    try:
        return Timeline.model_validate(data)
    except ValidationError as exc:
        details = []
        for err in exc.errors(include_url=False):
            loc = _loc(err["loc"])
            message = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                message = "unknown field"
            elif err["type"] == "missing":
                message = "required field is missing"
            # A model-level validator reports several problems joined by "; ".
            for part in message.split("; "):
                details.append(f"{loc}: {part}" if loc else part)
        noun = "problem" if len(details) == 1 else "problems"
        raise InvalidInput(f"{source}: {len(details)} {noun}", details=details) from None


def load_timeline_file(path: Path) -> Timeline:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InvalidInput(f"{path}: timeline file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"{path}: cannot read timeline: {exc}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInput(
            f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})"
        ) from None
    return parse_timeline(data, source=str(path))


def _loc(parts: Sequence[Any]) -> str:
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        elif str(part).startswith(("function-", "tagged-union")) or part in ("str",):
            continue
        else:
            out += ("." if out else "") + str(part)
    return re.sub(r"\.(Narration|Music)\b", "", out)


# ---------------------------------------------------------------------------------------
# Resolution: paths, downloads, media checks.


@dataclass(frozen=True)
class ResolvedTimeline:
    """A timeline whose every input exists, decodes and fits; ready for the engine."""

    timeline: Timeline
    images: list[Path]  # one per scene, local files
    narration: Path | None
    music: Path | None
    words: list[Word]  # caption words in video time (offset applied), sorted
    base_dir: Path

    @property
    def output(self) -> OutputSpec:
        return self.timeline.output


def read_words_file(path: Path, *, field: str) -> list[Word]:
    """The ``words`` list of a transcript JSON (``canvascast transcribe`` output)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InvalidInput(f"{field}: transcript file not found: {path}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInput(f"{field}: cannot read transcript {path}: {exc}") from None
    words = data.get("words") if isinstance(data, dict) else None
    if not isinstance(words, list):
        raise InvalidInput(
            f"{field}: {path} has no 'words' list (expected a transcript JSON as "
            "`canvascast transcribe` writes it)")
    out = []
    for i, item in enumerate(words):
        if not isinstance(item, dict):
            raise InvalidInput(f"{field}: {path}: words[{i}] is not an object")
        # Transcripts carry more per word (probability): captions need these three.
        try:
            out.append(Word.model_validate({k: item.get(k) for k in ("word", "start", "end")}))
        except ValidationError as exc:
            err = exc.errors(include_url=False)[0]
            where = ".".join(str(p) for p in err["loc"])
            message = err["msg"].removeprefix("Value error, ")
            raise InvalidInput(f"{field}: {path}: words[{i}]{'.' + where if where else ''}: "
                               f"{message}") from None
    return out
