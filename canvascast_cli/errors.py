"""Errors and exit codes: one tree, one place that decides what is retryable.

    CanvasCastError                   exit 1, code JOB_FAILED
    ├── InvalidInput                  exit 2, INVALID_INPUT   (bad flags, timeline, files)
    │   └── ConfigError               exit 2, CONFIG_INVALID  (modal.toml)
    ├── JobFailed                     exit 1, JOB_FAILED
    │   └── FFmpegError               exit 1, FFMPEG_FAILED   (carries ffmpeg's last lines)
    ├── RemoteError                   exit 1  (failures of the remote backend)
    │   ├── Timeout                   TIMEOUT            retryable
    │   ├── ContainerCrash            CONTAINER_CRASH    retryable
    │   ├── RateLimited               RATE_LIMITED       retryable
    │   ├── GpuOutOfMemory            GPU_OOM
    │   ├── AuthFailed                AUTH               exit 3
    │   └── ModalUnavailable          MODAL_UNAVAILABLE  exit 3, retryable
    ├── CircuitOpen                   exit 4, CIRCUIT_OPEN
    └── Interrupted                   exit 130, INTERRUPTED

Third-party exceptions are translated into this tree at the boundary where they are
raised (ffmpeg in ``engines/render/ffmpeg.py``, pydantic in ``config``/``timeline``), so
the CLI only ever has to render a ``CanvasCastError``.
"""

from __future__ import annotations

from collections.abc import Sequence

# Exit codes, documented in `canvascast --help` and docs/exit-codes.md.
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3
EXIT_CIRCUIT_OPEN = 4
EXIT_INTERRUPTED = 130

EXIT_CODES_HELP = (
    "Exit codes: 0 ok, 1 job failed, 2 usage or invalid input, "
    "3 remote unavailable and no fallback, 4 circuit open, 130 interrupted."
)


class CanvasCastError(Exception):
    """Base of every error the CLI reports.

    ``code`` is stable (scripts match on it), ``retryable`` feeds the retry policy and the
    circuit breaker, ``exit_code`` is what the process exits with.
    """

    code: str = "JOB_FAILED"
    retryable: bool = False
    exit_code: int = EXIT_FAILED

    def __init__(self, message: str, *, details: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.details = list(details)

    def __str__(self) -> str:
        if not self.details:
            return self.message
        return self.message + "".join(f"\n  - {d}" for d in self.details)

    def to_dict(self) -> dict[str, object]:
        """The ``{"error": ...}`` body printed by ``--json``."""
        body: dict[str, object] = {
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


class JobFailed(CanvasCastError):
    """The job ran and failed for a reason that is not the input's fault."""

    code = "JOB_FAILED"


class FFmpegError(JobFailed):
    """ffmpeg exited non-zero; the message ends with its last stderr lines."""

    code = "FFMPEG_FAILED"


class RemoteError(CanvasCastError):
    """The remote backend failed."""

    code = "REMOTE_FAILED"


class Timeout(RemoteError):
    code = "TIMEOUT"
    retryable = True


class ContainerCrash(RemoteError):
    code = "CONTAINER_CRASH"
    retryable = True


class RateLimited(RemoteError):
    code = "RATE_LIMITED"
    retryable = True


class GpuOutOfMemory(RemoteError):
    # Not blindly retryable: the same batch would run out of memory again. Callers that can
    # shrink the batch handle it explicitly.
    code = "GPU_OOM"


class AuthFailed(RemoteError):
    code = "AUTH"
    exit_code = EXIT_UNAVAILABLE


class ModalUnavailable(RemoteError):
    code = "MODAL_UNAVAILABLE"
    retryable = True
    exit_code = EXIT_UNAVAILABLE


class CircuitOpen(CanvasCastError):
    code = "CIRCUIT_OPEN"
    exit_code = EXIT_CIRCUIT_OPEN


class Interrupted(CanvasCastError):
    code = "INTERRUPTED"
    exit_code = EXIT_INTERRUPTED


def is_retryable(exc: BaseException) -> bool:
    """The single decision on whether ``exc`` is worth another attempt.

    Feeds both the retry policy and the circuit breaker: an error that is the input's
    fault must neither be retried nor count against the remote service.
    """
    if isinstance(exc, CanvasCastError):
        return exc.retryable
    # Untranslated transport-level failures are transient by nature.
    return isinstance(exc, (ConnectionError, TimeoutError))
