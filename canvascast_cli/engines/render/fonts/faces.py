"""A font file's faces: the name libass matches each by, whether libass can draw it (outlines,
no colour tables), which clusters it covers; read with fontTools (imported on first
read) and memoised per file for the life of the process. Also the bundled face, whose
description ships beside this module (``bundled_face.json``): reading it with fontTools
costs ~0.2 s of every captioned render's start-up, before the first frame."""

from __future__ import annotations

import functools
import hashlib
import json
import unicodedata
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from canvascast_cli.assets import DEFAULT_FONT
from canvascast_cli.engines.render.fonts.clusters import needs_glyph
from canvascast_cli.engines.render.fonts.coverage import Coverage

FONT_SUFFIXES = (".ttf", ".otf", ".ttc", ".otc")
BOLD_WEIGHT, REGULAR_WEIGHT = 700, 400
# Unusable in an ASS font name: a comma ends a Style field, braces and a backslash end or
# open an override block.
_BAD_NAME_CHARS = frozenset(",{}\\")


class Face:
    """One face of a font file: the names libass knows it by, and what it covers.

    ``coverage`` may be given as a function, called the first time it is needed (parsing
    the character sets of hundreds of installed fonts costs more than listing them).
    """

    def __init__(self, path: Path, index: int, *, families: Sequence[str], fullname: str,
                 psname: str, postscript: bool, weight: int, italic: bool, drawable: bool,
                 coverage: Coverage | Callable[[], Coverage], origin: str,
                 ass_name: str | None = None) -> None:
        self.path, self.index = path, index
        self.families = tuple(families)
        self.fullname, self.psname, self.postscript = fullname, psname, postscript
        self.weight, self.italic, self.drawable = weight, italic, drawable
        self.origin = origin  # "file" (the style names it), "bundled", "installed"
        self._coverage = coverage
        self._names = {n.casefold() for n in (*self.families, fullname, psname) if n}
        self.ass_name = ass_name or self._default_ass_name()

    def _default_ass_name(self) -> str | None:
        # libass, like GDI, picks one face exactly by its full name (TrueType outlines) or
        # its PostScript name (CFF outlines; it ignores a TrueType font's PostScript name
        # and a CFF font's full name); a family name leaves it to choose among the faces.
        exact = self.psname if self.postscript else self.fullname
        for name in (exact, *self.families):
            if usable_font_name(name):
                return name
        return None

    @property
    def coverage(self) -> Coverage:
        if not isinstance(self._coverage, Coverage):
            self._coverage = self._coverage()
        return self._coverage

    def named(self, ass_name: str) -> Face:
        """This face, written in the ASS script as ``ass_name`` (a family name the style
        gave, so libass still picks the bold or regular face of that family)."""
        return Face(self.path, self.index, families=self.families, fullname=self.fullname,
                    psname=self.psname, postscript=self.postscript, weight=self.weight,
                    italic=self.italic,
                    drawable=self.drawable, coverage=self._coverage, origin=self.origin,
                    ass_name=ass_name)

    def matches(self, name: str) -> bool:
        return name.casefold() in self._names

    def covers(self, cluster: str) -> bool:
        """Whether this face draws all of ``cluster`` (also in its composed form: shaping
        composes e + U+0301 into é where the font has é)."""
        cov = self.coverage
        if all(ord(c) in cov for c in cluster if needs_glyph(c)):
            return True
        composed = unicodedata.normalize("NFC", cluster)
        return composed != cluster and all(ord(c) in cov for c in composed if needs_glyph(c))

    @property
    def label(self) -> str:
        name = self.fullname or (self.families[0] if self.families else self.path.name)
        return f"{name} ({self.path})" if self.origin != "bundled" else f"{name} (bundled)"

    def __repr__(self) -> str:
        return f"Face({self.path}#{self.index}, {self.ass_name!r})"


def usable_font_name(name: str) -> bool:
    """Whether ``name`` can be written in an ASS Style line and a ``\\fn`` tag."""
    return bool(name.strip()) and not any(c in _BAD_NAME_CHARS or ord(c) < 32 for c in name)


class FontFileError(Exception):
    """A file is not a font fontTools can read."""


def read_faces(path: Path, *, origin: str, all_faces: bool = True) -> list[Face]:
    """The faces in a font file (several in a .ttc), read with fontTools; memoised by path,
    size and mtime for the life of the process."""
    try:
        stat = path.stat()
    except OSError as exc:
        raise FontFileError(exc.strerror or str(exc)) from None
    key = (str(path), stat.st_size, stat.st_mtime_ns, all_faces)
    cached = _FILE_FACES.get(key)
    if cached is None:
        cached = [_face_record(r) for r in read_records(path, all_faces=all_faces)]
        _FILE_FACES[key] = cached
    return [Face(Path(r["path"]), r["index"], families=r["families"],
                 fullname=r["fullname"], psname=r["psname"], postscript=r["postscript"],
                 weight=r["weight"], italic=r["italic"], drawable=r["drawable"],
                 coverage=r["coverage"], origin=origin) for r in cached]


