"""Running ffmpeg: which binary, progress from ``-progress``, failures as FFmpegError.

Arguments are always passed as a list (never a shell string), and filter arguments never
contain user-supplied paths: files the filtergraph reads (the ASS script, fonts) are placed
in a private working directory and named relatively, so nothing needs filter escaping.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import errno
import fcntl
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Generic, TypeVar

import numpy as np

from canvascast_cli import env
from canvascast_cli.errors import FFmpegError, InvalidInput

FFMPEG_ENV = env.FFMPEG
T = TypeVar("T")
_TAIL_LINES = 15


def ffmpeg_exe(explicit: str | None = None) -> str:
    """The ffmpeg to run: ``explicit``, else ``$CANVASCAST_FFMPEG``, else imageio-ffmpeg's
    static build (ffmpeg 9 with libx264 and libass)."""
    chosen = explicit or os.environ.get(FFMPEG_ENV)
    if chosen:
        path = Path(chosen).expanduser()
        if not (path.is_file() and os.access(path, os.X_OK)):
            origin = "--ffmpeg" if explicit else FFMPEG_ENV
            raise InvalidInput(f"{origin}: {chosen} is not an executable file")
        return str(path)
    try:
        import imageio_ffmpeg
    except ImportError:  # pragma: no cover - the render extra installs it
        raise InvalidInput(
            "no ffmpeg: install the render extra (pip install 'canvascast[render]') or set "
            f"{FFMPEG_ENV} to an ffmpeg with libx264 and libass") from None
    return str(imageio_ffmpeg.get_ffmpeg_exe())


class FFmpegProcess:
    """An ffmpeg child whose stdin we feed, whose ``-progress`` we parse on stdout and
    whose stderr we keep the last lines of (for the error message)."""

    def __init__(
        self,
        args: Sequence[str],
        *,
        cwd: Path | None = None,
        on_progress: Callable[[dict[str, str]], None] | None = None,
    ) -> None:
        self.args = list(args)
        self._tail: collections.deque[str] = collections.deque(maxlen=_TAIL_LINES)
        self._on_progress = on_progress
        self.proc = subprocess.Popen(
            self.args,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=cwd,
            bufsize=0,
        )
        assert self.proc.stdout is not None and self.proc.stderr is not None
        _widen_pipe(self.proc.stdin)
        self._readers = [
            threading.Thread(target=self._read_progress, args=(self.proc.stdout,), daemon=True),
            threading.Thread(target=self._read_stderr, args=(self.proc.stderr,), daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    @property
    def stdin(self) -> IO[bytes]:
        assert self.proc.stdin is not None
        return self.proc.stdin

    def _read_progress(self, stream: IO[bytes]) -> None:
        block: dict[str, str] = {}
        for raw in stream:
            key, _, value = raw.decode("utf-8", "replace").strip().partition("=")
            block[key] = value
            if key == "progress":  # each block ends with progress=continue|end
                if self._on_progress is not None:
                    self._on_progress(block)
                block = {}

    def _read_stderr(self, stream: IO[bytes]) -> None:
        for raw in stream:
            line = raw.decode("utf-8", "replace").rstrip()
            if line:
                self._tail.append(line)

    def finish(self) -> None:
        """Close stdin, wait, and raise FFmpegError (with stderr's last lines) on failure."""
        with contextlib.suppress(BrokenPipeError):
            self.stdin.close()
        code = self.proc.wait()
        for reader in self._readers:
            reader.join(timeout=5)
        if code != 0:
            raise self.error(code)

    def error(self, code: int | None = None) -> FFmpegError:
        code = self.proc.poll() if code is None else code
        tail = list(self._tail) or ["(ffmpeg printed nothing on stderr)"]
        return FFmpegError(f"ffmpeg failed (exit status {code}); its last lines:", details=tail)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for reader in self._readers:
            reader.join(timeout=5)


def pipe_capacity(stream: IO[bytes]) -> int:
    """Bytes the pipe behind ``stream`` can hold (Linux), or 0 if unknown."""
    try:
        return int(fcntl.fcntl(stream.fileno(), fcntl.F_GETPIPE_SZ))
    except (AttributeError, OSError):
        return 0


class _IoVec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


def _load_vmsplice() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(None, use_errno=True).vmsplice
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.POINTER(_IoVec), ctypes.c_size_t, ctypes.c_uint]
    fn.restype = ctypes.c_ssize_t
    return fn


_VMSPLICE = _load_vmsplice()


class FrameWriter(Generic[T]):
    """Writes raw frames to ffmpeg's stdin, zero-copy where it is safe.

    ``vmsplice`` hands the frame's pages to the pipe instead of copying them (a 1080p frame
    is 3 MB; the copy is a measurable share of a render's CPU). The pages stay ours, so a
    frame must not change until ffmpeg has read it. Because the pipe is first-in first-out
    and holds less than one frame, once frame N+1 is fully in the pipe frame N has been
    read: ``write`` therefore hands back the owner given *two* calls ago (or None), which
    is then free to reuse. With frames smaller than the pipe it falls back to ``write``.
    """

    def __init__(self, stream: IO[bytes], frame_bytes: int) -> None:
        self._stream = stream
        self._fd = stream.fileno()
        capacity = pipe_capacity(stream)
        self._vmsplice = _VMSPLICE if 0 < capacity < frame_bytes else None
        self._held: collections.deque[tuple[np.ndarray, T]] = collections.deque()

    def write(self, data: np.ndarray, owner: T) -> T | None:
        """Write ``data`` (C-contiguous uint8); return an earlier ``owner`` now reusable."""
        if self._vmsplice is None:
            self._stream.write(data.data)
            return owner
        address, remaining = data.ctypes.data, data.nbytes
        while remaining:
            done = self._vmsplice(self._fd, ctypes.byref(_IoVec(address, remaining)), 1, 0)
            if done < 0:
                err = ctypes.get_errno()
                if err == errno.EINTR:
                    continue
                raise OSError(err, os.strerror(err))
            address += done
            remaining -= done
        self._held.append((data, owner))
        return self._held.popleft()[1] if len(self._held) > 2 else None


def _widen_pipe(stream: IO[bytes] | None) -> None:
    """Grow the pipe to 1 MiB (Linux): a raw 1080p frame is 3 MB, and the default 64 KiB
    pipe costs ~50 context switches per frame between us and ffmpeg."""
    if stream is None or not hasattr(fcntl, "F_SETPIPE_SZ"):
        return
    # Above /proc/sys/fs/pipe-max-size an unprivileged user gets EPERM: keep the default.
    with contextlib.suppress(OSError):
        fcntl.fcntl(stream.fileno(), fcntl.F_SETPIPE_SZ, 1 << 20)
