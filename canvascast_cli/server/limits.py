"""What the job API lets clients take: body sizes, spool space, stored bytes over time.

- ``Limits``: a JSON body (16 MiB: a 10,000-scene timeline fits), one upload (4 GiB), and
  all uploads in flight together (``max_spool_bytes``): endless uploads cannot fill the
  server's disk, the one over the budget is refused with 429 and a Retry-After.
- ``Janitor``: retention of the blob store (``[retention]`` in modal.toml): at start and
  after uploads, at most every ``interval`` seconds, blobs unused for ``max_age`` go, then
  the least recently used until the store fits ``max_bytes`` — never a blob that a queued
  or running job reads (``keep``).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from canvascast_cli.errors import PayloadTooLarge, RateLimited

GIB = 1024 ** 3
Message = dict[str, Any]


@dataclass(frozen=True)
class Limits:
    max_json_bytes: int = 16 * 1024 * 1024
    max_blob_bytes: int = 4 * GIB
    max_spool_bytes: int = 8 * GIB


class SpoolBudget:
    """Bytes of uploads in flight, all requests together."""

    RETRY_AFTER = 10.0  # seconds a refused upload is asked to wait

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._lock = threading.Lock()

    def take(self, size: int) -> None:
        """Reserve ``size`` more bytes, or RateLimited when that would pass the budget."""
        if size > self.limit:
            raise PayloadTooLarge(f"an upload of {size:,} bytes is over the server's "
                                  f"{self.limit:,}-byte spool")
        with self._lock:
            if self.used + size > self.limit:
                raise RateLimited(f"the server is receiving {self.used:,} bytes of uploads "
                                  "already; try again shortly", retry_after=self.RETRY_AFTER)
            self.used += size

    def give(self, size: int) -> None:
        with self._lock:
            self.used = max(0, self.used - size)


class Janitor:
    """Prunes a blob store now and then (see the module docstring)."""

    def __init__(self, store: Any, keep: Callable[[], set[str]], *, max_age: float,
                 max_bytes: int, interval: float = 600.0,
                 clock: Callable[[], float] = time.monotonic,
                 note: Callable[[str], None] | None = None) -> None:
        self.store = store
        self.keep = keep
        self.max_age = max_age
        self.max_bytes = max_bytes
        self.interval = interval
        self.clock = clock
        self.note = note
        self._last: float | None = None
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, store: Any, keep: Callable[[], set[str]], settings: Any,
                      **options: Any) -> Janitor:
        retention = settings.retention
        return cls(store, keep, max_age=retention.blobs_days * 86400,
                   max_bytes=int(retention.blobs_max_gb * 1e9),
                   interval=retention.prune_interval, **options)

    def start(self) -> None:
        self.maybe_prune(force=True)

    def maybe_prune(self, *, force: bool = False) -> Any:
        """Prune if ``interval`` has passed since the last prune (or ``force``)."""
        now = self.clock()
        with self._lock:
            if not force and self._last is not None and now - self._last < self.interval:
                return None
            self._last = now
            pruned = self.store.prune(max_age=self.max_age, max_bytes=self.max_bytes,
                                      keep=self.keep())
        if pruned.removed and self.note is not None:
            self.note(f"blob store: removed {pruned.removed} blob(s), "
                      f"{pruned.freed_bytes / 1e6:.1f} MB freed; "
                      f"{pruned.kept_bytes / 1e6:.1f} MB kept")
        return pruned


class BodyLimit:
    """ASGI middleware: request bodies over ``limit`` bytes are refused with 413 in the
    job API's envelope — at once when Content-Length says so, else when the bytes read
    pass it (then as an HTTP 413 exception, which the app's handler answers). Requests
    for which ``exempt(method, path)`` is true (blob uploads, which have their own cap)
    are left to their route."""

    def __init__(self, app: Any, *, limit: int, exempt: Callable[[str, str], bool]) -> None:
        self.app = app
        self.limit = limit
        self.exempt = exempt

    async def __call__(self, scope: Message, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or self.exempt(scope["method"], scope["path"]):
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or ()).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.limit:
            from canvascast_cli.protocol import envelope

            body = json.dumps(envelope(error=PayloadTooLarge(
                f"a request body of {int(declared):,} bytes; at most {self.limit:,}"))).encode()
            await send({"type": "http.response.start", "status": 413, "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = dict(await receive())
            seen += len(message.get("body", b""))
            if seen > self.limit:
                from starlette.exceptions import HTTPException

                raise HTTPException(413, f"request body over {self.limit:,} bytes")
            return message

        await self.app(scope, counted, send)