_FILE_FACES: dict[tuple[str, int, int, bool], list[dict[str, Any]]] = {}


def _face_record(record: dict[str, Any]) -> dict[str, Any]:
    return {**record, "coverage": Coverage(record["ranges"])}


def read_records(path: Path, *, all_faces: bool) -> list[dict[str, Any]]:
    """Plain (JSON-able) descriptions of a font file's faces."""
    from fontTools.ttLib import TTCollection, TTFont

    try:
        with path.open("rb") as fh:
            collection = fh.read(4) == b"ttcf"
        if not collection:
            with TTFont(str(path), lazy=True) as font:
                return [_describe(font, path, 0)]
        with TTCollection(str(path), lazy=True) as ttc:
            fonts = ttc.fonts if all_faces else ttc.fonts[:1]
            return [_describe(font, path, i) for i, font in enumerate(fonts)]
    except Exception as exc:  # fontTools raises anything on a file that is not a font
        raise FontFileError(str(exc) or type(exc).__name__) from None


def _describe(font: Any, path: Path, index: int) -> dict[str, Any]:
    def names(*ids: int) -> list[str]:
        out: list[str] = []
        records = font["name"].names if "name" in font else []
        # Windows and Unicode names first (what libass reads), Mac names if there are none.
        for platforms in ((3, 0), (1,)):
            for rec in records:
                if rec.nameID in ids and rec.platformID in platforms:
                    try:
                        text = rec.toUnicode().strip()
                    except UnicodeDecodeError:
                        continue
                    if text and text not in out:
                        out.append(text)
            if out:
                break
        return out

    os2 = font.get("OS/2")
    weight = int(getattr(os2, "usWeightClass", REGULAR_WEIGHT) or REGULAR_WEIGHT)
    if os2 is not None:
        italic = bool(os2.fsSelection & 1)
    else:
        italic = bool(font["head"].macStyle & 2) if "head" in font else False
    postscript = any(tag in font for tag in ("CFF ", "CFF2"))
    outlines = postscript or "glyf" in font
    colour = any(tag in font for tag in ("COLR", "CBDT", "sbix"))
    cmap = font.getBestCmap() or {}
    return {
        "path": str(path), "index": index, "families": names(1, 16),
        "fullname": (names(4) or [""])[0], "psname": (names(6) or [""])[0],
        "postscript": postscript,
        "weight": weight, "italic": italic, "drawable": outlines and not colour,
        "ranges": Coverage.of(cmap).ranges(),
    }


def bundled_face() -> Face:
    """The bundled DejaVu Sans Bold: always a fallback, and the default caption font."""
    record = _bundled_record()
    if record is None:  # the font file is not the one the record describes
        return read_faces(DEFAULT_FONT, origin="bundled")[0]
    return Face(DEFAULT_FONT, record["index"], families=record["families"],
                fullname=record["fullname"], psname=record["psname"],
                postscript=record["postscript"], weight=record["weight"],
                italic=record["italic"], drawable=record["drawable"],
                coverage=record["coverage"], origin="bundled")


BUNDLED_RECORD = Path(__file__).with_name("bundled_face.json")


@functools.cache
def _bundled_record() -> dict[str, Any] | None:
    """``read_records``' description of the bundled face, from ``BUNDLED_RECORD``; None
    unless it was made from the bundled font file as it is (its SHA-256)."""
    try:
        shipped = json.loads(BUNDLED_RECORD.read_text(encoding="utf-8"))
        digest = hashlib.sha256(DEFAULT_FONT.read_bytes()).hexdigest()
    except (OSError, ValueError):
        return None
    if shipped.get("sha256") != digest:
        return None
    return _face_record(shipped["face"])


def write_bundled_record() -> None:
    """Write ``BUNDLED_RECORD`` from the bundled font file (after changing that file)."""
    face = read_records(DEFAULT_FONT, all_faces=False)[0]
    del face["path"]  # where the package is installed: filled in when read
    digest = hashlib.sha256(DEFAULT_FONT.read_bytes()).hexdigest()
    BUNDLED_RECORD.write_text(json.dumps({"sha256": digest, "face": face}) + "\n",
                              encoding="utf-8")
