"""SIGTERM and SIGHUP end a run the way Ctrl-C does: cleanly, nothing half-written.

Python turns SIGINT into ``KeyboardInterrupt``; ``terminating_signals`` makes SIGTERM
(``kill``, systemd, a CI runner cancelling) and SIGHUP (a closed terminal) raise
``Terminated``, a ``KeyboardInterrupt`` subclass, so every cleanup path written for
Ctrl-C — temporary files removed, ffmpeg killed, threads stopped — serves them too.
The exit status is 128 + the signal's number (130, 143, 129), as shells report it.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

HANDLED = (signal.SIGTERM, signal.SIGHUP)


class Terminated(KeyboardInterrupt):
    """Raised in the main thread when SIGTERM or SIGHUP arrives."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def signal_number(exc: BaseException) -> int:
    """The signal behind a KeyboardInterrupt (SIGINT unless it is a ``Terminated``)."""
    return getattr(exc, "signum", signal.SIGINT)


@contextmanager
def terminating_signals() -> Iterator[None]:
    """Within the block, SIGTERM/SIGHUP raise ``Terminated`` once; a repeat is ignored so
    the cleanup the first one started can finish. Outside the main thread: no change."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    fired = False

    def handler(signum: int, _frame: FrameType | None) -> None:
        nonlocal fired
        if fired:
            return
        fired = True
        raise Terminated(signum)

    previous = {sig: signal.signal(sig, handler) for sig in HANDLED}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
