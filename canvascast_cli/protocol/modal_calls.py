"""Modal's side of the wire format: its exceptions as canvascast errors, and a job's status
read from a ``FunctionCall``.

One table and one status reader, used by both ends: the client (``dispatch/
modal_backend.py``) for every SDK call it makes, and the Modal app (``modal_functions/
app.py``: ``ModalRunner`` behind the job API) for what ``FunctionCall.get`` gives, so a
job's status carries the same error whichever way it was polled (``poll``). Classes are
named as strings, so importing this module never imports ``modal`` (the CLI starts
without it); a test checks that every exception class of the installed
``modal.exception`` has a row and that every row names a class that exists.

    modal.exception                 canvascast error     the job's own outcome?
    AuthError                       AuthFailed           no  (token missing or refused)
    PermissionDeniedError           AuthFailed           no
    ConnectionError                 ModalUnavailable     no  (no network, Modal down)
    ServiceError                    ModalUnavailable     no  (gRPC unavailable/deadline/...)
    NotFoundError                   ModalUnavailable     no  (app not deployed: see
                                                              DEPLOY_HINT); NotFound for a job id
    ClientClosed                    ConnectionFailed     no
    InternalError, DataLossError    ServerError          no
    ResourceExhaustedError          RateLimited          no
    InvalidError, SerializationError InvalidInput        no
    RequestSizeError                PayloadTooLarge      no
    TimeoutError and its timeouts   Timeout              no  (Exec/Interactive/Mount/
                                                              Sandbox/VolumeUpload...)
    FunctionTimeoutError            JobTimedOut          yes (ran past its timeout: not
                                                              retried; raise the timeout)
    InternalFailure                 ServerError          yes (Modal lost the input)
    RemoteError                     ContainerCrash       yes (crash, OOM, failed start)
    OutputExpiredError              JobFailed            yes (result expired; not retried)
    ExecutionError,                 JobFailed            yes
      DeserializationError, ImageBuildError, InputCancellation, UserCodeException
    everything else (Error, warnings, Sandbox*, Version, Unimplemented, ...)  JobFailed  no

    builtins: TimeoutError -> Timeout, FileNotFoundError -> NotFound,
              OSError -> ConnectionFailed; a CanvasCastError passes through;
              any other exception raised by ``FunctionCall.get`` is the job's own failure.

"The job's own outcome" means ``FunctionCall.get`` raised it *as the job's result*: the
status is then ``failed`` with that error. Any other exception means asking Modal failed
(the poll itself), and the caller raises the mapped error instead of reporting the job.

The app's functions return non-retryable failures as a result (``failure_result``) instead
of raising them, because Modal re-runs every raised exception up to the function's
``retries``: bad input must not run three times on a GPU. Retryable failures are raised
(Modal retries them); a ``FunctionCall`` that ends that way arrives here as that class.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from pydantic import ValidationError

from canvascast_cli.errors import (
    AuthFailed,
    CanvasCastError,
    ConnectionFailed,
    ContainerCrash,
    InvalidInput,
    JobFailed,
    JobTimedOut,
    ModalUnavailable,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    ServerError,
    Timeout,
    from_dict,
)
from canvascast_cli.protocol import ErrorBody, JobResult, JobStatus, Progress

MODAL_MODULES = ("modal.exception", "synchronicity.exceptions")
DEPLOY_HINT = ("is the app deployed in this environment? deploy it from the repository: "
               "modal deploy -m modal_functions.app (docs/modal.md)")
MESSAGE_MAX = 600  # characters of Modal's own message kept (remote tracebacks are long)
JOB_ID = re.compile(r"^fc-[A-Za-z0-9]{1,64}$")


@dataclass(frozen=True)
class Rule:
    """How one Modal exception class is reported."""

    error: type[CanvasCastError]
    hint: str
    outcome: bool = False  # FunctionCall.get raises it as the job's own result


_UNUSED = "not raised by the calls canvascast makes"

MODAL_EXCEPTIONS: Final[dict[str, Rule]] = {
    # Credentials and permissions.
    "AuthError": Rule(AuthFailed, "Modal refused the credentials: run `modal token new`, "
                      "or set MODAL_TOKEN_ID and MODAL_TOKEN_SECRET"),
    "PermissionDeniedError": Rule(AuthFailed, "the Modal token may not do this in this "
                                  "workspace or environment"),
    # Reaching Modal.
    "ConnectionError": Rule(ModalUnavailable, "cannot reach Modal (network, proxy, or "
                            "Modal itself is down)"),
    "ServiceError": Rule(ModalUnavailable, "Modal's API did not answer properly"),
    "NotFoundError": Rule(ModalUnavailable, f"not found on Modal: {DEPLOY_HINT}"),
    "ClientClosed": Rule(ConnectionFailed, "the Modal client was closed"),
    "InternalError": Rule(ServerError, "Modal reported an internal error"),
    "DataLossError": Rule(ServerError, "Modal reported lost data"),
    "ResourceExhaustedError": Rule(RateLimited, "Modal's rate limit or quota was reached"),
    # The request itself.
    "InvalidError": Rule(InvalidInput, "Modal rejected the request"),
    "ConflictError": Rule(JobFailed, "the request conflicts with the state on Modal"),
    "AlreadyExistsError": Rule(JobFailed, "it already exists on Modal"),
    "SerializationError": Rule(InvalidInput, "the job's payload could not be serialised"),
    "RequestSizeError": Rule(PayloadTooLarge, "the request is larger than Modal accepts"),
    # Timeouts.
    "TimeoutError": Rule(Timeout, "Modal timed out"),
    # Not retried: the job said how long it may take, and another run takes as long.
    "FunctionTimeoutError": Rule(JobTimedOut, "the job ran past its function's timeout; "
                                 "raise `timeout` under [functions.<name>] in modal.toml "
                                 "(or CANVASCAST_FUNCTIONS__<NAME>__TIMEOUT) and deploy "
                                 "again", outcome=True),
    "ExecTimeoutError": Rule(Timeout, _UNUSED),
    "InteractiveTimeoutError": Rule(Timeout, _UNUSED),
    "MountUploadTimeoutError": Rule(Timeout, "uploading the app's files timed out"),
    "VolumeUploadTimeoutError": Rule(Timeout, "uploading to the Volume timed out"),
    "SandboxTimeoutError": Rule(Timeout, _UNUSED),
    # What a job can end with.
    "InternalFailure": Rule(ServerError, "Modal lost the job's container (an internal "
                            "failure; worth another attempt)", outcome=True),
    "RemoteError": Rule(ContainerCrash, "the job's container failed: it crashed, ran out "
                        "of memory or could not start (see `modal app logs`)", outcome=True),
    "ImageBuildError": Rule(JobFailed, "the container image did not build: see the build "
                            "logs, fix, and deploy again", outcome=True),
    "OutputExpiredError": Rule(JobFailed, "the job's result has expired on Modal (a spawned "
                               "call's result is kept for a limited time); run the job "
                               "again", outcome=True),
    "ExecutionError": Rule(JobFailed, "the job failed in an unexpected way (is this "
                           "canvascast the version that was deployed?)", outcome=True),
    "DeserializationError": Rule(JobFailed, "the job's result could not be read here (is "
                                 "this canvascast the version that was deployed?)",
                                 outcome=True),
    "InputCancellation": Rule(JobFailed, "the job was cancelled", outcome=True),
    "UserCodeException": Rule(JobFailed, "the job raised an error", outcome=True),
    # The client, the deployment, the rest.
    "Error": Rule(JobFailed, "Modal reported an error"),
    "VersionError": Rule(JobFailed, "this modal client is too old for Modal: "
                         "pip install -U modal"),
    "UnimplementedError": Rule(JobFailed, "this modal client does not support it: "
                               "pip install -U modal"),
    "ModuleNotMountable": Rule(JobFailed, "a module of the app cannot be sent to Modal"),
    "LogsFetchError": Rule(JobFailed, _UNUSED),
    "WorkspaceManagementError": Rule(JobFailed, _UNUSED),
    "SnapshotCreationError": Rule(JobFailed, _UNUSED),
    "SandboxTerminatedError": Rule(ContainerCrash, _UNUSED),
    "SandboxFilesystemError": Rule(JobFailed, _UNUSED),
    "SandboxFilesystemDirectoryNotEmptyError": Rule(JobFailed, _UNUSED),
    "SandboxFilesystemFileTooLargeError": Rule(JobFailed, _UNUSED),
    "SandboxFilesystemIsADirectoryError": Rule(JobFailed, _UNUSED),
    "SandboxFilesystemNotADirectoryError": Rule(JobFailed, _UNUSED),
    "SandboxFilesystemNotFoundError": Rule(JobFailed, _UNUSED),
    "SandboxFilesystemPathAlreadyExistsError": Rule(JobFailed, _UNUSED),
    "SandboxFilesystemPermissionError": Rule(JobFailed, _UNUSED),
    # Warnings: only ever raised when warnings are turned into errors.
    "AsyncUsageWarning": Rule(JobFailed, "a Modal warning"),
    "DeprecationError": Rule(JobFailed, "a Modal deprecation"),
    "InternalAPIWarning": Rule(JobFailed, "a Modal warning"),
    "ServerWarning": Rule(JobFailed, "a Modal warning"),
}

# Builtins, checked after the Modal classes (none of Modal's subclasses a builtin one).
BUILTIN_EXCEPTIONS: Final[tuple[tuple[type[BaseException], Rule], ...]] = (
    # FunctionCall.get(timeout=...) raises the builtin TimeoutError while the job is
    # pending: callers catch that themselves; one reaching here is a bound that ran out.
    (TimeoutError, Rule(Timeout, "no answer from Modal in time")),
    (FileNotFoundError, Rule(NotFound, "not on the Volume")),
    (OSError, Rule(ConnectionFailed, "the connection to Modal failed")),
)


def rule_for(exc: BaseException) -> Rule | None:
    """The row for ``exc``'s class (or its nearest listed base), or None."""
    for cls in type(exc).__mro__:
        if cls.__module__ in MODAL_MODULES and cls.__name__ in MODAL_EXCEPTIONS:
            return MODAL_EXCEPTIONS[cls.__name__]
    for builtin, rule in BUILTIN_EXCEPTIONS:
        if isinstance(exc, builtin):
            return rule
    return None


