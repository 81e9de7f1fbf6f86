"""Errors and exit codes: one tree, a registry from code to class, one retry decision.

    CanvasCastError                   exit 1, JOB_FAILED
    ├── InvalidInput                  exit 2, INVALID_INPUT     (bad flags, timeline, files)
    │   ├── ConfigError               exit 2, CONFIG_INVALID    (modal.toml)
    │   ├── NotFound                  exit 2, NOT_FOUND         (no such job or blob)
    │   ├── PayloadTooLarge           exit 2, PAYLOAD_TOO_LARGE (a body over the job API's cap)
    │   ├── IdempotencyConflict       exit 2, IDEMPOTENCY_CONFLICT (a key reused, other body)
    │   └── UnexpectedResponse        exit 2, UNEXPECTED_RESPONSE (a 4xx or a body that is
    │                                                           not the API: wrong endpoint)
    ├── JobFailed                     exit 1, JOB_FAILED
    │   ├── FFmpegError               exit 1, FFMPEG_FAILED     (carries ffmpeg's last lines)
    │   ├── JobTimedOut               exit 1, JOB_TIMEOUT       (ran past its own timeout)
    │   └── IntegrityError            exit 1, INTEGRITY         (an artifact's sha256 is wrong)
    ├── TransientError                retryable: another attempt may well succeed
    │   ├── Timeout                   exit 1, TIMEOUT
    │   ├── ContainerCrash            exit 1, CONTAINER_CRASH
    │   ├── RateLimited               exit 1, RATE_LIMITED
    │   ├── ServerError               exit 1, SERVER_ERROR      (HTTP 5xx)
    │   ├── ConnectionFailed          exit 1, CONNECTION_FAILED (refused, reset, DNS)
    │   └── ModalUnavailable          exit 3, MODAL_UNAVAILABLE
    ├── GpuOutOfMemory                exit 1, GPU_OOM           (callers split the batch)
    ├── AuthFailed                    exit 3, AUTH
    ├── CircuitOpen                   exit 4, CIRCUIT_OPEN
    └── Interrupted                   exit 128+signal (130 Ctrl-C, 143 SIGTERM, 129 SIGHUP)

Third-party exceptions are translated into this tree at the boundary where they are
raised (ffmpeg in ``engines/render/ffmpeg.py``, pydantic in ``config``/``timeline``, httpx
in ``net`` — for every HTTP caller —, the Modal SDK in ``protocol.modal_calls``), so the
CLI only ever has to show a ``CanvasCastError``.
Every class with its own ``code`` is registered: ``from_dict`` turns an error envelope
that crossed the job API back into the same class.
"""

from __future__ import annotations

import errno
import signal
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

# Exit codes, documented in `canvascast --help` and docs/exit-codes.md.
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3
EXIT_CIRCUIT_OPEN = 4
EXIT_INTERRUPTED = 130

EXIT_CODES_HELP = (
    "Exit codes: 0 ok, 1 job failed, 2 usage or invalid input, "
    "3 remote unavailable and no fallback, 4 circuit open, 130 interrupted "
    "(143 SIGTERM, 129 SIGHUP)."
)

# code -> class, filled as the classes below are defined.
ERRORS: dict[str, type[CanvasCastError]] = {}


