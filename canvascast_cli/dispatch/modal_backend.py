"""The Modal backend: the deployed app's functions and Volume, through Modal's SDK (no HTTP).

    missing   Volume.listdir("blobs/<sha[:2]>") per prefix    (which blobs the Volume lacks)
    upload    Volume.batch_upload -> blobs/<sha[:2]>/<sha>   (content-addressed, write-once)
    submit    Function.from_name(app, fn).spawn(payload)      -> job id = call.object_id
    status    FunctionCall.from_id(id).get(timeout=wait)      builtin TimeoutError = pending;
              progress and cancellations from the app's progress Dict
    download  Volume.read_file, sha256 checked                 (IntegrityError on mismatch)
    cancel    FunctionCall.cancel, noted in the progress Dict

Every SDK call is awaited as ``asyncio.wait_for(obj.method.aio(...), timeout)`` on this
backend's own event loop: with a token but no network the SDK otherwise waits ~60 s per
call. Failures leave as ``canvascast_cli.errors`` classes through the one table in
``modal_errors``. Idempotent calls (all but ``submit``) are retried by the
``RetryPolicy``; ``submit`` is not, because a spawn whose reply was lost may have started
the job (and the function's own ``retries`` already re-run failed inputs on Modal).

``import modal`` happens in the constructor, never at module import: the CLI starts
without it. The SDK is a parameter (``sdk``, default the ``modal`` module) so tests pass a
fake with the SDK's semantics. Credentials are the SDK's own business
(``MODAL_TOKEN_ID``/``MODAL_TOKEN_SECRET`` or the user's Modal profile); nothing here
reads or prints them.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import importlib
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar

from canvascast_cli.errors import (
    CanvasCastError,
    IntegrityError,
    InvalidInput,
    ModalUnavailable,
    NotFound,
    Timeout,
    from_os_error,
)
from canvascast_cli.protocol import (
    JobStatus,
    Payload,
    blob_path,
    check_sha256,
    function,
    sha256_file,
)
from canvascast_cli.protocol.modal_calls import (
    DEPLOY_HINT,
    Notes,
    aget_outcome,
    cancel_key,
    check_call_id,
    poll,
    progress_dict_name,
    read_notes,
    to_canvascast,
)
from canvascast_cli.retry import RetryPolicy

T = TypeVar("T")
Bytes = Callable[[int], None]

CALL_TIMEOUT = 15.0  # seconds one SDK call may take (the SDK alone waits ~60 s offline)
MIN_RATE = 1 << 20  # bytes/s a transfer is allowed at worst before it counts as hung
LISTING_CONCURRENCY = 16


class ModalBackend:
    """``Backend`` over Modal's SDK; see the module docstring."""

    name = "modal"

    def __init__(self, app_name: str, volume_name: str, *, environment: str | None = None,
                 timeout: float = CALL_TIMEOUT, retry: RetryPolicy | None = None,
                 sdk: Any = None) -> None:
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self.app_name = app_name
        self.volume_name = volume_name
        self.environment = environment
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        if sdk is None:
            try:
                sdk = importlib.import_module("modal")
            except ImportError:
                raise InvalidInput("--backend modal needs Modal's SDK: pip install "
                                   "'canvascast[modal]'") from None
        self._sdk = sdk
        self._loop = asyncio.Runner()
        self._functions: dict[str, Any] = {}
        self._volume: Any = None
        self._volume_ready = False
        self._progress: Any = None
        self._submitted: dict[str, str] = {}  # job id -> function, for this process's jobs
        self._cancelled: set[str] = set()

    @classmethod
    def from_settings(cls, settings: Any, **options: Any) -> ModalBackend:
        """The backend for modal.toml's ``[app]`` (name, volume, environment)."""
        app = settings.app
        return cls(app.name, app.volume, environment=app.environment, **options)

    def __repr__(self) -> str:
        env = f", environment={self.environment!r}" if self.environment else ""
        return f"ModalBackend({self.app_name!r}, volume={self.volume_name!r}{env})"

    def close(self) -> None:
        self._loop.close()

    # -- Backend --------------------------------------------------------------------

    def missing(self, shas: list[str]) -> list[str]:
        wanted = list(dict.fromkeys(check_sha256(s, field="sha256[]") for s in shas))
        if not wanted:
            return []
        prefixes = sorted({sha[:2] for sha in wanted})

        def once() -> list[str]:
            present = self._run(self._listing(prefixes), "list blobs on the Volume")
            return [sha for sha in wanted if sha not in present]

        return self.retry.call(once)

    def upload(self, sha: str, path: Path, on_bytes: Bytes | None = None) -> int:
        """Put ``path`` on the Volume as blob ``sha`` (its hash is checked first)."""
        check_sha256(sha)
        try:
            actual, size = sha256_file(path)
        except OSError as exc:
            raise from_os_error(exc, "reading an input to upload") from None
        if actual != sha:
            raise IntegrityError(f"{path} hashes to {actual}, not {sha} (did it change while "
                                 "the job was being prepared?)")

        def once() -> int:
            self._run(self._put(path, blob_path(sha)), f"upload {path.name} to the Volume",
                      timeout=self._transfer_timeout(size))
            if on_bytes is not None:
                on_bytes(size)
            return size

        return self.retry.call(once)

    def submit(self, function_name: str, payload: Payload) -> str:
        function(function_name)
        fn = self._function(function_name)
        call = self._run(fn.spawn.aio(payload.model_dump(mode="json")),
                         f"start {function_name} on Modal")
        job_id = str(call.object_id)
        self._submitted[job_id] = function_name
        return job_id

    def status(self, job_id: str, wait: float = 0.0) -> JobStatus:
        check_call_id(job_id)
        wait = max(0.0, float(wait))
        return self.retry.call(self._status_once, job_id, wait)

    def cancel(self, job_id: str) -> JobStatus:
        check_call_id(job_id)
        call = self._sdk.FunctionCall.from_id(job_id)
        self.retry.call(lambda: self._run(call.cancel.aio(), f"cancel job {job_id}",
                                          job_id=job_id))
        self._cancelled.add(job_id)
        self._best_effort(self._progress_dict().put.aio(cancel_key(job_id), True))
        return self.retry.call(self._status_once, job_id, 0.0)

    def download(self, sha: str, into: Path, on_bytes: Bytes | None = None) -> int:
        """Write blob ``sha`` into ``into``; IntegrityError if the bytes hash otherwise."""
        check_sha256(sha)

        def once() -> int:
            digest, size = self._run(self._read(sha, into, on_bytes),
                                     f"download blob {sha[:12]} from the Volume",
                                     bounded=False)
            if digest != sha:
                raise IntegrityError(f"downloaded {size:,} bytes hash to {digest}, not {sha}")
            return size

        return self.retry.call(once)

    # -- the SDK, bounded -----------------------------------------------------------

    def _run(self, coro: Coroutine[Any, Any, T], doing: str, *, timeout: float | None = None,
             bounded: bool = True, job_id: str | None = None) -> T:
        """Run ``coro`` on this backend's loop and map what it raises. It is cut after
        ``timeout`` s (default: the backend's) unless ``bounded`` is false (a download,
        whose every chunk is bounded instead)."""
        try:
            if not bounded:
                return self._loop.run(coro)
            return self._loop.run(_bounded(coro, timeout or self.timeout))
        except _Hung as hung:
            raise Timeout(f"{doing}: no answer from Modal in {hung.seconds:g} s (is the "
                          "network up? status.modal.com)") from None
        except CanvasCastError:
            raise
        except Exception as exc:
            raise to_canvascast(exc, doing=doing, job_id=job_id) from None

    def _best_effort(self, coro: Coroutine[Any, Any, Any]) -> Any:
        """Progress and cancellation notes: useful, never worth failing a call for."""
        try:
            return self._loop.run(_bounded(coro, self.timeout))
        except Exception:  # _Hung included
            return None

    def _function(self, function: str) -> Any:
        if function not in self._functions:
            # Lazy: no network until the first call on it.
            self._functions[function] = self._sdk.Function.from_name(
                self.app_name, function, environment_name=self.environment)
        return self._functions[function]

    def _progress_dict(self) -> Any:
        if self._progress is None:
            self._progress = self._sdk.Dict.from_name(
                progress_dict_name(self.app_name), environment_name=self.environment)
        return self._progress

    async def _volume_handle(self) -> Any:
        """The Volume, looked up once: a missing Volume is a missing deployment, which a
        missing path inside it must not be mistaken for."""
        if self._volume is None:
            self._volume = self._sdk.Volume.from_name(self.volume_name,
                                                      environment_name=self.environment)
        if not self._volume_ready:
            try:
                await _bounded(self._volume.hydrate.aio(), self.timeout)
            except self._sdk.exception.NotFoundError:
                raise ModalUnavailable(f"Modal Volume {self.volume_name!r} not found: "
                                       f"{DEPLOY_HINT}") from None
            self._volume_ready = True
        return self._volume

    async def _listing(self, prefixes: list[str]) -> set[str]:
        """Names of the blobs present under each ``blobs/<prefix>``."""
        volume = await self._volume_handle()
        gate = asyncio.Semaphore(LISTING_CONCURRENCY)
        missing = (self._sdk.exception.NotFoundError, FileNotFoundError)

        async def names(prefix: str) -> set[str]:
            async with gate:
                try:
                    entries = await _bounded(volume.listdir.aio(f"blobs/{prefix}"),
                                             self.timeout)
                except missing:
                    return set()  # no blob with this prefix yet
            return {PurePosixPath(str(entry.path)).name for entry in entries}

        found: set[str] = set()
        for chunk in await asyncio.gather(*(names(p) for p in prefixes)):
            found |= chunk
        return found

    async def _put(self, path: Path, remote: str) -> None:
        volume = await self._volume_handle()
        exists = (FileExistsError, self._sdk.exception.AlreadyExistsError)
        try:
            # Not force: the path is the content's hash, so a file already there holds
            # these very bytes (another client uploaded them first).
            async with volume.batch_upload.aio(force=False) as batch:
                batch.put_file(str(path), remote)
        except exists:
            return

    async def _read(self, sha: str, into: Path, on_bytes: Bytes | None) -> tuple[str, int]:
        """Stream the blob into ``into``; each chunk is bounded, not the whole file."""
        volume = await self._volume_handle()
        digest, size = hashlib.sha256(), 0
        stream = volume.read_file.aio(blob_path(sha))
        try:
            with into.open("wb") as out:
                while True:
                    try:
                        chunk = await _bounded(stream.__anext__(), self.timeout)
                    except StopAsyncIteration:
                        break
                    digest.update(chunk)
                    out.write(chunk)
                    size += len(chunk)
                    if on_bytes is not None:
                        on_bytes(size)
        except FileNotFoundError as exc:
            if exc.filename is not None and Path(exc.filename) == into:
                raise from_os_error(exc, "writing a download") from None
            raise NotFound(f"blob {sha} is not on the Volume {self.volume_name!r}") from None
        except OSError as exc:
            if exc.filename is not None:
                raise from_os_error(exc, "writing a download") from None
            raise
        finally:
            await self._close(stream)
        return digest.hexdigest(), size

    async def _close(self, stream: Any) -> None:
        with contextlib.suppress(Exception):  # _Hung included: closing is a courtesy
            await _bounded(stream.aclose(), self.timeout)

    def _status_once(self, job_id: str, wait: float) -> JobStatus:
        call = self._sdk.FunctionCall.from_id(job_id)
        outcome = self._run(aget_outcome(call.get.aio(timeout=wait)), f"poll job {job_id}",
                            timeout=wait + self.timeout, job_id=job_id)
        return poll(job_id, outcome, lambda finished: self._notes(job_id, finished),
                    function=self._submitted.get(job_id), cancelled=job_id in self._cancelled)

    def _notes(self, job_id: str, finished: bool) -> Notes | None:
        store = self._progress_dict()

        async def read() -> Notes:
            entry = await store.get.aio(job_id)
            flagged = False if finished else await store.get.aio(cancel_key(job_id))
            return read_notes({job_id: entry, cancel_key(job_id): flagged}.get, job_id,
                              finished)

        return self._best_effort(read())

    def _transfer_timeout(self, size: int) -> float:
        return self.timeout + size / MIN_RATE


class _Hung(Exception):
    """A bound of ours ran out (kept apart from the SDK's own TimeoutErrors)."""

    def __init__(self, seconds: float) -> None:
        super().__init__(seconds)
        self.seconds = seconds


async def _bounded(aw: Awaitable[T], seconds: float) -> T:
    """``aw``, or _Hung after ``seconds``. The SDK's builtin TimeoutError (a pending
    FunctionCall) and asyncio's own would look alike; aget_outcome() takes the first out
    of the way, so a TimeoutError leaving wait_for here is ours."""
    try:
        return await asyncio.wait_for(aw, seconds)
    except TimeoutError:
        raise _Hung(seconds) from None
