"""Styles: the seed's ``style: dict`` made explicit, validated, with built-in presets.

A style wraps every prompt (prefix, suffix), adds a negative prompt where the provider
supports one, and may set the aspect ratio or size, a base seed and a palette (used by the
placeholder provider). A style file is JSON; ``preset`` names a built-in style to start
from, and the file's other fields override it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from canvascast_cli.errors import InvalidInput

AspectRatio = Literal["16:9", "9:16", "1:1", "4:3", "3:4", "3:2", "2:3", "21:9", "4:5", "5:4"]
ASPECT_RATIOS: tuple[str, ...] = AspectRatio.__args__  # type: ignore[attr-defined]
MIN_SIDE, MAX_SIDE = 64, 4096
_SIZE = re.compile(r"^(\d+)x(\d+)$")


class StyleConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    preset: str | None = Field(None, description="Built-in style to start from.")
    prefix: str = Field("", max_length=2000, description="Text put before every prompt.")
    suffix: str = Field("", max_length=2000, description="Text put after every prompt.")
    negative_prompt: str | None = Field(
        None, max_length=2000, description="What to avoid (providers that support it).")
    aspect_ratio: AspectRatio | None = None
    size: str | None = Field(None, description="WxH in pixels; overrides aspect_ratio.")
    seed: int | None = Field(None, ge=0, le=2**31 - 1)
    palette: list[str] = Field(
        default_factory=list, description="#RRGGBB colours (placeholder cards).")

    @field_validator("size")
    @classmethod
    def _size(cls, value: str | None) -> str | None:
        if value is not None:
            parse_size(value)
        return value

    @field_validator("palette")
    @classmethod
    def _palette(cls, value: list[str]) -> list[str]:
        for color in value:
            if not re.fullmatch(r"#[0-9A-Fa-f]{6}", color):
                raise ValueError(f"{color!r} is not a #RRGGBB colour")
        return value

    def apply(self, prompt: str) -> str:
        """``prefix prompt, suffix``: the prefix reads into the prompt ("watercolor
        painting of ..."), the suffix is a list of qualities."""
        text = " ".join(p for p in (self.prefix.strip(), prompt.strip()) if p)
        return ", ".join(p for p in (text, self.suffix.strip()) if p)


PRESETS: dict[str, StyleConfig] = {
    "cinematic": StyleConfig(
        prefix="cinematic film still of", suffix="dramatic lighting, shallow depth of field, "
        "35mm, rich colour grading", negative_prompt="text, watermark, logo, blurry, "
        "low quality, deformed", aspect_ratio="16:9",
        palette=["#1B263B", "#415A77", "#E0A458", "#F4F1DE"]),
    "watercolor": StyleConfig(
        prefix="soft watercolor painting of", suffix="loose brush strokes, paper texture, "
        "gentle pastel palette", negative_prompt="photo, 3d render, text, watermark",
        aspect_ratio="16:9", palette=["#A8DADC", "#F1FAEE", "#E63946", "#457B9D"]),
    "flat": StyleConfig(
        prefix="flat vector illustration of", suffix="clean shapes, bold limited palette, "
        "minimal, no gradients", negative_prompt="photo, realistic, text, watermark, noise",
        aspect_ratio="16:9", palette=["#264653", "#2A9D8F", "#E9C46A", "#F4A261"]),
    "photo": StyleConfig(
        prefix="professional photograph of", suffix="natural light, high detail, sharp "
        "focus", negative_prompt="illustration, painting, cartoon, text, watermark, "
        "deformed", aspect_ratio="16:9", palette=["#2B2D42", "#8D99AE", "#EDF2F4", "#D90429"]),
    "storybook": StyleConfig(
        prefix="children's storybook illustration of", suffix="warm colours, whimsical, "
        "gouache texture", negative_prompt="photo, scary, text, watermark",
        aspect_ratio="16:9", palette=["#FFB4A2", "#E5989B", "#B5838D", "#6D6875"]),
}
DEFAULT_PALETTE = ["#22223B", "#4A4E69", "#9A8C98", "#C9ADA7"]


def parse_size(text: str) -> tuple[int, int]:
    match = _SIZE.match(text.strip().lower())
    if not match:
        raise ValueError(f"{text!r} is not WxH (e.g. 1920x1080)")
    width, height = int(match[1]), int(match[2])
    if not (MIN_SIDE <= width <= MAX_SIDE and MIN_SIDE <= height <= MAX_SIDE):
        raise ValueError(f"{width}x{height} is out of range: each side {MIN_SIDE} to "
                         f"{MAX_SIDE} px")
    return width, height


def preset(name: str) -> StyleConfig:
    if name not in PRESETS:
        raise InvalidInput(f"--preset: unknown style {name!r}; built-in: "
                           f"{', '.join(sorted(PRESETS))}")
    return PRESETS[name]


def load_style(path: Path) -> StyleConfig:
    """A style file: JSON, validated; ``preset`` in it starts from a built-in style."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InvalidInput(f"--style: {path}: file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"--style: {path}: cannot read ({exc})") from None
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"--style: {path}: not valid JSON (line {exc.lineno}, column "
                           f"{exc.colno}: {exc.msg})") from None
    if not isinstance(data, dict):
        raise InvalidInput(f"--style: {path}: must be a JSON object")
    try:
        style = StyleConfig.model_validate(data)
    except ValidationError as exc:
        details = []
        for err in exc.errors(include_url=False):
            loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
            message = "unknown field" if err["type"] == "extra_forbidden" else \
                err["msg"].removeprefix("Value error, ")
            details.append(f"{loc}: {message}")
        raise InvalidInput(f"--style: {path}: {len(details)} problem(s)", details=details
                           ) from None
    if style.preset is None:
        return style
    base = preset(style.preset)
    overrides = style.model_dump(exclude_unset=True, exclude={"preset"})
    return base.model_copy(update={**overrides, "preset": style.preset})


def resolve_size(style: StyleConfig, size: str | None, aspect: str | None,
                 default_long_side: int) -> tuple[int, int, str]:
    """(width, height, aspect ratio) from the flags, else the style, else 16:9.

    Sizes are rounded to multiples of 8 (diffusion models need them; nothing else cares).
    """
    ratio = aspect or style.aspect_ratio or "16:9"
    if aspect is not None and aspect not in ASPECT_RATIOS:
        raise InvalidInput(f"--aspect: {aspect!r}; allowed: {', '.join(ASPECT_RATIOS)}")
    chosen = size or (style.size if aspect is None else None)
    if chosen is not None:
        try:
            width, height = parse_size(chosen)
        except ValueError as exc:
            raise InvalidInput(f"--size: {exc}") from None
        return width, height, _nearest_ratio(width, height)
    w_part, h_part = (int(x) for x in ratio.split(":"))
    if w_part >= h_part:
        width, height = default_long_side, round(default_long_side * h_part / w_part)
    else:
        width, height = round(default_long_side * w_part / h_part), default_long_side
    return _round8(width), _round8(height), ratio


def _round8(value: float) -> int:
    return max(MIN_SIDE, 8 * round(value / 8))


def _nearest_ratio(width: int, height: int) -> str:
    def distance(r: str) -> float:
        a, b = (int(x) for x in r.split(":"))
        return abs(a / b - width / height)

    return min(ASPECT_RATIOS, key=distance)
