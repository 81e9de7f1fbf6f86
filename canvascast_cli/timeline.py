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
import typing
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    TypeAdapter,
    ValidationError,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import core_schema

from canvascast_cli.errors import InvalidInput
from canvascast_cli.words import Word

__all__ = ["Word"]  # re-exported: caption words are the one Word type

MIN_SIDE, MAX_SIDE = 32, 4096
MAX_PIXELS = 3840 * 2160  # 4K UHD: beyond it x264 levels and memory stop making sense
MIN_FPS, MAX_FPS = 1.0, 120.0
MAX_SCENE_SECONDS = 3600.0
# A timeline is a video someone will watch: beyond these it is a mistake or an attack
# (a 50 MB file of 740,000 scenes), refused before any image is looked at.
MAX_SCENES = 10_000
MAX_VIDEO_SECONDS = 4 * 3600.0
MAX_CAPTION_WORDS = 100_000
MAX_CAPTION_FONTS = 16  # a style's font list: the font, then its fallbacks
MAX_NESTING = 64  # JSON deeper than this is not a timeline

HEX_COLOR = r"^#(?:[0-9A-Fa-f]{6}|[0-9A-Fa-f]{8})$"


class _Model(BaseModel):
    # Strict: JSON has types, and a width of "320" or true is a mistake to report, not to
    # coerce. Unknown fields are mistakes too (usually typos).
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


def _as_tuple(value: Any) -> Any:
    """JSON has arrays, not tuples: accept a list where a fixed-length tuple belongs."""
    return tuple(value) if isinstance(value, list) else value


