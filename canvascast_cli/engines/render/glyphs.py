"""Caption glyphs: the font that draws each character, chosen and checked before rendering.

Left to itself, libass draws a character the caption font lacks with a fallback that its
fontconfig picks among the fonts *fontconfig* knows — never a file in the private
``fontsdir`` a render hands it (those are used only when the script names them), and
never a colour-bitmap font such as Noto Color Emoji (libass draws outlines only). A
character no such font has becomes an empty box, and nothing says so. So canvascast
chooses instead, while the inputs are resolved:

1. Each caption word is cut into clusters (a base character with its combining marks, an
   emoji with its modifiers and joiners), and each cluster goes to the first font of a
   chain that has all of it: the style's fonts in order (files, or family names: the
   bundled DejaVu Sans, else an installed family), the bundled DejaVu Sans Bold, then the
   installed fonts. Whitespace and invisible format characters need no glyph.
2. Clusters no font has are reported with their words and code points (exit 2), unless
   the render allows them (``--allow-missing-glyphs``): then they are listed and left to
   libass, which draws boxes.
3. The render puts every chosen font's file in the ``fontsdir`` and switches to it in the
   ASS text (``{\\fn<full name>}``, or the PostScript name of a CFF font: the names libass
   matches to exactly one face), so what was checked is what libass draws, whatever the
   ffmpeg's own fontconfig can see.

Installed fonts come from one ``fc-match -a`` call (every font fontconfig knows, in its
order for sans-serif, each with its character set: ~35 ms for 320 fonts), or, where
fontconfig's tools are missing, from the font files in the usual folders, read with
fontTools (3-4 s for 320 faces, once) and cached in the cache dir by path, size and mtime
(then ~100 ms). They are read only when the style's fonts and the bundled one miss a
character or the style names a family that is not bundled. Only fonts with outlines and
no colour tables count: the fonts libass can draw.
"""

from __future__ import annotations

import bisect
import itertools
import json
import os
import shutil
import subprocess
import sys
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

from canvascast_cli.assets import DEFAULT_FONT
from canvascast_cli.atomic import write_bytes
from canvascast_cli.paths import cache_dir

FONT_SUFFIXES = (".ttf", ".otf", ".ttc", ".otc")
BOLD_WEIGHT, REGULAR_WEIGHT = 700, 400
FC_TIMEOUT = 60.0  # seconds for fc-match (it may build its cache on a first run)
_CACHE_VERSION = 2
# Characters a word may list before the message says "…" (and words a message lists).
_SHOW_CHARS, _SHOW_WORDS = 8, 10
# Unusable in an ASS font name: a comma ends a Style field, braces and a backslash end or
# open an override block.
_BAD_NAME_CHARS = frozenset(",{}\\")


# ---------------------------------------------------------------------------------------
# Characters and clusters


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


# ---------------------------------------------------------------------------------------
# Coverage and faces


class Coverage:
    """A set of code points as sorted inclusive ranges (a CJK font's 45,000 are ~250)."""

    __slots__ = ("_ends", "_starts")

    def __init__(self, ranges: Iterable[Sequence[int]]) -> None:
        pairs = sorted((int(r[0]), int(r[1])) for r in ranges)
        self._starts = [a for a, _ in pairs]
        self._ends = [b for _, b in pairs]

    def __contains__(self, cp: object) -> bool:
        if not isinstance(cp, int):
            return False
        i = bisect.bisect_right(self._starts, cp) - 1
        return i >= 0 and cp <= self._ends[i]

    @classmethod
    def of(cls, codepoints: Iterable[int]) -> Coverage:
        ranges: list[list[int]] = []
        for cp in sorted(set(codepoints)):
            if ranges and cp == ranges[-1][1] + 1:
                ranges[-1][1] = cp
            else:
                ranges.append([cp, cp])
        return cls(ranges)

    @classmethod
    def parse_fontconfig(cls, text: str) -> Coverage:
        """fontconfig's charset text: ``20-7e a0-17f 2010`` (ascending: no sort needed)."""
        pairs = []
        for token in text.split():
            lo, _, hi = token.partition("-")
            try:
                pairs.append((int(lo, 16), int(hi or lo, 16)))
            except ValueError:
                continue
        if any(a[0] >= b[0] for a, b in itertools.pairwise(pairs)):
            return cls(pairs)
        coverage = cls(())
        coverage._starts = [a for a, _ in pairs]
        coverage._ends = [b for _, b in pairs]
        return coverage

    def ranges(self) -> list[list[int]]:
        return [[a, b] for a, b in zip(self._starts, self._ends, strict=True)]


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
        cached = [_face_record(r) for r in _read_records(path, all_faces=all_faces)]
        _FILE_FACES[key] = cached
    return [Face(Path(r["path"]), r["index"], families=r["families"],
                 fullname=r["fullname"], psname=r["psname"], postscript=r["postscript"],
                 weight=r["weight"], italic=r["italic"], drawable=r["drawable"],
                 coverage=r["coverage"], origin=origin) for r in cached]


_FILE_FACES: dict[tuple[str, int, int, bool], list[dict[str, Any]]] = {}


def _face_record(record: dict[str, Any]) -> dict[str, Any]:
    return {**record, "coverage": Coverage(record["ranges"])}


def _read_records(path: Path, *, all_faces: bool) -> list[dict[str, Any]]:
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
    return read_faces(DEFAULT_FONT, origin="bundled")[0]


# ---------------------------------------------------------------------------------------
# Installed fonts


FC_FORMAT = ("%{file}\t%{index}\t%{family}\t%{fullname}\t%{postscriptname}\t%{fontformat}\t"
             "%{slant}\t%{outline}\t%{color}\t%{charset}\n")


