"""Word-highlighted captions as an ASS script for libass (ffmpeg's ``subtitles`` filter).

Words are grouped into caption lines; each line is drawn by consecutive, non-overlapping
events: one per word, with that word in the highlight colour while it is spoken, and plain
events for the pauses between words. ASS's karaoke tags (``\\k``) are not used on purpose:
they leave every word already spoken lit, while CanvasCast highlights only the word being
spoken. Events never overlap in time, so libass never stacks a line on top of itself.

Caption text is escaped (``escape_ass_text``) so that braces, backslashes, commas, quotes,
newlines and any Unicode show as written and cannot open an override block or a line break.
Characters the caption font lacks are switched to the font chosen for them (``\\fn`` tags,
see the ``fonts`` package): libass would otherwise pick a fallback of its own, or draw a box.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from canvascast_cli.timeline import CaptionStyle, Word

# Keep the previous word lit across a pause shorter than this (no flicker between words).
BRIDGE_GAP = 0.25
# A pause longer than this starts a new caption line.
LINE_BREAK_GAP = 1.0
# How long a line stays up after its last word (unless the next line starts sooner).
LINGER = 0.6
# Sentence ends, Latin and CJK (full-width marks), optionally followed by closing quotes.
_SENTENCE_END = re.compile("[.!?\u2026\u3002\uff01\uff1f]['\")\\]\u00bb\u201d\u2019]*$")
# U+2060 WORD JOINER: invisible, and breaks a backslash's bond with the next character.
_WORD_JOINER = "\u2060"


def escape_ass_text(text: str) -> str:
    """Make ``text`` display literally inside an ASS Dialogue's Text field.

    libass treats ``{...}`` as an override block and ``\\N``, ``\\n``, ``\\h`` as breaks
    and hard spaces. Braces become ``\\{``/``\\}`` (libass's escapes); a backslash gets a
    word joiner after it so it can never combine with what follows. Control characters
    (newlines, tabs) become spaces. Commas need nothing: Text is the last field.
    """
    text = re.sub(r"[\x00-\x1f\x7f]+", " ", text)
    text = text.replace("\\", "\\" + _WORD_JOINER)
    return text.replace("{", "\\{").replace("}", "\\}")


def ass_color(color: str) -> str:
    """``#RRGGBB[AA]`` (AA = opacity) -> ASS ``&HAABBGGRR`` (AA = transparency)."""
    r, g, b = color[1:3], color[3:5], color[5:7]
    alpha = 255 - int(color[7:9], 16) if len(color) == 9 else 0
    return f"&H{alpha:02X}{b}{g}{r}".upper()


def ass_time(seconds: float) -> str:
    cs = max(0, round(seconds * 100))
    h, rem = divmod(cs, 360000)
    m, rem = divmod(rem, 6000)
    s, c = divmod(rem, 100)
    return f"{h}:{m:02d}:{s:02d}.{c:02d}"


@dataclass(frozen=True)
class Segment:
    """A stretch of time during which one caption line shows with one (or no) word lit."""

    start: float
    end: float
    words: tuple[str, ...]
    lit: int | None  # index into words, or None


def group_lines(words: Sequence[Word], max_words: int) -> list[list[Word]]:
    """Split words into caption lines: at most ``max_words``, breaking after a sentence
    end and at long pauses, so a line never straddles two thoughts."""
    lines: list[list[Word]] = []
    current: list[Word] = []
    for word in words:
        if current and (
            len(current) >= max_words
            or word.start - current[-1].end > LINE_BREAK_GAP
            or _SENTENCE_END.search(current[-1].word.strip())
        ):
            lines.append(current)
            current = []
        current.append(word)
    if current:
        lines.append(current)
    return lines


def segments(words: Sequence[Word], max_words: int) -> list[Segment]:
    """The non-overlapping display segments for ``words`` (sorted by start)."""
    words = [w for w in sorted(words, key=lambda w: (w.start, w.end)) if w.word.strip()]
    lines = group_lines(words, max_words)
    out: list[Segment] = []
    for n, line in enumerate(lines):
        texts = tuple(w.word.strip() for w in line)
        next_start = lines[n + 1][0].start if n + 1 < len(lines) else float("inf")
        line_end = max(line[-1].end, min(line[-1].end + LINGER, next_start))
        t = line[0].start
        for i, word in enumerate(line):
            following = line[i + 1].start if i + 1 < len(line) else line_end
            # Transcripts can overlap neighbouring words slightly: the next word wins.
            lit_end = min(max(word.end, word.start), following)
            if following - lit_end < BRIDGE_GAP:
                lit_end = following
            if word.start > t:
                out.append(Segment(t, word.start, texts, None))
            if lit_end > word.start:
                out.append(Segment(word.start, lit_end, texts, i))
            t = max(t, lit_end)
        if line_end > t:
            out.append(Segment(t, line_end, texts, None))
    return out


def _override(color: str) -> str:
    """An override block setting the fill colour and its transparency (``&HAABBGGRR``)."""
    return f"{{\\1c&H{color[4:]}&\\1a&H{color[2:4]}&}}"


FontRuns = Callable[[str], Sequence[tuple["str | None", str]]]


def _line_text(seg: Segment, highlight: str, base: str, font_runs: FontRuns | None,
               font_family: str) -> str:
    parts = []
    current = font_family
    for i, text in enumerate(seg.words):
        if font_runs is None:
            escaped = escape_ass_text(text)
        else:
            pieces = []
            for name, piece in font_runs(text):
                if name is not None and name != current:
                    pieces.append(f"{{\\fn{name}}}")
                    current = name
                pieces.append(escape_ass_text(piece))
            escaped = "".join(pieces)
        if i == seg.lit:
            escaped = f"{_override(highlight)}{escaped}{_override(base)}"
        parts.append(escaped)
    return " ".join(parts)


def build_ass(
    words: Sequence[Word],
    style: CaptionStyle,
    *,
    width: int,
    height: int,
    font_family: str,
    time_offset: float = 0.0,
    font_runs: FontRuns | None = None,
) -> str:
    """The whole ASS script. ``time_offset`` is subtracted from every time (frame ranges).

    ``font_runs(word)`` cuts a word into (font name, text) runs where characters need
    another font than the style's (``fonts.plan.FontPlan.runs``; a name of None keeps the
    current font); each switch is written as ``{\\fn<name>}``.
    """
    size = style.size or max(8, round(height * 0.06))
    outline = style.outline if style.outline is not None else max(1.0, size / 12)
    margin = style.margin if style.margin is not None else round(height * 0.07)
    alignment = {"bottom": 2, "center": 5, "top": 8}[style.position]
    primary, highlight = ass_color(style.color), ass_color(style.highlight_color)
    outline_color = ass_color(style.outline_color)
    side_margin = round(width * 0.05)
    header = [
        "[Script Info]",
        "; Made by canvascast: one event per word, only the spoken word highlighted.",
        "ScriptType: v4.00+",
        f"PlayResX: {width}",
        f"PlayResY: {height}",
        "WrapStyle: 0",
        "ScaledBorderAndShadow: yes",
        "YCbCr Matrix: TV.709",
        "",
        "[V4+ Styles]",
        "Format: Name, Fontname, Fontsize, PrimaryColour, SecondaryColour, OutlineColour, "
        "BackColour, Bold, Italic, Underline, StrikeOut, ScaleX, ScaleY, Spacing, Angle, "
        "BorderStyle, Outline, Shadow, Alignment, MarginL, MarginR, MarginV, Encoding",
        f"Style: Caption,{font_family},{size},{primary},{primary},{outline_color},&H80000000,"
        f"{-1 if style.bold else 0},0,0,0,100,100,0,0,1,{outline:g},0,{alignment},"
        # Encoding -1: libass finds each line's base direction from its text. With 1
        # (left to right) it lays out right-to-left words wrongly as soon as override
        # tags (the highlight) cut the line into runs, and the words move as the
        # highlight does.
        f"{side_margin},{side_margin},{margin},-1",
        "",
        "[Events]",
        "Format: Layer, Start, End, Style, Name, MarginL, MarginR, MarginV, Effect, Text",
    ]
    events = []
    for seg in segments(words, style.max_words_per_line):
        start, end = seg.start - time_offset, seg.end - time_offset
        if end <= 0:
            continue
        a, b = ass_time(max(0.0, start)), ass_time(end)
        if a == b:
            continue  # shorter than the centisecond ASS can express
        text = _line_text(seg, highlight, primary, font_runs, font_family)
        events.append(f"Dialogue: 0,{a},{b},Caption,,0,0,0,,{text}")
    return "\n".join(header + events) + "\n"
