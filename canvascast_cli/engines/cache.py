"""Models a long-lived host keeps loaded between jobs.

A Whisper model or a diffusers pipeline takes seconds to load and gigabytes to hold; a
host that runs many jobs in one process — a Modal container, a ``canvascast serve``
worker — keeps one ``ModelCache`` for its life and hands it to every job, so only its
first job pays for the load. A single CLI run passes none and loads what it needs once.
The engines ask the cache by a key that says everything the loaded object depends on
(model file, compute type, threads), so two jobs share a model only when it would have
been loaded the same.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

T = TypeVar("T")


class ModelCache:
    def __init__(self) -> None:
        self._items: dict[Hashable, Any] = {}
        self._lock = threading.Lock()

    def get(self, key: Hashable, load: Callable[[], T]) -> T:
        """The object cached under ``key``, loading it with ``load()`` the first time.
        Loads run one at a time, so two jobs never load the same model twice."""
        with self._lock:
            if key not in self._items:
                self._items[key] = load()
            return self._items[key]

    def __contains__(self, key: Hashable) -> bool:
        return key in self._items

    def __len__(self) -> int:
        return len(self._items)


def load(cache: ModelCache | None, key: Hashable, loader: Callable[[], T]) -> T:
    """``cache.get(key, loader)``, or just ``loader()`` without a cache."""
    return loader() if cache is None else cache.get(key, loader)