class CanvasCastError(Exception):
    """Base of every error the CLI reports.

    ``code`` is stable (scripts match on it), ``retryable`` feeds the retry policy and the
    circuit breaker, ``exit_code`` is what the process exits with. All three belong to the
    class: a failure that is worth retrying is its own class.
    """

    code: ClassVar[str] = "JOB_FAILED"
    retryable: ClassVar[bool] = False
    exit_code: int = EXIT_FAILED

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "code" in cls.__dict__:
            ERRORS.setdefault(cls.code, cls)

    def __init__(self, message: str, *, details: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.details = list(details)

    def __str__(self) -> str:
        if not self.details:
            return self.message
        return self.message + "".join(f"\n  - {d}" for d in self.details)

    def rewritten(self, fix: Callable[[str], str]) -> CanvasCastError:
        """The same error (class, code, extra fields) with ``fix`` applied to its message
        and each detail — how a path is turned into a name on the way between a worker
        and a user; ``self`` when nothing changes."""
        body = self.to_dict()
        message = fix(self.message)
        details = [fix(d) for d in self.details]
        if message == self.message and details == self.details:
            return self
        body.update(message=message, details=details)
        return from_dict(body)

    def to_dict(self) -> dict[str, Any]:
        """The ``{"error": ...}`` body printed by ``--json`` and sent by the job API."""
        body: dict[str, Any] = {
            "code": self.code,
            "message": self.message,
            "retryable": self.retryable,
        }
        if self.details:
            body["details"] = self.details
        return body




class InvalidInput(CanvasCastError):
    """The user's input cannot be run: fixing it is the only remedy (never retried)."""

    code = "INVALID_INPUT"
    exit_code = EXIT_USAGE


class ConfigError(InvalidInput):
    """``modal.toml`` (or an override of it) is invalid; ``details`` lists every problem."""

    code = "CONFIG_INVALID"


class NotFound(InvalidInput):
    """A job or blob the server does not know (HTTP 404)."""

    code = "NOT_FOUND"


class PayloadTooLarge(InvalidInput):
    """A request body or upload over the job API's size limit (HTTP 413)."""

    code = "PAYLOAD_TOO_LARGE"


class IdempotencyConflict(InvalidInput):
    """An ``Idempotency-Key`` already used for a different request (HTTP 422)."""

    code = "IDEMPOTENCY_CONFLICT"


class UnexpectedResponse(InvalidInput):
    """A service answered, but not as the API it should be: a plain 4xx, an HTML page, JSON
    that is not the envelope. A wrong endpoint or a proxy in the way: the caller's to fix,
    so it is neither retried nor counted against the service."""

    code = "UNEXPECTED_RESPONSE"


class JobFailed(CanvasCastError):
    """The job ran and failed for a reason that is not the input's fault."""

    code = "JOB_FAILED"


ERRORS[JobFailed.code] = JobFailed  # JOB_FAILED read back from the wire is this class


class FFmpegError(JobFailed):
    """ffmpeg exited non-zero; the message ends with its last stderr lines."""

    code = "FFMPEG_FAILED"


class JobTimedOut(JobFailed):
    """The job ran past the timeout its function allows. Not retried: another run would
    take as long; the message says which setting to raise."""

    code = "JOB_TIMEOUT"


class IntegrityError(JobFailed):
    """Bytes whose sha256 is not the one announced (a corrupted transfer)."""

    code = "INTEGRITY"


class TransientError(CanvasCastError):
    """A failure of the service or the network, not of the job: worth another attempt."""

    code = "TRANSIENT"
    retryable = True


class Timeout(TransientError):
    code = "TIMEOUT"


class ContainerCrash(TransientError):
    code = "CONTAINER_CRASH"


class RateLimited(TransientError):
    """Too many requests; ``retry_after`` is the server's hint in seconds, if it gave one."""

    code = "RATE_LIMITED"

    def __init__(self, message: str, *, details: Sequence[str] = (),
                 retry_after: float | None = None) -> None:
        super().__init__(message, details=details)
        self.retry_after = retry_after

    def to_dict(self) -> dict[str, Any]:
        body = super().to_dict()
        if self.retry_after is not None:
            body["retry_after"] = self.retry_after
        return body


class ServerError(TransientError):
    """An HTTP 5xx, or a service reporting an internal failure."""

    code = "SERVER_ERROR"


class ConnectionFailed(TransientError):
    """The connection could not be made or broke (refused, reset, name not resolved)."""

    code = "CONNECTION_FAILED"


class ModalUnavailable(TransientError):
    code = "MODAL_UNAVAILABLE"
    exit_code = EXIT_UNAVAILABLE


class GpuOutOfMemory(CanvasCastError):
    # Not blindly retryable: the same batch would run out of memory again. Callers that can
    # shrink the batch handle it explicitly.
    code = "GPU_OOM"


class AuthFailed(CanvasCastError):
    code = "AUTH"
    exit_code = EXIT_UNAVAILABLE


class CircuitOpen(CanvasCastError):
    code = "CIRCUIT_OPEN"
    exit_code = EXIT_CIRCUIT_OPEN


class Interrupted(CanvasCastError):
    """Stopped by a signal: Ctrl-C (SIGINT), SIGTERM or SIGHUP; exit status 128 + signal."""

    code = "INTERRUPTED"
    exit_code = EXIT_INTERRUPTED

    def __init__(self, message: str = "interrupted", *, signum: int = signal.SIGINT,
                 details: Sequence[str] = ()) -> None:
        super().__init__(message, details=details)
        self.signum = int(signum)
        self.exit_code = 128 + self.signum


def is_retryable(exc: BaseException) -> bool:
    """The single decision on whether ``exc`` is worth another attempt.

    Feeds both the retry policy and the circuit breaker: an error that is the input's
    fault must neither be retried nor count against the remote service.
    """
    if isinstance(exc, CanvasCastError):
        return exc.retryable
    # Untranslated transport-level failures are transient by nature.
    return isinstance(exc, (ConnectionError, TimeoutError))


def from_dict(body: Mapping[str, Any]) -> CanvasCastError:
    """The error an ``{"code", "message", "details"}`` body describes, as its own class.

    An unknown code (a newer server) becomes the nearest known kind: retryable ones a
    ``TransientError``, others a ``JobFailed``; the code itself is kept in the message.
    """
    code = str(body.get("code") or "JOB_FAILED")
    message = str(body.get("message") or code)
    details = [str(d) for d in body.get("details") or ()]
    cls = ERRORS.get(code)
    if cls is None:
        cls = TransientError if body.get("retryable") else JobFailed
        message = f"{code}: {message}"
    if cls is Interrupted:
        return Interrupted(message, details=details)
    if cls is RateLimited:
        hint = body.get("retry_after")
        return RateLimited(message, details=details,
                           retry_after=float(hint) if isinstance(hint, (int, float)) else None)
    return cls(message, details=details)


# OS errors that mean "this path cannot be written/read as asked": the user's to fix.
_USER_ERRNOS = {errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOENT, errno.ENOTDIR,
                errno.EISDIR, errno.ENAMETOOLONG, errno.ELOOP, errno.EEXIST}


def from_os_error(exc: OSError, doing: str | None = None) -> CanvasCastError:
    """One line for an OSError: what was being done, on which file, and why.

    Permissions, read-only filesystems and missing folders are the user's to fix (exit 2);
    a full disk or an I/O error is a failed job (exit 1).
    """
    reason = exc.strerror or str(exc) or type(exc).__name__
    where = exc.filename if exc.filename is not None else None
    text = f"{where}: {reason}" if where is not None else reason
    if doing:
        text = f"{doing}: {text}"
    if exc.errno == errno.ENOSPC:
        text += " (free some space and run again)"
    cls: type[CanvasCastError] = InvalidInput if exc.errno in _USER_ERRNOS else JobFailed
    return cls(text)
