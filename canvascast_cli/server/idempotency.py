"""``Idempotency-Key``: one key, one job.

A client sends the same key with every retry of one submission, so a reply lost on the
way back never starts a second job (the IETF draft "The Idempotency-Key HTTP Header
Field"). Here that holds atomically: requests racing with one key get one job; a request
that reuses a key for a different body or function is refused (422
IDEMPOTENCY_CONFLICT), never answered with the first job.

``MemoryKeys`` serves one process (`canvascast serve`); the Modal app keeps its keys in
a ``modal.Dict`` so every web container agrees (``modal_functions/app.py``).
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from canvascast_cli.errors import IdempotencyConflict, InvalidInput

KEY_MAX = 200  # characters of a key


class IdempotencyKeys(Protocol):
    def submit(self, key: str, fingerprint: str, create: Callable[[], str]) -> str:
        """The job id for ``key``: made by ``create()`` the first time, the same id for
        every later request with this key and ``fingerprint``."""
        ...


def fingerprint(function: str, body: bytes) -> str:
    """What a request is, for comparing two under one key: its function and its body."""
    return hashlib.sha256(function.encode() + b"\0" + body).hexdigest()


def check_key(key: str) -> str:
    if len(key) > KEY_MAX or not key.isprintable():
        raise InvalidInput(f"Idempotency-Key: at most {KEY_MAX} printable characters")
    return key


def conflict(key: str) -> IdempotencyConflict:
    return IdempotencyConflict(f"Idempotency-Key {key[:40]!r} was used for a different "
                               "request (another function or body); use a new key for a "
                               "new job")


@dataclass
class _Entry:
    fingerprint: str
    lock: threading.Lock = field(default_factory=threading.Lock)
    job_id: str | None = None


class MemoryKeys:
    """Keys of this process, the newest ``keep`` of them."""

    def __init__(self, keep: int = 10_000) -> None:
        self.keep = keep
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, _Entry] = OrderedDict()

    def submit(self, key: str, fingerprint: str, create: Callable[[], str]) -> str:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                entry = self._entries[key] = _Entry(fingerprint)
                while len(self._entries) > self.keep:
                    self._entries.popitem(last=False)
        if entry.fingerprint != fingerprint:
            raise conflict(key)
        with entry.lock:  # a racing request with this key waits for the first one
            if entry.job_id is None:
                entry.job_id = create()  # if it fails, the next request tries again
            return entry.job_id
