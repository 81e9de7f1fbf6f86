"""Content-addressed blobs: bytes stored under their sha256, written once, read by many.

The job API keeps every input (images, narration, music) and every result (videos,
transcripts, images) here, so an input is uploaded once and reused by every later job:
re-rendering after a caption edit uploads nothing. A blob is written to a temporary name,
checked against its announced hash, then renamed into place — readers never see half a
blob, and two writers of the same bytes are harmless (the second rename replaces equal
bytes). On Modal the folder is a Volume: ``after_write`` commits it and ``before_read``
reloads it, so other containers see new blobs (a Volume is not a network filesystem).
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from canvascast_cli.errors import IntegrityError, InvalidInput, PayloadTooLarge

SHA256 = re.compile(r"^[0-9a-f]{64}$")
CHUNK = 1 << 20


def check_sha256(value: str, *, field: str = "sha256") -> str:
    if not isinstance(value, str) or not SHA256.match(value):
        raise InvalidInput(f"{field}: {str(value)[:80]!r} is not a sha256 (64 lower-case hex "
                           "digits)")
    return value


def sha256_file(path: Path) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


class BlobStore:
    def __init__(self, root: Path, *, after_write: Callable[[], None] | None = None,
                 before_read: Callable[[], None] | None = None) -> None:
        self.root = Path(root)
        (self.root / "blobs").mkdir(parents=True, exist_ok=True)
        (self.root / "tmp").mkdir(parents=True, exist_ok=True)
        self._after_write = after_write
        self._before_read = before_read

    def path(self, sha: str) -> Path:
        check_sha256(sha)
        return self.root / "blobs" / sha[:2] / sha

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

    def put_chunks(self, chunks: Iterable[bytes], *, expected: str | None = None,
                   limit: int | None = None) -> tuple[str, int]:
        """Store a stream; its sha256 must equal ``expected`` when given. Returns
        (sha256, size). Over ``limit`` bytes: PayloadTooLarge, nothing stored."""
        if expected is not None:
            check_sha256(expected)
        digest, size = hashlib.sha256(), 0
        fd, name = tempfile.mkstemp(dir=self.root / "tmp", prefix="upload-")
        tmp = Path(name)
        try:
            with os.fdopen(fd, "wb") as out:
                for chunk in chunks:
                    size += len(chunk)
                    if limit is not None and size > limit:
                        raise PayloadTooLarge(f"blob larger than {limit:,} bytes")
                    digest.update(chunk)
                    out.write(chunk)
            sha = digest.hexdigest()
            if expected is not None and sha != expected:
                raise IntegrityError(f"the bytes received hash to {sha}, not {expected}")
            final = self.path(sha)
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, final)
        finally:
            tmp.unlink(missing_ok=True)
        if self._after_write is not None:
            self._after_write()
        return sha, size

    def put_file(self, path: Path) -> tuple[str, int]:
        with path.open("rb") as fh:
            return self.put_chunks(iter(lambda: fh.read(CHUNK), b""))

    def put_bytes(self, data: bytes) -> tuple[str, int]:
        return self.put_chunks([data])

    def read(self, sha: str) -> Iterator[bytes]:
        path = self.path(sha)
        if not self.has(sha):
            raise InvalidInput(f"blob {sha} not found")
        with path.open("rb") as fh:
            while chunk := fh.read(CHUNK):
                yield chunk

    def size(self, sha: str) -> int:
        return self.path(sha).stat().st_size
