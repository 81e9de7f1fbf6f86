"""The fonts installed here, in preference order: the fallbacks after the style's fonts.

They come from one ``fc-match -a`` call (every font fontconfig knows, in its order for
sans-serif, each with its character set: ~35 ms for 320 fonts), or, where fontconfig's
tools are missing, from the font files in the usual folders, read with fontTools (3-4 s
for 320 faces, once) and cached in the cache dir by path, size and mtime (then ~100 ms).
They are read only when the style's fonts and the bundled one miss a character or the
style names a family that is not bundled. Only fonts with outlines and no colour tables
count: the fonts libass can draw.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from functools import partial
from pathlib import Path
from typing import Any

from canvascast_cli.atomic import write_bytes
from canvascast_cli.engines.render.fonts.coverage import Coverage
from canvascast_cli.engines.render.fonts.faces import (
    BOLD_WEIGHT,
    FONT_SUFFIXES,
    REGULAR_WEIGHT,
    Face,
    FontFileError,
    read_records,
)
from canvascast_cli.paths import cache_dir

FC_TIMEOUT = 60.0  # seconds for fc-match (it may build its cache on a first run)
_CACHE_VERSION = 2


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
                    records = read_records(Path(path), all_faces=True)
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