@dataclass(frozen=True)
class _Shorthand:
    """Let ``"motion": "zoom_in"`` stand for ``{"type": "zoom_in"}`` (same for others);
    the JSON Schema accepts the string form too (``string_schema``)."""

    key: str
    string_schema: tuple[tuple[str, Any], ...]

    def convert(self, value: Any) -> Any:
        return {self.key: value} if isinstance(value, str) else value

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler
                                     ) -> core_schema.CoreSchema:
        return core_schema.no_info_before_validator_function(self.convert, handler(source))

    def __get_pydantic_json_schema__(self, schema: core_schema.CoreSchema,
                                     handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        return {"anyOf": [handler(schema), dict(self.string_schema)]}


def _shorthand(key: str, **string_schema: Any) -> _Shorthand:
    return _Shorthand(key, tuple(string_schema.items()))


def _frame_rate(value: Any) -> Any:
    """``"30000/1001"`` -> 29.97002997...; 29.97, 23.976, 59.94 ... -> the exact NTSC rate.

    Video people write 29.97 and mean 30000/1001: a rate within 0.01 of N*1000/1001 is
    taken to be exactly that, so frame counts and the stream's time base are the
    broadcast ones.
    """
    if isinstance(value, str):
        num, sep, den = value.strip().partition("/")
        try:
            rate = Fraction(int(num), int(den)) if sep else Fraction(num)
        except (ValueError, ZeroDivisionError):
            raise ValueError(f"{value!r} is not a frame rate; give a number (30, 29.97) or "
                             "a fraction (\"30000/1001\")") from None
        value = float(rate)
    if isinstance(value, (int, float)) and not isinstance(value, bool) and \
            math.isfinite(value) and value != round(value):
        ntsc = round(value * 1.001)
        if abs(value - ntsc * 1000 / 1001) < 0.01:
            return ntsc * 1000 / 1001
    return value


_SIDE_SCHEMA: dict[str, Any] = {"minimum": MIN_SIDE, "maximum": MAX_SIDE, "multipleOf": 2}


class OutputSpec(_Model):
    # Bounds are checked by the validators below (for their messages) and stated in the
    # JSON Schema, so the schema accepts exactly what the model accepts.
    width: int = Field(1920, description=f"Even, {MIN_SIDE}-{MAX_SIDE} px.",
                       json_schema_extra=_SIDE_SCHEMA)
    height: int = Field(1080, description=f"Even, {MIN_SIDE}-{MAX_SIDE} px.",
                        json_schema_extra=_SIDE_SCHEMA)
    fps: Annotated[float, BeforeValidator(_frame_rate), WithJsonSchema({"anyOf": [
        {"type": "number", "minimum": MIN_FPS, "maximum": MAX_FPS},
        {"type": "string", "pattern": r"^\d+(\.\d+)?(/[1-9]\d*)?$"}]})] = Field(
        30.0,
        description=f"Frames per second, {MIN_FPS:g}-{MAX_FPS:g}: a number, or a fraction "
        "as a string (\"30000/1001\"); 23.976, 29.97, 59.94 mean the exact NTSC rates "
        "(24000/1001, 30000/1001, 60000/1001).")

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
        if not MIN_FPS <= value <= MAX_FPS or not math.isfinite(value):
            raise ValueError(f"{value:g} is out of range: use {MIN_FPS:g} to {MAX_FPS:g}")
        return value
    background: str = Field("#000000", pattern=HEX_COLOR,
                            description="Fill where an image does not cover the frame.")

    @model_validator(mode="after")
    def _area(self) -> OutputSpec:
        if self.width * self.height > MAX_PIXELS:
            raise ValueError(
                f"{self.width}x{self.height} is too large: at most {MAX_PIXELS:,} pixels "
                "(3840x2160)")
        return self

    @property
    def rate(self) -> Fraction:
        """The frame rate as a fraction for ffmpeg (29.97 -> 30000/1001)."""
        return Fraction(self.fps).limit_denominator(1001)


_Fraction = Annotated[float, Field(ge=0.0, le=1.0)]
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
    focus: Annotated[tuple[_Fraction, _Fraction], BeforeValidator(_as_tuple)] = Field(
        (0.5, 0.5), description="Zoom centre as fractions of the image's width and height.")


class Transition(_Model):
    """How a scene hands over to the next one."""

    type: Literal["cut", "crossfade"] = "cut"
    duration: float = Field(0.5, gt=0, le=10.0, description="Crossfade seconds.")


class Scene(_Model):
    image: str = Field(min_length=1, description="Image file (relative to the timeline) or URL.")
    duration: float = Field(description="Seconds on screen, including transition overlaps.",
                            json_schema_extra={"exclusiveMinimum": 0,
                                               "maximum": MAX_SCENE_SECONDS})
    motion: Annotated[Motion, _shorthand("type", enum=list(typing.get_args(MotionType)))
                      ] = Motion()
    transition: Annotated[Transition, _shorthand("type", enum=["cut", "crossfade"])] = Field(
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


def _font_list(value: Any) -> Any:
    """One clear message for a bad ``font`` (a plain union reports each of its branches)."""
    if isinstance(value, str):
        return value
    if not isinstance(value, list):
        raise ValueError(f"give a font (a family name or a font file) or a list of them, "
                         f"not {_brief(value)}")
    if not 1 <= len(value) <= MAX_CAPTION_FONTS:
        raise ValueError(f"{len(value)} fonts; give 1 to {MAX_CAPTION_FONTS}")
    for i, item in enumerate(value):
        if not isinstance(item, str) or not item:
            raise ValueError(f"item {i} ({_brief(item)}) is not a font: give a family name "
                             "or a font file")
    return value


_FONT_SCHEMA = {"anyOf": [
    {"type": "string"},
    {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 1,
     "maxItems": MAX_CAPTION_FONTS}]}


class CaptionStyle(_Model):
    font: Annotated[str | list[str], BeforeValidator(_font_list),
                    WithJsonSchema(_FONT_SCHEMA)] = Field(
        "DejaVu Sans",
        description="A font family name or a .ttf/.otf/.ttc file path; or a list of them, "
        "the first the caption's font and the rest its fallbacks, in order (a character "
        "is drawn with the first that has it, then the bundled DejaVu Sans Bold, then an "
        "installed font).")
    size: int | None = Field(None, ge=6, le=400, description="Pixels; default 6% of height.")
    bold: bool = True
    color: str = Field("#FFFFFF", pattern=HEX_COLOR)
    highlight_color: str = Field("#FFD400", pattern=HEX_COLOR)
    outline_color: str = Field("#000000", pattern=HEX_COLOR)
    outline: float | None = Field(None, ge=0, le=50, description="Pixels; default size/12.")
    position: Literal["bottom", "center", "top"] = "bottom"
    margin: int | None = Field(None, ge=0, le=2000, description="Pixels from the edge.")
    max_words_per_line: int = Field(6, ge=1, le=30)

    @property
    def fonts(self) -> tuple[str, ...]:
        """``font`` as a list: the caption's font first, then its fallbacks."""
        return (self.font,) if isinstance(self.font, str) else tuple(self.font)


class Captions(_Model):
    model_config = ConfigDict(json_schema_extra={
        "oneOf": [{"required": ["words"]}, {"required": ["transcript"]}]})

    words: list[Word] | None = Field(None, max_length=MAX_CAPTION_WORDS,
                                     description="Word timings, seconds of narration.")
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
        json_schema_extra={
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$comment": "Rules that span fields are checked by canvascast, not by this "
                        "schema: the last scene's transition is a cut; a crossfade fits "
                        "inside both scenes it joins; every scene lasts at least one frame; "
                        "the video lasts at most 4 h; width x height is at most 3840x2160; "
                        "a word's end is not before its start.",
        })

    version: Literal[1] = 1
    output: OutputSpec = OutputSpec()
    scenes: list[Scene] = Field(min_length=1, max_length=MAX_SCENES,
                                description="At least one scene, shown in order.")
    narration: Annotated[Narration | None, _shorthand("path", type="string", minLength=1)
                         ] = None
    music: Annotated[Music | None, _shorthand("path", type="string", minLength=1)] = None
    captions: Captions | None = None

    @model_validator(mode="before")
    @classmethod
    def _not_too_many_scenes(cls, data: Any) -> Any:
        # Before each scene is validated: a 740,000-scene file is refused at once.
        scenes = data.get("scenes") if isinstance(data, dict) else None
        if isinstance(scenes, list) and len(scenes) > MAX_SCENES:
            raise ValueError(f"scenes: {len(scenes):,} scenes; at most {MAX_SCENES:,}")
        return data

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
        if not problems and self.duration > MAX_VIDEO_SECONDS:
            problems.append(f"scenes: the video lasts {self.duration:,.0f} s; at most "
                            f"{MAX_VIDEO_SECONDS:,.0f} s ({MAX_VIDEO_SECONDS / 3600:g} h)")
        if problems:
            raise ValueError("\n".join(problems))
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
    if not isinstance(data, dict):
        kind = {list: "a list", type(None): "null", str: "a string", bool: "a boolean"}.get(
            type(data), "a number")
        raise InvalidInput(f"{source}: a timeline is a JSON object ({{\"scenes\": [...]}}), "
                           f"not {kind}")
    scenes = data.get("scenes")
    if isinstance(scenes, list) and len(scenes) > MAX_SCENES:  # before validating each
        raise InvalidInput(f"{source}: scenes: {len(scenes):,} scenes; at most {MAX_SCENES:,}")
    try:
        return Timeline.model_validate(data)
    except ValidationError as exc:
        details = validation_problems(exc.errors(include_url=False))
        noun = "problem" if len(details) == 1 else "problems"
        raise InvalidInput(f"{source}: {len(details)} {noun}", details=details) from None


def validation_problems(errors: Iterable[Mapping[str, Any]]) -> list[str]:
    """One ``field.path: what is wrong`` line per problem pydantic found (``.errors()`` of
    a ValidationError: timelines, job payloads): the messages the CLI and the job API both
    show."""
    details = []
    for err in errors:
        loc = _loc(err["loc"])
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            message = "unknown field"
        elif err["type"] == "missing":
            message = "required field is missing"
        elif loc.endswith("scenes") and err["type"] == "too_short":
            message = "the scene list is empty: give at least one scene"
        elif err["type"].endswith("_type") and "input" in err:
            message += f" (got {_brief(err['input'])})"
        # A model-level validator reports several problems, one per line.
        for part in message.splitlines():
            details.append(f"{loc}: {part}" if loc else part)
    return details


def _brief(value: Any) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


MAX_TIMELINE_BYTES = 64 * 1024 * 1024
_WORDS: TypeAdapter[Word] = TypeAdapter(Word)


def load_timeline_file(path: Path) -> Timeline:
    try:
        if path.is_dir():
            raise InvalidInput(f"{path}: is a folder; give a timeline JSON file")
        if path.stat().st_size > MAX_TIMELINE_BYTES:
            raise InvalidInput(f"{path}: {path.stat().st_size / 2**20:.0f} MiB; a timeline "
                               f"file is at most {MAX_TIMELINE_BYTES // 2**20} MiB")
        raw = path.read_bytes()
    except FileNotFoundError:
        raise InvalidInput(f"{path}: timeline file not found") from None
    except OSError as exc:
        raise InvalidInput(f"{path}: cannot read timeline: {exc.strerror}") from None
    return parse_timeline(load_json(raw, source=str(path)), source=str(path))


def load_json(raw: bytes | str, *, source: str) -> Any:
    """JSON text (UTF-8, a byte order mark allowed) -> data; InvalidInput naming ``source``.

    Nesting is capped before parsing: a timeline is a few levels deep, and 100,000 nested
    brackets would otherwise exhaust the parser's recursion.
    """
    try:
        text = raw.decode("utf-8-sig") if isinstance(raw, bytes) else raw.removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"{source}: not UTF-8 text (byte {exc.start})") from None
    depth = _nesting(text)
    if depth > MAX_NESTING:
        raise InvalidInput(f"{source}: JSON nested {depth} levels deep; at most {MAX_NESTING}")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInput(
            f"{source}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})"
        ) from None
    except RecursionError:  # pragma: no cover - the nesting check comes first
        raise InvalidInput(f"{source}: JSON nested too deeply") from None


def _nesting(text: str) -> int:
    """The deepest bracket nesting outside strings (an upper bound is enough)."""
    if "[" not in text and "{" not in text:
        return 0
    # Strings may hold brackets: drop them first (escaped quotes included).
    bare = re.sub(r'"(?:[^"\\]|\\.)*"', "", text)
    depth = deepest = 0
    for match in re.finditer(r"[\[\]{}]", bare):
        if match.group() in "[{":
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


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
        # Transcripts carry the same words (and maybe more keys): keep what Word has.
        try:
            out.append(_WORDS.validate_python(
                {k: item[k] for k in ("word", "start", "end", "probability") if k in item}))
        except ValidationError as exc:
            err = exc.errors(include_url=False)[0]
            where = ".".join(str(p) for p in err["loc"])
            message = err["msg"].removeprefix("Value error, ")
            raise InvalidInput(f"{field}: {path}: words[{i}]{'.' + where if where else ''}: "
                               f"{message}") from None
    return out
