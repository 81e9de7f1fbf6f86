"""Files shipped with the package (fonts)."""

from __future__ import annotations

from pathlib import Path

FONTS_DIR = Path(__file__).resolve().parent / "fonts"
DEFAULT_FONT = FONTS_DIR / "DejaVuSans-Bold.ttf"
