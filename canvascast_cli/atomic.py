"""Writing files so that a failure never leaves half of one: one mechanism for every output.

``staged(dest)`` gives a temporary path beside ``dest`` (same folder, so the final rename
is atomic); when the block succeeds the file is published at ``dest``, otherwise it is
removed. Without ``overwrite`` it is published with ``link()``, which refuses to replace
a file that appeared at ``dest`` meanwhile. The file gets the permissions a plain
``open()`` would give (``0o666`` less the umask), not ``mkstemp``'s private ``0o600``.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from canvascast_cli.errors import InvalidInput


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_MODE = 0o666 & ~_umask()  # read once: os.umask() cannot be read without setting it


@contextmanager
def staged(dest: Path, *, overwrite: bool = True, suffix: str = ".part") -> Iterator[Path]:
    """Yield a temporary path to write; publish it at ``dest`` if the block succeeds."""
    fd, name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=suffix)
    os.close(fd)
    tmp = Path(name)
    try:
        os.chmod(tmp, _MODE)
        yield tmp
        publish(tmp, dest, overwrite=overwrite)
    finally:
        tmp.unlink(missing_ok=True)


def publish(tmp: Path, dest: Path, *, overwrite: bool) -> None:
    if overwrite:
        os.replace(tmp, dest)
        return
    try:
        os.link(tmp, dest)  # never clobbers: fails if dest exists
    except FileExistsError:
        raise InvalidInput(f"{dest} appeared meanwhile; pass --overwrite to replace it"
                           ) from None
    except OSError:
        # A filesystem without hard links: check, then rename (a small race remains).
        if dest.exists():
            raise InvalidInput(f"{dest} appeared meanwhile; pass --overwrite to replace it"
                               ) from None
        os.replace(tmp, dest)
    else:
        tmp.unlink()


def write_bytes(dest: Path, data: bytes, *, overwrite: bool = True) -> None:
    with staged(dest, overwrite=overwrite) as tmp:
        tmp.write_bytes(data)
