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


def check_destination(dest: Path, *, overwrite: bool, what: str = "output",
                      suffixes: tuple[str, ...] = ()) -> Path:
    """Check, before any work, that ``dest`` can be written; return it absolute.

    Refused (InvalidInput, exit 2): ``-`` (a file is written, not a stream), a name with
    the wrong extension, an existing file without ``overwrite``, a folder, a missing
    parent folder, and a folder that cannot be written (read-only filesystem, no
    permission) — found by creating and removing a temporary file there, so a long job
    never fails at its very end.
    """
    if str(dest) == "-":
        raise InvalidInput(f"{what}: '-' (stdout) is not supported; give a file name"
                           + (f" ending in {' or '.join(suffixes)}" if suffixes else ""))
    dest = dest.expanduser().absolute()
    if suffixes and dest.suffix.lower() not in suffixes:
        raise InvalidInput(f"{what}: {dest.name} must end in {' or '.join(suffixes)} "
                           f"(the file written is {suffixes[0].lstrip('.').upper()})")
    if dest.is_dir():
        raise InvalidInput(f"{what}: {dest} is a folder; give a file name")
    if dest.exists() and not overwrite:
        raise InvalidInput(f"{what}: {dest} already exists; pass --overwrite to replace it")
    if not dest.parent.is_dir():
        raise InvalidInput(f"{what}: output folder {dest.parent} does not exist")
    check_writable(dest.parent, what=what)
    return dest


def check_writable(folder: Path, *, what: str = "output") -> None:
    try:
        fd, name = tempfile.mkstemp(dir=folder, prefix=".canvascast-check.")
    except OSError as exc:
        raise InvalidInput(f"{what}: cannot write in {folder}: "
                           f"{exc.strerror or exc}") from None
    os.close(fd)
    os.unlink(name)


def write_bytes(dest: Path, data: bytes, *, overwrite: bool = True) -> None:
    with staged(dest, overwrite=overwrite) as tmp:
        tmp.write_bytes(data)
