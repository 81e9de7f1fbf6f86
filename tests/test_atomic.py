"""The one way outputs are written: whole or not at all, with normal permissions."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from canvascast_cli.atomic import staged, write_bytes
from canvascast_cli.errors import InvalidInput


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_published_with_umask_permissions_not_mkstemps(tmp_path: Path) -> None:
    umask = os.umask(0)
    os.umask(umask)
    write_bytes(tmp_path / "a.bin", b"data")
    assert (tmp_path / "a.bin").read_bytes() == b"data"
    assert _mode(tmp_path / "a.bin") == 0o666 & ~umask


def test_failure_leaves_nothing(tmp_path: Path) -> None:
    folder = tmp_path / "out"
    folder.mkdir()
    with pytest.raises(RuntimeError), staged(folder / "b.bin") as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("boom")
    assert list(folder.iterdir()) == []


def test_no_overwrite_refuses_a_file_that_appeared(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    dest = tmp_path / "out" / "c.bin"
    with pytest.raises(InvalidInput, match="appeared meanwhile"), \
            staged(dest, overwrite=False) as tmp:
        tmp.write_bytes(b"new")
        dest.write_bytes(b"someone else's")
    assert dest.read_bytes() == b"someone else's"
    assert [p.name for p in dest.parent.iterdir()] == ["c.bin"]
    with staged(dest, overwrite=True) as tmp:
        tmp.write_bytes(b"new")
    assert dest.read_bytes() == b"new"