def is_job_outcome(exc: BaseException) -> bool:
    """Whether ``FunctionCall.get`` raised ``exc`` as the job's result (the job failed),
    rather than because asking Modal failed."""
    if isinstance(exc, CanvasCastError):
        return True  # raised in the container, re-raised here as its own class
    rule = rule_for(exc)
    if rule is not None:
        return rule.outcome
    return True  # any other exception is the job's code's own (Modal re-raises it)


def to_canvascast(exc: BaseException, *, doing: str = "", job_id: str | None = None,
                  function: str | None = None) -> CanvasCastError:
    """``exc`` as a canvascast error; ``doing`` says what was asked of Modal, ``function``
    (when known) fills the hints that name a function's settings."""
    if isinstance(exc, CanvasCastError):
        return exc
    rule = rule_for(exc)
    name = type(exc).__name__
    said = _message(exc)
    prefix = f"{doing}: " if doing else ""
    if rule is None:  # an exception the job's code raised, re-raised by Modal
        return JobFailed(f"{prefix}{name}: {said}" if said else f"{prefix}{name}")
    if job_id is not None and rule.error is ModalUnavailable and name == "NotFoundError":
        return NotFound(f"{prefix}no job {job_id!r} on Modal (unknown, or from another "
                        "workspace or environment)")
    hint = rule.hint
    if function:
        hint = hint.replace("<name>", function).replace("<NAME>", function.upper())
    text = f"{prefix}{hint} ({name}" + (f": {said})" if said else ")")
    if rule.error is RateLimited:
        return RateLimited(text)
    return rule.error(text)


