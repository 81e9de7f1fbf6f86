"""Draft cards made with Pillow: drafts and demos with no GPU, no key, no network.

Each card is a gradient in the style's palette with soft shapes (seeded, so the same
prompt, seed and style give the same card), the scene number, and the prompt as sent.
"""

from __future__ import annotations

import io
import random
import textwrap
from functools import lru_cache

from canvascast_cli.assets import DEFAULT_FONT
from canvascast_cli.engines.images.base import ImageRequest, ImageResult
from canvascast_cli.engines.images.style import DEFAULT_PALETTE


class PlaceholderProvider:
    name = "placeholder"
    model = "placeholder-card-v1"
    supports_negative_prompt = False

    def __init__(self, palette: list[str] | None = None) -> None:
        self.palette = palette or DEFAULT_PALETTE

    def cost_per_image(self, request: ImageRequest) -> float | None:
        return 0.0

    def generate(self, batch: list[ImageRequest]) -> list[ImageResult]:
        return [self._card(request) for request in batch]

    def _card(self, request: ImageRequest) -> ImageResult:
        from PIL import Image, ImageDraw, ImageFilter

        rng = random.Random(request.seed)
        width, height = request.width, request.height
        colors = [_rgb(c) for c in self.palette]
        top, bottom = rng.sample(colors, 2) if len(colors) >= 2 else (colors[0], colors[0])
        card = Image.linear_gradient("L").resize((width, height))
        card = Image.composite(Image.new("RGB", (width, height), bottom),
                               Image.new("RGB", (width, height), top), card)
        shapes = Image.new("RGBA", (width, height), (0, 0, 0, 0))
        draw = ImageDraw.Draw(shapes)
        for _ in range(6):
            r = rng.randint(min(width, height) // 8, min(width, height) // 3)
            x, y = rng.randint(0, width), rng.randint(0, height)
            draw.ellipse((x - r, y - r, x + r, y + r), fill=(*rng.choice(colors), 90))
        shapes = shapes.filter(ImageFilter.GaussianBlur(max(2, min(width, height) // 40)))
        card = Image.alpha_composite(card.convert("RGBA"), shapes)

        draw = ImageDraw.Draw(card)
        unit = max(8, min(width, height) // 18)
        big, small = _font(unit * 2), _font(unit)
        margin = unit
        draw.text((margin, margin), f"{request.index + 1:02d}", font=big, fill="white",
                  stroke_width=max(1, unit // 10), stroke_fill="black")
        chars = max(12, int((width - 2 * margin) / (unit * 0.6)))
        lines = textwrap.wrap(request.prompt, chars)[: max(1, (height - 5 * unit) // unit)]
        draw.multiline_text((margin, margin + 3 * unit), "\n".join(lines), font=small,
                            fill="white", spacing=unit // 4, stroke_width=max(1, unit // 12),
                            stroke_fill="black")
        draw.text((width - margin, height - margin), "DRAFT · placeholder", anchor="rb",
                  font=_font(max(8, unit * 2 // 3)), fill=(255, 255, 255, 200))
        out = io.BytesIO()
        card.convert("RGB").save(out, format="PNG", optimize=False)
        return ImageResult(request.index, out.getvalue(), "image/png",
                           details={"card": "placeholder"})


@lru_cache(maxsize=16)
def _font(size: int):  # type: ignore[no-untyped-def]
    from PIL import ImageFont

    return ImageFont.truetype(str(DEFAULT_FONT), size)


def _rgb(color: str) -> tuple[int, int, int]:
    return int(color[1:3], 16), int(color[3:5], 16), int(color[5:7], 16)
