"""Where canvascast keeps its state and caches.

``CANVASCAST_HOME`` overrides both (state in ``$CANVASCAST_HOME``, cache in
``$CANVASCAST_HOME/cache``); otherwise the XDG locations are used.
"""

from __future__ import annotations

import os
from pathlib import Path

from canvascast_cli import env


def state_dir() -> Path:
    home = os.environ.get(env.HOME)
    if home:
        return Path(home).expanduser()
    base = os.environ.get(env.XDG_STATE_HOME) or str(Path.home() / ".local" / "state")
    return Path(base) / "canvascast"


def cache_dir() -> Path:
    home = os.environ.get(env.HOME)
    if home:
        return Path(home).expanduser() / "cache"
    base = os.environ.get(env.XDG_CACHE_HOME) or str(Path.home() / ".cache")
    return Path(base) / "canvascast"
