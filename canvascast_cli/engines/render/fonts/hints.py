"""Which Debian/Ubuntu font packages have the characters no font here has (CJK, emoji,
other scripts)."""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence

from canvascast_cli.engines.render.fonts.clusters import codepoint
from canvascast_cli.engines.render.fonts.plan import MissingGlyph

_CJK = ((0x1100, 0x11FF), (0x2E80, 0x2FDF), (0x3000, 0x33FF), (0x3400, 0x4DBF),
        (0x4E00, 0x9FFF), (0xA960, 0xA97F), (0xAC00, 0xD7FF), (0xF900, 0xFAFF),
        (0xFE30, 0xFE4F), (0xFF00, 0xFFEF), (0x20000, 0x3FFFF))
_EMOJI = ((0x2300, 0x23FF), (0x2600, 0x27BF), (0x2B00, 0x2BFF), (0x1F000, 0x1FAFF))


def _kind(char: str) -> str:
    cp = ord(char)
    if any(lo <= cp <= hi for lo, hi in _CJK):
        return "cjk"
    if any(lo <= cp <= hi for lo, hi in _EMOJI):
        return "emoji"
    if unicodedata.category(char) in ("Co", "Cn"):
        return "unknown"  # private use or unassigned: no package has it
    return "other"


def install_hint(missing: Sequence[MissingGlyph]) -> str:
    """What to install for ``missing`` (Debian/Ubuntu package names)."""
    kinds: dict[str, list[str]] = {}
    for glyph in missing:
        kinds.setdefault(_kind(glyph.char), []).append(codepoint(glyph.char))
    parts = []
    for kind, package in (("cjk", "fonts-noto-cjk"), ("emoji", "fonts-symbola"),
                          ("other", "fonts-noto-core")):
        if kind in kinds:
            cps = kinds[kind]
            parts.append(f"{package} for {', '.join(cps[:4])}{', …' if len(cps) > 4 else ''}")
    if not parts:
        return "install a font that has them"
    note = ("; libass draws no colour emoji fonts such as fonts-noto-color-emoji"
            if "emoji" in kinds else "")
    return f"install fonts that have them (Debian/Ubuntu: {'; '.join(parts)}{note})"