def _message(exc: BaseException) -> str:
    # str() only: the gRPC wrappers warn when their GRPCError attributes are read.
    text = " ".join(str(exc).split())
    return text if len(text) <= MESSAGE_MAX else text[:MESSAGE_MAX] + "…"


# ---------------------------------------------------------------------------------------
# A job's status from a FunctionCall


class _Pending:
    def __repr__(self) -> str:
        return "PENDING"


PENDING: Final = _Pending()  # FunctionCall.get raised the builtin TimeoutError
FAILED_MARK = "canvascast_failed"  # a result that is a failure (see failure_result)


@dataclass(frozen=True)
class Raised:
    """``FunctionCall.get`` raised this: kept as a value, so that a bound of the caller's
    cannot be confused with the builtin TimeoutError that means "pending"."""

    exc: BaseException


def get_outcome(get: Callable[[], Any]) -> Any:
    """``get()`` (a ``FunctionCall.get``) as a value: its result, PENDING, or Raised."""
    try:
        return get()
    except TimeoutError:  # the builtin one: not finished yet
        return PENDING
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # InputCancellation is a BaseException
        return Raised(exc)


async def aget_outcome(aw: Awaitable[Any]) -> Any:
    """``get_outcome`` for ``FunctionCall.get.aio(...)``."""
    try:
        return await aw
    except TimeoutError:
        return PENDING
    except (asyncio.CancelledError, KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:
        return Raised(exc)


Notes = tuple[Mapping[str, Any] | None, bool]  # (progress entry, cancellation noted)


def poll(job_id: str, outcome: Any, notes: Callable[[bool], Notes | None], *,
         function: str | None = None, cancelled: bool = False) -> JobStatus:
    """The job's status from what ``FunctionCall.get`` gave (``get_outcome``) and its
    notes in the progress Dict (``notes(finished)``: None when they cannot be read;
    progress is a nicety, the status stands without it). The one reader of a Modal job's
    status, for the client's modal backend and for the job API on Modal alike.

    A failure to ask Modal (not the job's own) is raised as its canvascast error."""
    if isinstance(outcome, Raised):
        if not is_job_outcome(outcome.exc):
            raise to_canvascast(outcome.exc, doing=f"poll job {job_id}", job_id=job_id)
        outcome = outcome.exc
    finished = not isinstance(outcome, BaseException) and outcome is not PENDING
    entry = None
    if not (finished and function):  # a finished job's notes add only its function
        read = notes(finished)
        if read is not None:
            entry, flagged = read
            cancelled = cancelled or flagged
    return call_status(job_id, outcome, function=function, entry=entry, cancelled=cancelled)


def read_notes(get: Callable[[str], Any], job_id: str, finished: bool) -> Notes:
    """(entry, cancelled) from the progress Dict's ``get``; a finished job is not asked
    whether it was cancelled."""
    entry = get(job_id)
    flagged = False if finished else bool(get(cancel_key(job_id)))
    return (entry if isinstance(entry, Mapping) else None), flagged


def progress_dict_name(app_name: str) -> str:
    """The ``modal.Dict`` the functions write progress to (and cancellations are noted in)."""
    return f"{app_name}-progress"


def cancel_key(job_id: str) -> str:
    """The progress Dict key that says ``job_id`` was cancelled."""
    return f"cancelled:{job_id}"


def check_call_id(job_id: Any) -> str:
    """A Modal function call id (``fc-...``), or NotFound without asking Modal."""
    if not isinstance(job_id, str) or not JOB_ID.fullmatch(job_id):
        raise NotFound(f"{str(job_id)[:80]!r} is not a Modal job id (fc-...)")
    return job_id


def failure_result(error: CanvasCastError) -> dict[str, Any]:
    """What a function returns (instead of raising) for a failure Modal must not retry."""
    return {FAILED_MARK: True, "error": error.to_dict()}


def call_status(job_id: str, outcome: Any, *, function: str | None = None,
                entry: Mapping[str, Any] | None = None,
                cancelled: bool = False) -> JobStatus:
    """The job status for a FunctionCall.

    ``outcome``: what ``FunctionCall.get`` gave: ``PENDING``, the result, or the exception
    it raised as the job's outcome. ``entry``: the job's progress Dict entry, if any.
    ``cancelled``: the job was cancelled (a cancelled call ends as a RemoteError or stays
    pending for a while; either way it is reported as cancelled).
    """
    entry = entry if isinstance(entry, Mapping) else None
    function = function or (str(entry["function"]) if entry and entry.get("function")
                            else None)
    progress = None
    if entry and entry.get("total") is not None:
        progress = Progress(done=entry.get("done", 0), total=entry.get("total"),
                            unit=entry.get("unit", ""))
    base: dict[str, Any] = {"id": job_id, "function": function, "progress": progress}
    done = not isinstance(outcome, BaseException) and outcome is not PENDING
    if cancelled and not done:
        error = ErrorBody(code="CANCELLED", message=f"job {job_id} was cancelled")
        return JobStatus(**base, state="cancelled", error=error)
    if outcome is PENDING:
        # Modal does not say whether a spawned call has a container yet; the functions
        # write a progress entry as they start, so no entry means it is still queued.
        return JobStatus(**base, state="running" if entry else "queued")
    if isinstance(outcome, BaseException):
        failed = to_canvascast(outcome, doing=f"job {job_id}", function=function)
        return JobStatus(**base, state="failed", error=ErrorBody.of(failed))
    if isinstance(outcome, Mapping) and outcome.get(FAILED_MARK):
        failed = from_dict(outcome.get("error") or {"code": "JOB_FAILED"})
        return JobStatus(**base, state="failed", error=ErrorBody.of(failed))
    try:
        result = JobResult.model_validate(outcome)
    except ValidationError:
        failed = JobFailed(f"job {job_id} returned {type(outcome).__name__}, not a result "
                           "(is this canvascast the version that was deployed?)")
        return JobStatus(**base, state="failed", error=ErrorBody.of(failed))
    return JobStatus(**base, state="done", result=result)