def font_dirs() -> list[Path]:
    """Where fonts are installed, for machines without fontconfig's tools."""
    home = Path.home()
    data = Path(os.environ.get("XDG_DATA_HOME") or home / ".local" / "share")
    dirs = [Path("/usr/share/fonts"), Path("/usr/local/share/fonts"), home / ".fonts",
            data / "fonts"]
    if sys.platform == "darwin":
        dirs += [Path("/System/Library/Fonts"), Path("/Library/Fonts"), home / "Library/Fonts"]
    elif sys.platform == "win32":
        dirs += [Path(os.environ.get("WINDIR", r"C:\Windows")) / "Fonts"]
    return dirs


def fc_match_exe() -> str | None:
    return shutil.which("fc-match")


class InstalledFonts:
    """The fonts installed here, in preference order; listed once, on first use."""

    def __init__(self, *, bold: bool) -> None:
        self.bold = bold
        self._faces: list[Face] | None = None
        self.source = ""  # "fontconfig" or "font folders", once listed

    def faces(self) -> list[Face]:
        if self._faces is None:
            exe = fc_match_exe()
            faces = _fontconfig_faces(exe, self.bold) if exe else None
            if faces is not None:
                self.source = "fontconfig"
            else:
                faces, self.source = _scanned_faces(self.bold), "font folders"
            self._faces = faces
        return self._faces

    def family(self, name: str) -> Face | None:
        """The face libass would pick for family ``name`` (the first in preference order:
        fontconfig sorts the wanted weight first), or None when none is installed."""
        named = [f for f in self.faces() if f.matches(name)]
        return next((f for f in named if f.drawable), named[0] if named else None)


def _fontconfig_faces(exe: str, bold: bool) -> list[Face] | None:
    """Every font fontconfig knows, sorted as for the caption's weight of sans-serif (the
    order libass's own fallback follows); None if fc-match fails."""
    weight = 200 if bold else 80  # fontconfig's scale: bold, regular
    try:
        done = subprocess.run(
            [exe, "-a", f"sans-serif:weight={weight}:slant=0", "--format", FC_FORMAT],
            capture_output=True, timeout=FC_TIMEOUT, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    if done.returncode != 0:
        return None
    faces = []
    for line in done.stdout.decode("utf-8", "surrogateescape").splitlines():
        parts = line.split("\t")
        if len(parts) != 10 or not parts[0]:
            continue
        file, index, family, fullname, psname, fmt, slant, outline, colour, charset = parts
        if not file.lower().endswith(FONT_SUFFIXES):
            continue  # Type 1, bitmap .pcf ...: libass draws none of them
        faces.append(Face(
            Path(file), int(index) if index.isdigit() else 0,
            families=[f for f in family.split(",") if f],
            fullname=fullname.split(",")[0], psname=psname, postscript=fmt == "CFF",
            weight=BOLD_WEIGHT if bold else REGULAR_WEIGHT,  # fc-match prints the request's
            italic=slant not in ("", "0"),
            drawable=outline == "True" and colour != "True",
            coverage=partial(Coverage.parse_fontconfig, charset),
            origin="installed"))
    return faces


def _scanned_faces(bold: bool) -> list[Face]:
    """Font files in ``font_dirs()``, read with fontTools, cached by path, size, mtime."""
    cache_path = cache_dir() / "fonts" / "faces.json"
    try:
        cache = json.loads(cache_path.read_text(encoding="utf-8"))
        if cache.get("version") != _CACHE_VERSION:
            cache = {}
    except (OSError, ValueError):
        cache = {}
    known: dict[str, Any] = cache.get("files") or {}
    files: dict[str, Any] = {}
    for folder in font_dirs():
        for root, _dirs, names in os.walk(folder):
            for name in sorted(names):
                if not name.lower().endswith(FONT_SUFFIXES):
                    continue
                path = os.path.join(root, name)
                try:
                    stat = os.stat(path)
                except OSError:
                    continue
                entry = known.get(path)
                if entry and entry["size"] == stat.st_size and \
                        entry["mtime_ns"] == stat.st_mtime_ns:
                    files[path] = entry
                    continue
                try:
                    records = _read_records(Path(path), all_faces=True)
                except FontFileError:
                    records = []
                files[path] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
                               "faces": records}
    if files != known:
        try:
            cache_path.parent.mkdir(parents=True, exist_ok=True)
            write_bytes(cache_path, json.dumps({"version": _CACHE_VERSION, "files": files},
                                               separators=(",", ":")).encode())
        except OSError:
            pass  # a read-only cache only costs the next run the scan again
    wanted = BOLD_WEIGHT if bold else REGULAR_WEIGHT
    records = [r for entry in files.values() for r in entry["faces"]]
    records.sort(key=lambda r: (r["italic"], abs(r["weight"] - wanted), r["path"], r["index"]))
    return [Face(Path(r["path"]), r["index"], families=r["families"], fullname=r["fullname"],
                 psname=r["psname"], postscript=r["postscript"], weight=r["weight"],
                 italic=r["italic"],
                 drawable=r["drawable"], coverage=partial(Coverage, r["ranges"]),
                 origin="installed") for r in records]


# ---------------------------------------------------------------------------------------
# The plan


_KEEP = "keep"  # a piece needing no glyph: drawn in whatever font is current
Piece = tuple["Face | str | None", str]  # (face, _KEEP, or None = no font has it; text)


@dataclass(frozen=True)
class MissingGlyph:
    char: str
    words: tuple[int, ...]  # indices of the caption words that have it

    def to_dict(self) -> dict[str, Any]:
        return {"codepoint": codepoint(self.char), "char": self.char,
                "words": len(self.words)}


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


# ---------------------------------------------------------------------------------------
# Messages


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
