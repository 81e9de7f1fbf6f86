"""The local result cache: entries under ``paths.cache_dir()/results``, capped in size.

Layout: ``<root>/<kind>/<key[:2]>/<key>/`` holding the result's files, ``entry.json``
(what they are: name -> sha256 and size, the result's own data, a label) and ``used``
(hit count; its modification time is the entry's last use).

- Written atomically: an entry is built in ``<root>/.tmp/<random>/`` and renamed into
  place in one step. When two processes store the same key at once the first rename
  wins; the other finds the folder there and discards its own. Readers never see half
  an entry.
- Verified before use: every file's sha256 is checked on lookup; an entry that fails
  (a changed, truncated or missing file, an unreadable entry.json) is evicted with a
  warning and the caller runs the job again.
- Capped: after each store (and on ``canvascast cache prune``) the least recently used
  entries go until the cache holds at most its cap (``[cache] max_gb``).
- Evicting renames the entry out of place first (to ``<root>/.trash``), so a reader
  either finds a whole entry or none.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from canvascast_cli.atomic import write_bytes
from canvascast_cli.cache.keys import KINDS

ENTRY = "entry.json"
USED = "used"
STALE_SECONDS = 3600.0  # a .tmp or .trash folder this old was left by a killed process
GB = 1024 ** 3


def results_dir() -> Path:
    from canvascast_cli.paths import cache_dir

    return cache_dir() / "results"


@dataclass(frozen=True)
class Entry:
    kind: str
    key: str
    path: Path
    files: dict[str, Path]
    sums: dict[str, tuple[str, int]]  # name -> (sha256, size) as stored
    data: dict[str, Any]
    label: str
    created: float
    size: int
    last_used: float
    hits: int

    @property
    def short(self) -> str:
        return self.key[:12]


@dataclass(frozen=True)
class Pruned:
    removed: int
    freed_bytes: int
    kept_bytes: int
    removed_keys: list[str] = field(default_factory=list)


class ResultCache:
    def __init__(self, root: Path | None = None, *, max_bytes: int | None = None,
                 warn: Callable[[str], None] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.root = Path(root) if root is not None else results_dir()
        self.max_bytes = max_bytes
        self._warn = warn or (lambda _m: None)
        self._clock = clock

    # -- reading ----------------------------------------------------------------------

    def folder(self, kind: str, key: str) -> Path:
        if kind not in KINDS:
            raise ValueError(f"unknown cache kind {kind!r}")
        if len(key) < 8 or not all(c in "0123456789abcdef" for c in key):
            raise ValueError(f"not a cache key: {key!r}")
        return self.root / kind / key[:2] / key

    def contains(self, kind: str, key: str) -> bool:
        return (self.folder(kind, key) / ENTRY).is_file()

    def lookup(self, kind: str, key: str) -> Entry | None:
        """The entry, every file's sha256 checked, marked as used; None when there is none
        (a corrupt one is evicted, with a warning)."""
        from canvascast_cli.protocol import sha256_file

        folder = self.folder(kind, key)
        try:
            entry = self._read(folder, kind, key)
        except FileNotFoundError:
            return None
        except (NotADirectoryError, PermissionError) as exc:  # the cache folder itself
            self._warn(f"cache: {self.root} cannot be used ({exc.strerror or exc}); "
                       "running the job without it")
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            self._corrupt(folder, kind, key, f"unreadable {ENTRY} ({exc})")
            return None
        if entry is None:
            return None
        for name, path in entry.files.items():
            want_sha, want_size = entry.sums[name]
            try:
                sha, size = sha256_file(path)
            except FileNotFoundError:
                if not folder.exists():  # evicted meanwhile by another process
                    return None
                self._corrupt(folder, kind, key, f"{name} is missing")
                return None
            if sha != want_sha or size != want_size:
                self._corrupt(folder, kind, key, f"{name} does not match its sha256")
                return None
        self._mark_used(folder, entry.hits + 1)
        return entry

    def entries(self, kind: str | None = None) -> list[Entry]:
        """Every readable entry (not verified), least recently used first."""
        found = []
        for k in ([kind] if kind else KINDS):
            for folder in sorted((self.root / k).glob("??/*")):
                with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
                    entry = self._read(folder, k, folder.name)
                    if entry is not None:
                        found.append(entry)
        return sorted(found, key=lambda e: (e.last_used, e.key))

    def _read(self, folder: Path, kind: str, key: str) -> Entry | None:
        meta = json.loads((folder / ENTRY).read_text(encoding="utf-8"))
        if meta.get("key") != key or meta.get("kind") != kind:
            raise ValueError("entry.json names another entry")
        files = {name: folder / name for name in meta["files"]}
        sums = {name: (str(f["sha256"]), int(f["size"])) for name, f in meta["files"].items()}
        size = sum(int(f["size"]) for f in meta["files"].values())
        try:
            used = folder / USED
            last_used = used.stat().st_mtime
            hits = int(used.read_text(encoding="utf-8").strip() or 0)
        except (OSError, ValueError):
            last_used, hits = float(meta.get("created", 0)), 0
        return Entry(kind=kind, key=key, path=folder, files=files, sums=sums,
                     data=dict(meta.get("data") or {}), label=str(meta.get("label", "")),
                     created=float(meta.get("created", 0)), size=size,
                     last_used=last_used, hits=hits)

    def _mark_used(self, folder: Path, hits: int) -> None:
        with contextlib.suppress(OSError):  # evicted meanwhile: nothing to mark
            write_bytes(folder / USED, f"{hits}\n".encode())
            now = self._clock()
            os.utime(folder / USED, (now, now))

    def _corrupt(self, folder: Path, kind: str, key: str, why: str) -> None:
        self._warn(f"cache: {kind} entry {key[:12]} is corrupt ({why}); evicted, running "
                   "the job again")
        self._evict(folder)

    # -- writing ----------------------------------------------------------------------

    def store(self, kind: str, key: str, files: Mapping[str, Path | bytes], *,
              data: Mapping[str, Any] | None = None, label: str = "") -> bool:
        """Keep ``files`` (name -> a file to copy, or bytes) as entry ``key``; True when
        this call's entry is the one kept (False: another process stored it first).
        Then the least recently used entries go until the cap holds."""
        try:
            return self._store(kind, key, files, data=data, label=label)
        except OSError as exc:  # a full or read-only disk: the job's result stands
            self._warn(f"cache: the {kind} result was not kept ({exc.strerror or exc}); "
                       "the job's output is written")
            return False

    def _store(self, kind: str, key: str, files: Mapping[str, Path | bytes], *,
               data: Mapping[str, Any] | None, label: str) -> bool:
        from canvascast_cli.protocol import sha256_file

        final = self.folder(kind, key)
        if (final / ENTRY).is_file():
            return False
        tmp_root = self.root / ".tmp"
        tmp_root.mkdir(parents=True, exist_ok=True)
        tmp = tmp_root / uuid.uuid4().hex
        tmp.mkdir()
        try:
            listed: dict[str, dict[str, Any]] = {}
            for name, source in files.items():
                if "/" in name or name in (ENTRY, USED) or name.startswith("."):
                    raise ValueError(f"bad cache file name {name!r}")
                target = tmp / name
                if isinstance(source, bytes):
                    target.write_bytes(source)
                else:
                    shutil.copyfile(source, target)
                sha, size = sha256_file(target)
                listed[name] = {"sha256": sha, "size": size}
            now = self._clock()
            (tmp / ENTRY).write_text(json.dumps({
                "kind": kind, "key": key, "created": now, "label": label,
                "files": listed, "data": dict(data or {})}, indent=1), encoding="utf-8")
            (tmp / USED).write_text("0\n", encoding="utf-8")
            os.utime(tmp / USED, (now, now))
            final.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.rename(tmp, final)  # atomic; fails when the folder is there already
            except OSError:
                if final.exists():
                    return False  # another writer won: ours is discarded below
                raise
            return True
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
            if self.max_bytes is not None:
                self.prune(self.max_bytes)

    # -- evicting ---------------------------------------------------------------------

    def total_bytes(self) -> int:
        return sum(e.size for e in self.entries())

    def prune(self, max_bytes: int) -> Pruned:
        """Evict least recently used entries until at most ``max_bytes`` are kept."""
        self._sweep()
        entries = self.entries()
        total = sum(e.size for e in entries)
        removed: list[str] = []
        freed = 0
        for entry in entries:  # least recently used first
            if total <= max_bytes:
                break
            if self._evict(entry.path):
                removed.append(entry.key)
                freed += entry.size
                total -= entry.size
        return Pruned(len(removed), freed, total, removed)

    def clear(self, kind: str | None = None) -> Pruned:
        entries = self.entries(kind)
        removed = [e for e in entries if self._evict(e.path)]
        self._sweep()
        return Pruned(len(removed), sum(e.size for e in removed),
                      self.total_bytes(), [e.key for e in removed])

    def _evict(self, folder: Path) -> bool:
        trash = self.root / ".trash"
        target = trash / uuid.uuid4().hex
        try:
            trash.mkdir(parents=True, exist_ok=True)
            os.rename(folder, target)  # out of place at once: readers see all or nothing
        except OSError:
            return False
        shutil.rmtree(target, ignore_errors=True)
        return True

    def _sweep(self) -> None:
        """Remove what killed processes left in .tmp and .trash."""
        now = time.time()
        for where in (self.root / ".tmp", self.root / ".trash"):
            if not where.is_dir():
                continue
            for item in where.iterdir():
                with contextlib.suppress(OSError):
                    if where.name == ".trash" or now - item.stat().st_mtime > STALE_SECONDS:
                        shutil.rmtree(item, ignore_errors=True)


def open_cache(settings: Any, *, warn: Callable[[str], None] | None = None) -> ResultCache:
    """The local cache with ``[cache] max_gb`` from ``settings`` (a ``Settings``)."""
    return ResultCache(max_bytes=int(settings.cache.max_gb * GB), warn=warn)


def restore(entry: Entry, name: str, dest: Path) -> None:
    """Copy file ``name`` of a verified entry to ``dest`` (a staged temporary path)."""
    shutil.copyfile(entry.files[name], dest)
