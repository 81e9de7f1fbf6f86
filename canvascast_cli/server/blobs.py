"""Content-addressed blobs: bytes stored under their sha256, written once, read by many.

The job API keeps every input (images, narration, music) and every result (videos,
transcripts, images) here, so an input is uploaded once and reused by every later job:
re-rendering after a caption edit uploads nothing. The layout is the wire format's
(``protocol.blob_path``).

Writing: bytes go to a temporary file in ``spool`` (the host's own disk) while they are
hashed, and only a complete, checked file is moved into the store — readers never see half
a blob, two writers of the same bytes are harmless, and on Modal nothing is open on the
Volume while it commits (``after_write``; a Volume reloads with ``before_read`` to see
other containers' blobs: it is not a network filesystem).

Retention: ``prune`` removes blobs by age (last use) and total size, never one a live job
uses (``keep``). The server runs it at start, after each stored result and on a timer.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from canvascast_cli.errors import IntegrityError, InvalidInput, NotFound, PayloadTooLarge
from canvascast_cli.protocol import CHUNK, blob_path, check_sha256

PARTIAL_PATTERNS = ("upload-*", "*.part")  # a spool's files while a blob is written


@dataclass(frozen=True)
class Pruned:
    removed: int
    freed_bytes: int
    kept_bytes: int


class BlobWriter:
    """One blob being written: ``write`` chunks, then ``finish`` (checked, moved into the
    store) or ``discard``. Used as a context manager, anything but a finish discards."""

    def __init__(self, store: BlobStore, *, expected: str | None, limit: int | None) -> None:
        self._store = store
        self._expected = check_sha256(expected) if expected is not None else None
        self._limit = limit
        self._digest = hashlib.sha256()
        self.size = 0
        fd, name = tempfile.mkstemp(dir=store.spool, prefix="upload-")
        self._path = Path(name)
        self._file = os.fdopen(fd, "wb")

    def __enter__(self) -> BlobWriter:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.discard()

    def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self._limit is not None and self.size > self._limit:
            raise PayloadTooLarge(f"blob larger than {self._limit:,} bytes")
        self._digest.update(chunk)
        self._file.write(chunk)

    def finish(self) -> tuple[str, int]:
        """Check the hash, move the file into the store; (sha256, size)."""
        self._file.close()
        sha = self._digest.hexdigest()
        if self._expected is not None and sha != self._expected:
            raise IntegrityError(f"the bytes received hash to {sha}, not {self._expected}")
        self._store._adopt(self._path, sha)
        return sha, self.size

    def discard(self) -> None:
        if not self._file.closed:
            self._file.close()
        self._path.unlink(missing_ok=True)


class BlobStore:
    def __init__(self, root: Path, *, spool: Path | None = None,
                 after_write: Callable[[], None] | None = None,
                 before_read: Callable[[], None] | None = None) -> None:
        self.root = Path(root)
        self.spool = Path(spool) if spool is not None else self.root / "tmp"
        (self.root / "blobs").mkdir(parents=True, exist_ok=True)
        (self.root / "tmp").mkdir(parents=True, exist_ok=True)
        self.spool.mkdir(parents=True, exist_ok=True)
        self._after_write = after_write
        self._before_read = before_read

    def commit(self) -> None:
        """Make what was written outside the blob calls (a result cache entry) visible to
        the store's other readers: a Modal Volume's commit; nothing for a plain folder."""
        if self._after_write is not None:
            self._after_write()

    def path(self, sha: str) -> Path:
        return self.root / blob_path(sha)

    def has(self, sha: str) -> bool:
        if self.path(sha).is_file():
            return True
        if self._before_read is not None:  # maybe committed by another container since
            self._before_read()
            return self.path(sha).is_file()
        return False

    def missing(self, shas: Iterable[str]) -> list[str]:
        wanted = list(dict.fromkeys(check_sha256(s, field="sha256[]") for s in shas))
        absent = [s for s in wanted if not self.path(s).is_file()]
        if absent and self._before_read is not None:
            self._before_read()
            absent = [s for s in absent if not self.path(s).is_file()]
        return absent

    def writer(self, *, expected: str | None = None, limit: int | None = None) -> BlobWriter:
        return BlobWriter(self, expected=expected, limit=limit)

    def put_chunks(self, chunks: Iterable[bytes], *, expected: str | None = None,
                   limit: int | None = None) -> tuple[str, int]:
        """Store a stream; its sha256 must equal ``expected`` when given. Returns
        (sha256, size). Over ``limit`` bytes: PayloadTooLarge, nothing stored."""
        with self.writer(expected=expected, limit=limit) as out:
            for chunk in chunks:
                out.write(chunk)
            return out.finish()

    def put_file(self, path: Path) -> tuple[str, int]:
        with path.open("rb") as fh:
            return self.put_chunks(iter(lambda: fh.read(CHUNK), b""))

    def put_bytes(self, data: bytes) -> tuple[str, int]:
        return self.put_chunks([data])

    def read(self, sha: str) -> Iterator[bytes]:
        path = self.path(sha)
        if not self.has(sha):
            raise NotFound(f"blob {sha} not found")
        with path.open("rb") as fh:
            while chunk := fh.read(CHUNK):
                yield chunk

    def size(self, sha: str) -> int:
        return self.path(sha).stat().st_size

    def touch(self, shas: Iterable[str]) -> None:
        """Mark blobs as used now (a job read them): retention counts from the last use."""
        now = time.time()
        for sha in shas:
            with contextlib.suppress(OSError, InvalidInput):  # gone, or not a blob
                os.utime(self.path(sha), (now, now))

    def prune(self, *, max_age: float | None, max_bytes: int | None,
              keep: Collection[str] = (), now: float | None = None) -> Pruned:
        """Remove blobs unused for ``max_age`` seconds, then the least recently used until
        the store holds at most ``max_bytes`` — never a blob in ``keep`` (the inputs and
        results of jobs that are queued or running)."""
        now = time.time() if now is None else now
        entries: list[tuple[float, int, Path, str]] = []
        for folder in (self.root / "blobs").glob("??"):
            for path in folder.iterdir():
                try:
                    info = path.stat()
                except OSError:
                    continue
                entries.append((info.st_mtime, info.st_size, path, path.name))
        entries.sort()  # oldest use first
        total = sum(size for _, size, _, _ in entries)
        removed = freed = 0
        for used, size, path, sha in entries:
            old = max_age is not None and now - used > max_age
            over = max_bytes is not None and total > max_bytes
            if not (old or over) or sha in keep:
                continue
            try:
                path.unlink()
            except OSError:
                continue
            removed, freed, total = removed + 1, freed + size, total - size
        if removed and self._after_write is not None:
            self._after_write()
        return Pruned(removed=removed, freed_bytes=freed, kept_bytes=total)

    def _adopt(self, tmp: Path, sha: str) -> None:
        """Move a complete temporary file into the store as blob ``sha``."""
        final = self.path(sha)
        final.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(tmp, final)  # the spool is on the store's filesystem
        except OSError:
            # Another filesystem (a local spool, a Volume store): copy beside the final
            # name, close, then rename, so the store never holds half a blob.
            staging = self.root / "tmp" / f"{sha}.{os.getpid()}.part"
            try:
                shutil.copyfile(tmp, staging)
                os.replace(staging, final)
            finally:
                staging.unlink(missing_ok=True)
                tmp.unlink(missing_ok=True)
        if self._after_write is not None:
            self._after_write()
