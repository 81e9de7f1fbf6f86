"""Caption text as fonts see it: clusters (a character with its combining marks, an emoji
with its modifiers and joiners: never split between two fonts), the characters that need
no glyph (whitespace, invisible format characters), and code point labels."""

from __future__ import annotations

import unicodedata


def needs_glyph(char: str) -> bool:
    """False for whitespace and invisible characters (controls, format characters such as
    joiners and direction marks, variation selectors): nothing is drawn for them."""
    cp = ord(char)
    if 0xFE00 <= cp <= 0xFE0F or 0xE0100 <= cp <= 0xE01EF or cp in (0x034F, 0x180E):
        return False
    return unicodedata.category(char) not in ("Cc", "Cf", "Zs", "Zl", "Zp")


def _extends(char: str, previous: str) -> bool:
    """Whether ``char`` belongs to the cluster ``previous`` ended (a simplified grapheme
    rule: combining marks, joiners, variation selectors, emoji modifiers and tags, an
    emoji after a joiner, a flag's second half)."""
    cp, last = ord(char), ord(previous[-1])
    if char.isspace():
        return False
    if unicodedata.category(char) in ("Mn", "Mc", "Me") or cp in (0x200C, 0x200D):
        return True
    if 0xFE00 <= cp <= 0xFE0F or 0xE0000 <= cp <= 0xE01EF or 0x1F3FB <= cp <= 0x1F3FF:
        return True
    if last == 0x200D:
        return True
    regional = range(0x1F1E6, 0x1F200)
    return cp in regional and last in regional and \
        sum(ord(c) in regional for c in previous) % 2 == 1


def clusters(text: str) -> list[str]:
    """``text`` cut where a font may change: never inside a character and its marks."""
    out: list[str] = []
    for char in text:
        if out and _extends(char, out[-1]):
            out[-1] += char
        else:
            out.append(char)
    return out


def codepoint(char: str) -> str:
    return f"U+{ord(char):04X}"
