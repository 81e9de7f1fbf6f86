"""What the render says about caption characters no font has: the problems (exit 2) and,
under ``--allow-missing-glyphs``, the warning; each names the characters and what to
install."""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence

from canvascast_cli.engines.render.fonts.clusters import codepoint
from canvascast_cli.engines.render.fonts.hints import install_hint
from canvascast_cli.engines.render.fonts.plan import FontPlan

# Characters a word may list before the message says "…" (and words a message lists).
_SHOW_CHARS, _SHOW_WORDS = 8, 10


def missing_problems(plan: FontPlan, texts: Sequence[str], field: str) -> list[str]:
    """The problems for characters no font has: one per word (the first few), then how
    to get them drawn."""
    chars = {g.char for g in plan.missing}
    words = sorted({n for g in plan.missing for n in g.words})
    problems = []
    for n in words[:_SHOW_WORDS]:
        lacking = [c for c in dict.fromkeys(texts[n]) if c in chars]
        shown = ", ".join(_show(c) for c in lacking[:_SHOW_CHARS])
        more = f" and {len(lacking) - _SHOW_CHARS} more" if len(lacking) > _SHOW_CHARS else ""
        problems.append(f"{field}[{n}] ({texts[n].strip()!r}): no font here has "
                        f"{shown}{more}")
    if len(words) > _SHOW_WORDS:
        count = len(plan.missing)
        problems.append(f"{field}: {len(words) - _SHOW_WORDS} more words have characters "
                        f"no font here has ({count} character{'s' * (count != 1)} in all)")
    problems.append(f"captions.style.font: to draw them, {install_hint(plan.missing)}, or "
                    "add a font file that has them to the style's font list (\"font\": "
                    "[\"DejaVu Sans\", \"fonts/NotoSansJP.otf\"]); or render them as empty "
                    "boxes with --allow-missing-glyphs")
    return problems


def missing_warning(plan: FontPlan) -> str:
    shown = ", ".join(f"{_show(g.char)} ({len(g.words)} word{'s' * (len(g.words) != 1)})"
                      for g in plan.missing[:_SHOW_CHARS])
    more = f" and {len(plan.missing) - _SHOW_CHARS} more" if \
        len(plan.missing) > _SHOW_CHARS else ""
    return (f"{len(plan.missing)} caption character{'s' * (len(plan.missing) != 1)} have no "
            f"font here and show as empty boxes: {shown}{more}; to draw them, "
            f"{install_hint(plan.missing)}")


def _show(char: str) -> str:
    """``U+65E5 日``; a mark is shown on a dotted circle, an invisible one by its name."""
    if unicodedata.category(char) in ("Mn", "Mc", "Me"):
        return f"{codepoint(char)} \u25cc{char}"
    category = unicodedata.category(char)
    if category in ("Co", "Cn"):
        return f"{codepoint(char)} ({'private use' if category == 'Co' else 'unassigned'})"
    if category[0] in "CZ":
        return f"{codepoint(char)} {unicodedata.name(char, '')}".rstrip()
    return f"{codepoint(char)} {char}"
