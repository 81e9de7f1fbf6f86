"""The font plan: the face that draws each caption cluster (the first of the style's fonts,
the bundled one, the installed ones that has all of it), the ASS runs that switch to it,
the characters no font has, and the problems with the style's font list."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from canvascast_cli.engines.render.fonts.clusters import clusters, needs_glyph
from canvascast_cli.engines.render.fonts.discovery import InstalledFonts
from canvascast_cli.engines.render.fonts.faces import (
    FONT_SUFFIXES,
    Face,
    FontFileError,
    bundled_face,
    read_faces,
    usable_font_name,
)

_KEEP = "keep"  # a piece needing no glyph: drawn in whatever font is current
Piece = tuple["Face | str | None", str]  # (face, _KEEP, or None = no font has it; text)


@dataclass(frozen=True)
class MissingGlyph:
    char: str
    words: tuple[int, ...]  # indices of the caption words that have it


@dataclass(frozen=True)
class FontPlan:
    """Which face draws each caption character; what the render installs and writes."""

    primary: Face  # the caption font (the ASS style's)
    chain: tuple[Face, ...]  # the style's fonts, then the bundled one
    installed: InstalledFonts
    missing: tuple[MissingGlyph, ...] = ()
    warnings: tuple[str, ...] = ()
    _routes: dict[str, tuple[Piece, ...]] = field(default_factory=dict, repr=False)
    _runs: dict[str, list[tuple[str | None, str]]] = field(default_factory=dict, repr=False)

    @property
    def primary_name(self) -> str:
        return self.primary.ass_name or "DejaVu Sans"

    @property
    def faces(self) -> list[Face]:
        """The primary face and every face some character is routed to (files to install)."""
        out = [self.primary]
        for pieces in self._routes.values():
            for face, _ in pieces:
                if isinstance(face, Face) and all(face is not f for f in out):
                    out.append(face)
        return out

    def route(self, cluster: str) -> tuple[Piece, ...]:
        """The face for ``cluster``, or per character when no face has all of it."""
        pieces = self._routes.get(cluster)
        if pieces is None:
            pieces = self._routes[cluster] = self._find(cluster)
        return pieces

    def _find(self, cluster: str) -> tuple[Piece, ...]:
        if not any(needs_glyph(c) for c in cluster):
            return ((_KEEP, cluster),)
        face = self._first(cluster)
        if face is not None or len(cluster) == 1:
            return ((face, cluster),)
        return tuple((self._first(c) if needs_glyph(c) else _KEEP, c) for c in cluster)

    def _first(self, cluster: str) -> Face | None:
        for face in self.chain:
            if face.covers(cluster):
                return face
        for face in self.installed.faces():
            if face.drawable and face.ass_name and face.covers(cluster):
                return face
        return None

    def runs(self, text: str) -> list[tuple[str | None, str]]:
        """``text`` as (ASS font name, piece) runs; a leading name of None keeps the font
        that is current (the piece needs no glyph)."""
        cached = self._runs.get(text)
        if cached is not None:
            return cached
        out: list[list[Any]] = []
        for cluster in clusters(text):
            for face, piece in self.route(cluster):
                if isinstance(face, str):  # _KEEP
                    name = out[-1][0] if out else None
                elif isinstance(face, Face):
                    name = face.ass_name
                else:
                    name = self.primary_name  # no font has it: libass draws a box
                if out and out[-1][0] == name:
                    out[-1][1] += piece
                else:
                    out.append([name, piece])
        result = [(name, piece) for name, piece in out]
        self._runs[text] = result
        return result


def plan_fonts(texts: Sequence[str], fonts: Sequence[str], base_dir: Path, *,
               bold: bool = True, field: str = "captions.style.font",
               installed: InstalledFonts | None = None) -> tuple[FontPlan, list[str]]:
    """Route every character of ``texts`` (the caption words) to a face.

    Returns the plan and the problems with the style's fonts (a file missing or not a
    font, a colour font). Characters no face has are in ``plan.missing``.
    """
    installed = installed or InstalledFonts(bold=bold)
    problems: list[str] = []
    warnings: list[str] = []
    chain: list[Face] = []
    bundled = bundled_face()
    for i, ref in enumerate(fonts):
        where = field if len(fonts) == 1 else f"{field}[{i}]"
        face, problem, warning = _style_face(ref, base_dir, bundled, installed, where)
        if problem:
            problems.append(problem)
        if warning:
            warnings.append(warning)
        if face is not None:
            chain.append(face)
    primary = chain[0] if chain else bundled
    if all(not (f.path == bundled.path and f.index == 0) for f in chain):
        chain.append(bundled)
    plan = FontPlan(primary=primary, chain=tuple(chain), installed=installed)

    by_char: dict[str, list[int]] = {}
    lacking: dict[str, list[str]] = {}
    for n, text in enumerate(texts):
        chars = lacking.get(text)
        if chars is None:
            chars = lacking[text] = [
                c for cluster in clusters(text) for face, piece in plan.route(cluster)
                if face is None for c in piece if needs_glyph(c)]
        for char in dict.fromkeys(chars):
            by_char.setdefault(char, []).append(n)
    missing = tuple(MissingGlyph(c, tuple(w)) for c, w in sorted(by_char.items()))
    return replace(plan, missing=missing, warnings=tuple(warnings)), problems


def _style_face(ref: str, base_dir: Path, bundled: Face, installed: InstalledFonts,
                where: str) -> tuple[Face | None, str | None, str | None]:
    """(face, problem, warning) for one entry of the style's font list."""
    if not ref.lower().endswith(FONT_SUFFIXES):
        if not usable_font_name(ref):
            return None, (f"{where}: {ref!r} cannot contain commas, braces, backslashes or "
                          "control characters"), None
        if bundled.matches(ref):
            return bundled.named(ref), None, None
        face = installed.family(ref)
        if face is None:
            return None, None, (
                f"{where}: no font family {ref!r} is installed here; its place is taken by "
                "the next font (install it, or name its file)")
        if not face.drawable:
            return None, _colour_problem(where, repr(ref)), None
        return face.named(ref), None, None
    path = Path(ref).expanduser()
    path = path if path.is_absolute() else base_dir / path
    if path.is_dir():
        return None, f"{where}: {path} is a folder, not a font file", None
    if not path.is_file():
        return None, f"{where}: font file not found: {path}", None
    try:
        face = read_faces(path, origin="file", all_faces=False)[0]
    except (FontFileError, IndexError) as exc:
        return None, f"{where}: {path} is not a font file ({exc})", None
    if not face.drawable:
        return None, _colour_problem(where, str(path)), None
    if face.ass_name is None:
        return None, (f"{where}: {path} has no name libass can be given (its names contain "
                      "commas, braces or backslashes)"), None
    return face, None, None


def _colour_problem(where: str, what: str) -> str:
    return (f"{where}: {what} is a colour or bitmap font, and libass draws outline fonts "
            "only; for emoji use a monochrome one such as Symbola (Debian: fonts-symbola)")
