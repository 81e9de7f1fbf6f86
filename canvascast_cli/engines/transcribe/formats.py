"""Transcript -> JSON, SRT, WebVTT or plain text.

Subtitle cues are built from word timings, following common broadcast guidance: at most
two lines of at most 42 characters, at most 7 seconds, a new cue after a sentence ends
or a pause of more than a second. Without word timings the segments are used as cues.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass

from canvascast_cli.engines.transcribe.result import Transcript, Word
from canvascast_cli.records import dump

FORMATS = ("json", "srt", "vtt", "txt")
MAX_LINE_CHARS = 42
MAX_LINES = 2
MAX_CUE_SECONDS = 7.0
PAUSE_BREAK = 1.0
_SENTENCE_END = re.compile("[.!?\u2026][\"')\\]\u201d\u2019]*$")


@dataclass(frozen=True)
class Cue:
    start: float
    end: float
    lines: tuple[str, ...]


def render_transcript(transcript: Transcript, fmt: str) -> str:
    if fmt == "json":
        return json.dumps(dump(transcript), indent=1, ensure_ascii=False) + "\n"
    if fmt == "txt":
        return "\n".join(s.text.strip() for s in transcript.segments if s.text.strip()) + "\n"
    cues = build_cues(transcript)
    if fmt == "srt":
        return srt(cues)
    if fmt == "vtt":
        return vtt(cues)
    raise ValueError(f"unknown format {fmt!r}; allowed: {', '.join(FORMATS)}")


def build_cues(transcript: Transcript) -> list[Cue]:
    if transcript.words:
        return cues_from_words(transcript.words)
    return [Cue(s.start, s.end, tuple(_wrap(s.text.strip().split())))
            for s in transcript.segments if s.text.strip()]


def cues_from_words(words: Sequence[Word]) -> list[Cue]:
    cues: list[Cue] = []
    current: list[Word] = []

    def flush() -> None:
        if current:
            cues.append(Cue(current[0].start, current[-1].end,
                            tuple(_wrap([w.word for w in current]))))
            current.clear()

    for word in words:
        if current:
            candidate = [w.word for w in current] + [word.word]
            too_long = len(_wrap(candidate)) > MAX_LINES
            too_slow = word.end - current[0].start > MAX_CUE_SECONDS
            paused = word.start - current[-1].end > PAUSE_BREAK
            sentence_done = bool(_SENTENCE_END.search(current[-1].word))
            if too_long or too_slow or paused or sentence_done:
                flush()
        current.append(word)
    flush()
    return cues


def _wrap(tokens: Sequence[str]) -> list[str]:
    """Greedy wrap at MAX_LINE_CHARS (a single longer word gets a line of its own)."""
    lines: list[str] = []
    line = ""
    for token in tokens:
        if line and len(line) + 1 + len(token) > MAX_LINE_CHARS:
            lines.append(line)
            line = token
        else:
            line = f"{line} {token}" if line else token
    if line:
        lines.append(line)
    return lines


def _timestamp(seconds: float, sep: str) -> str:
    ms = max(0, round(seconds * 1000))
    h, rem = divmod(ms, 3_600_000)
    m, rem = divmod(rem, 60_000)
    s, ms = divmod(rem, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def srt(cues: Sequence[Cue]) -> str:
    blocks = []
    for i, cue in enumerate(cues, 1):
        text = "\n".join(line.replace("-->", "->") for line in cue.lines)
        blocks.append(f"{i}\n{_timestamp(cue.start, ',')} --> {_timestamp(cue.end, ',')}\n"
                      f"{text}\n")
    return "\n".join(blocks)


def vtt(cues: Sequence[Cue]) -> str:
    blocks = ["WEBVTT\n"]
    for cue in cues:
        # WebVTT cue text is HTML-like: escape &, <, > so words show as spoken.
        text = "\n".join(line.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
                         .replace("-->", "->") for line in cue.lines)
        blocks.append(f"{_timestamp(cue.start, '.')} --> {_timestamp(cue.end, '.')}\n{text}\n")
    return "\n".join(blocks)
