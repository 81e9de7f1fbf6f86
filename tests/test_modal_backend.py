"""The modal backend and the Modal exception table, against a fake SDK with Modal's semantics.

The fake (``FakeModal``) behaves as ``modal`` 1.x does where canvascast relies on it:
lazy ``from_name``/``from_id`` handles, ``.aio`` coroutines next to blocking calls,
``FunctionCall.get(timeout=...)`` raising the *builtin* ``TimeoutError`` while pending,
``object_id`` on a spawned call, ``modal.exception`` classes for failures, a Volume whose
``read_file`` raises ``FileNotFoundError`` and whose ``batch_upload`` refuses to overwrite.
``test_modal_app.py`` uses it for the app's side.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import itertools
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import modal
import modal.exception
import pytest

from canvascast_cli.dispatch.modal_backend import ModalBackend
from canvascast_cli.errors import (
    ERRORS,
    AuthFailed,
    CanvasCastError,
    ConnectionFailed,
    ContainerCrash,
    GpuOutOfMemory,
    IntegrityError,
    InvalidInput,
    JobFailed,
    JobTimedOut,
    ModalUnavailable,
    NotFound,
    RateLimited,
    ServerError,
    Timeout,
)
from canvascast_cli.protocol import ErrorBody, blob_path, parse_payload
from canvascast_cli.protocol.modal_calls import (
    BUILTIN_EXCEPTIONS,
    MODAL_EXCEPTIONS,
    MODAL_MODULES,
    PENDING,
    call_status,
    failure_result,
    is_job_outcome,
    to_canvascast,
)
from canvascast_cli.retry import RetryPolicy

RENDER = parse_payload("render_video", {"timeline": {"scenes": [
    {"image": "blob:" + "a" * 64 + ".jpg", "duration": 1}]}})
TRANSCRIBE = parse_payload("transcribe_audio", {"audio": "blob:" + "b" * 64 + ".wav"})
IMAGES = parse_payload("generate_images", {"provider": "placeholder", "model": "card", "requests": [
    {"index": 0, "prompt": "a", "width": 64, "height": 64, "aspect_ratio": "1:1", "seed": 1}]})

# ---------------------------------------------------------------------------------------
# A fake of the parts of the SDK canvascast uses


class Method:
    """A bound SDK method: call it (blocking) or ``.aio(...)`` it (a coroutine)."""

    def __init__(self, sdk: FakeModal, name: str, fn: Callable[..., Any]) -> None:
        self._sdk, self._name, self._fn = sdk, name, fn

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self._sdk.log.append(self._name)
        return self._fn(*args, **kwargs)

    async def aio(self, *args: Any, **kwargs: Any) -> Any:
        self._sdk.log.append(self._name)
        if self._name in self._sdk.hang:
            await asyncio.Event().wait()  # a network that never answers
        await asyncio.sleep(0)
        return self._fn(*args, **kwargs)


class FakeCall:
    def __init__(self, sdk: FakeModal, object_id: str) -> None:
        self.object_id = object_id
        self.state = "pending"  # pending | done | raised | expired
        self.value: Any = None
        self.cancelled = False
        self.waits: list[float | None] = []
        self.get = Method(sdk, "FunctionCall.get", self._get)
        self.cancel = Method(sdk, "FunctionCall.cancel", self._cancel)

    def finish(self, value: Any) -> None:
        self.state, self.value = "done", value

    def fail(self, exc: BaseException) -> None:
        self.state, self.value = "raised", exc

    def _get(self, timeout: float | None = None) -> Any:
        self.waits.append(timeout)
        if self.state == "pending":
            raise TimeoutError()  # the builtin, as FunctionCall.get raises it
        if self.state == "expired":
            raise modal.exception.OutputExpiredError("Output expired")
        if self.state == "raised":
            raise self.value
        return self.value

    def _cancel(self, terminate_containers: bool = False) -> None:
        self.cancelled = True
        if self.state == "pending":
            self.fail(modal.exception.RemoteError("Input was cancelled"))


class _UnknownCall:
    def __init__(self, sdk: FakeModal, object_id: str) -> None:
        def missing(*_: Any, **__: Any) -> Any:
            raise modal.exception.NotFoundError(f"FunctionCall {object_id} not found")

        self.get = Method(sdk, "FunctionCall.get", missing)
        self.cancel = Method(sdk, "FunctionCall.cancel", missing)


class FakeFunction:
    def __init__(self, sdk: FakeModal, app: str, name: str) -> None:
        self.app, self.name = app, name
        self.spawn = Method(sdk, "Function.spawn", lambda payload: sdk._spawn(self, payload))


@dataclass
class Entry:
    path: str
    size: int


class FakeVolume:
    """Committed files by path; ``reload``/``commit`` are counted (the app's side)."""

    def __init__(self, sdk: FakeModal, name: str) -> None:
        self.sdk, self.name = sdk, name
        self.reloads = self.commits = 0
        self.hydrate = Method(sdk, "Volume.hydrate", self._hydrate)
        self.listdir = Method(sdk, "Volume.listdir", self._listdir)
        self.read_file = _ReadFile(sdk, self)
        self.batch_upload = _BatchUpload(sdk, self)
        self.reload = Method(sdk, "Volume.reload", self._reload)
        self.commit = Method(sdk, "Volume.commit", self._commit)

    @property
    def files(self) -> dict[str, bytes]:
        return self.sdk.volumes.setdefault(self.name, {})

    def _hydrate(self) -> FakeVolume:
        if self.name not in self.sdk.volumes:
            raise modal.exception.NotFoundError(f"Volume '{self.name}' not found")
        return self

    def _listdir(self, path: str, *, recursive: bool = False) -> list[Entry]:
        prefix = path.rstrip("/") + "/"
        found = [Entry(p, len(b)) for p, b in self.files.items() if p.startswith(prefix)]
        if not found:
            raise modal.exception.NotFoundError(f"No such file or directory: {path}")
        return found

    def _reload(self) -> None:
        self.reloads += 1

    def _commit(self) -> None:
        self.commits += 1


class _ReadFile:
    def __init__(self, sdk: FakeModal, volume: FakeVolume) -> None:
        self.sdk, self.volume = sdk, volume

    def aio(self, path: str) -> AsyncIterator[bytes]:
        self.sdk.log.append("Volume.read_file")

        async def chunks() -> AsyncIterator[bytes]:
            if "Volume.read_file" in self.sdk.hang:
                await asyncio.Event().wait()
            if path not in self.volume.files:
                raise FileNotFoundError(f"No such file: {path}")  # as the SDK converts it
            data = self.sdk.corrupt.get(path, self.volume.files[path])
            for i in range(0, max(len(data), 1), 4):
                await asyncio.sleep(0)
                yield data[i:i + 4]

        return chunks()


class _BatchUpload:
    def __init__(self, sdk: FakeModal, volume: FakeVolume) -> None:
        self.sdk, self.volume = sdk, volume

    def aio(self, force: bool = False) -> Any:
        self.sdk.log.append("Volume.batch_upload")
        volume = self.volume

        class Batch:
            def __init__(self) -> None:
                self.items: list[tuple[str, str]] = []

            def put_file(self, local_file: str, remote_path: str) -> None:
                self.items.append((local_file, remote_path))

        @asynccontextmanager
        async def upload() -> AsyncIterator[Batch]:
            batch = Batch()
            yield batch
            for local, remote in batch.items:  # written when the batch closes
                if remote in volume.files and not force:
                    raise FileExistsError(f"{remote} already exists")
                volume.files[remote] = Path(local).read_bytes()

        return upload()


class FakeDict:
    """``modal.Dict``: ``put(skip_if_exists=True)`` writes only a new key, atomically, and
    says whether it did (Modal 1.x)."""

    def __init__(self, sdk: FakeModal, name: str) -> None:
        self.data = sdk.dicts.setdefault(name, {})
        self._lock = threading.Lock()
        self.get = Method(sdk, "Dict.get", lambda key, default=None: self.data.get(key, default))
        self.put = Method(sdk, "Dict.put", self._put)
        self.pop = Method(sdk, "Dict.pop", lambda key: self.data.pop(key))

    def _put(self, key: Any, value: Any, *, skip_if_exists: bool = False) -> bool:
        with self._lock:
            if skip_if_exists and key in self.data:
                return False
            self.data[key] = value
            return True


class FakeModal:
    """``modal``, as far as canvascast uses it: pass it as ``sdk=``."""

    exception = modal.exception

    def __init__(self) -> None:
        self.calls: dict[str, FakeCall] = {}
        self.spawned: list[tuple[str, dict[str, Any]]] = []
        self.handlers: dict[str, Callable[[dict[str, Any]], Any]] = {}  # run at spawn
        self.volumes: dict[str, dict[str, bytes]] = {}
        self.dicts: dict[str, dict[Any, Any]] = {}
        self.corrupt: dict[str, bytes] = {}  # path -> bytes read_file returns instead
        self.deployed = True
        self.hang: set[str] = set()  # names of methods whose .aio never returns
        self.log: list[str] = []
        self.lookups: list[tuple[str, str, str | None]] = []
        self._ids = itertools.count(1)
        sdk = self

        class Function:
            @staticmethod
            def from_name(app_name: str, name: str, *,
                          environment_name: str | None = None) -> FakeFunction:
                sdk.lookups.append(("Function", f"{app_name}/{name}", environment_name))
                return FakeFunction(sdk, app_name, name)

        class FunctionCall:
            @staticmethod
            def from_id(function_call_id: str) -> Any:
                return sdk.calls.get(function_call_id) or _UnknownCall(sdk, function_call_id)

        class Volume:
            @staticmethod
            def from_name(name: str, *, environment_name: str | None = None,
                          create_if_missing: bool = False) -> FakeVolume:
                sdk.lookups.append(("Volume", name, environment_name))
                if create_if_missing:
                    sdk.volumes.setdefault(name, {})
                return FakeVolume(sdk, name)

        class Dict:
            @staticmethod
            def from_name(name: str, *, environment_name: str | None = None,
                          create_if_missing: bool = False) -> FakeDict:
                sdk.lookups.append(("Dict", name, environment_name))
                return FakeDict(sdk, name)

        self.Function, self.FunctionCall, self.Volume, self.Dict = (
            Function, FunctionCall, Volume, Dict)

    def _spawn(self, fn: FakeFunction, payload: dict[str, Any]) -> FakeCall:
        if not self.deployed:
            raise modal.exception.NotFoundError(
                f"Lookup failed for Function '{fn.name}' from the '{fn.app}' app: App not found")
        call = FakeCall(self, f"fc-{next(self._ids):04d}")
        self.calls[call.object_id] = call
        self.spawned.append((fn.name, payload))
        handler = self.handlers.get(fn.name)
        if handler is not None:
            try:
                call.finish(handler(payload))
            except Exception as exc:
                call.fail(exc)
        return call


# ---------------------------------------------------------------------------------------
# Fixtures

APP, VOLUME = "canvascast", "canvascast-render-cache"


class Sleeps:
    def __init__(self) -> None:
        self.delays: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


@pytest.fixture
def sdk() -> FakeModal:
    fake = FakeModal()
    fake.volumes[VOLUME] = {}
    return fake


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
def backend(sdk: FakeModal, sleeps: Sleeps) -> Any:
    made = ModalBackend(APP, VOLUME, environment="staging", timeout=2.0, sdk=sdk,
                        retry=RetryPolicy(attempts=3, sleep=sleeps))
    yield made
    made.close()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------------------------------
# The exception table


def modal_exception_classes() -> dict[str, type[BaseException]]:
    """Every exception class the installed ``modal.exception`` offers by a public name."""
    return {name: cls for name, cls in inspect.getmembers(modal.exception, inspect.isclass)
            if issubclass(cls, BaseException) and not name.startswith("_")}


def test_every_modal_exception_class_has_a_row() -> None:
    classes = modal_exception_classes()
    assert len(classes) > 40  # the enumeration really found them
    assert sorted(set(classes) - set(MODAL_EXCEPTIONS)) == []


def test_every_row_names_a_class_of_the_installed_modal() -> None:
    classes = modal_exception_classes()
    assert sorted(set(MODAL_EXCEPTIONS) - set(classes)) == []
    for name in MODAL_EXCEPTIONS:
        assert classes[name].__module__ in MODAL_MODULES, name


@pytest.mark.parametrize("name", sorted(MODAL_EXCEPTIONS))
def test_each_modal_exception_maps_to_a_registered_error(name: str) -> None:
    cls = modal_exception_classes()[name]
    try:
        exc = cls("boom")
    except TypeError:  # a class with another constructor
        exc = cls.__new__(cls)
    error = to_canvascast(exc, doing="doing it")
    rule = MODAL_EXCEPTIONS[name]
    assert isinstance(error, rule.error)
    assert isinstance(error, ERRORS[error.code])  # its code is registered: crosses the API
    assert error.message.startswith("doing it: ")
    assert name in error.message


@pytest.mark.parametrize(("exc", "expected", "retryable"), [
    (modal.exception.AuthError("Token missing"), AuthFailed, False),
    (modal.exception.ConnectionError("cannot connect"), ModalUnavailable, True),
    (modal.exception.FunctionTimeoutError("timed out"), JobTimedOut, False),
    (modal.exception.InternalFailure("worker lost"), ServerError, True),
    (modal.exception.RemoteError("OOM killed"), ContainerCrash, True),
    (modal.exception.OutputExpiredError("expired"), JobFailed, False),
    (modal.exception.InvalidError("bad"), InvalidInput, False),
    (modal.exception.NotFoundError("App not found"), ModalUnavailable, True),
    (modal.exception.ResourceExhaustedError("slow down"), RateLimited, True),
    (TimeoutError(), Timeout, True),
    (FileNotFoundError("gone"), NotFound, False),
    (ConnectionResetError("reset"), ConnectionFailed, True),
    (KeyError("engine bug"), JobFailed, False),
])
def test_mapping_examples(exc: BaseException, expected: type[CanvasCastError],
                          retryable: bool) -> None:
    error = to_canvascast(exc)
    assert isinstance(error, expected)
    assert error.retryable is retryable


def test_specific_messages_say_what_to_do() -> None:
    assert "modal token new" in to_canvascast(modal.exception.AuthError("x")).message
    not_deployed = to_canvascast(modal.exception.NotFoundError("App not found"))
    assert "modal deploy -m modal_functions.app" in not_deployed.message
    timed_out = to_canvascast(modal.exception.FunctionTimeoutError("x"), function="render_video")
    assert not timed_out.retryable and timed_out.code == "JOB_TIMEOUT"
    assert "[functions.render_video]" in timed_out.message
    assert "CANVASCAST_FUNCTIONS__RENDER_VIDEO__TIMEOUT" in timed_out.message
    expired = to_canvascast(modal.exception.OutputExpiredError("x"))
    assert "expired" in expired.message and "again" in expired.message
    # A job id Modal does not know is NotFound, not "deploy the app".
    unknown = to_canvascast(modal.exception.NotFoundError("x"), job_id="fc-1")
    assert isinstance(unknown, NotFound)
    # Messages are kept short (remote tracebacks are long).
    assert len(to_canvascast(modal.exception.RemoteError("x" * 5000)).message) < 1000


def test_builtins_are_checked_after_modal_classes() -> None:
    # modal's own TimeoutError does not subclass the builtin one (notes/modal.md).
    assert not issubclass(modal.exception.TimeoutError, TimeoutError)
    assert BUILTIN_EXCEPTIONS[0][0] is TimeoutError


def test_job_outcomes_versus_failures_to_ask() -> None:
    for exc in (modal.exception.FunctionTimeoutError("x"), modal.exception.RemoteError("x"),
                modal.exception.OutputExpiredError("x"), modal.exception.InternalFailure("x"),
                modal.exception.InputCancellation("x"), Timeout("raised in the container"),
                ZeroDivisionError()):
        assert is_job_outcome(exc), exc
    for asking in (modal.exception.AuthError("x"), modal.exception.ConnectionError("x"),
                   modal.exception.ServiceError("x"), modal.exception.NotFoundError("x"),
                   ConnectionResetError()):
        assert not is_job_outcome(asking), asking


def test_call_status_shapes() -> None:
    entry = {"function": "render_video", "done": 10, "total": 40, "unit": "frames"}
    assert call_status("fc-1", PENDING, entry=None).state == "queued"
    running = call_status("fc-1", PENDING, entry=entry)
    assert running.model_dump(exclude_none=True) == {
        "id": "fc-1", "function": "render_video", "state": "running",
        "progress": {"done": 10, "total": 40, "unit": "frames"}}
    done = call_status("fc-1", {"artifacts": []}, function="render_video")
    assert done.state == "done" and done.result is not None and done.result.artifacts == []
    failed = call_status("fc-1", failure_result(GpuOutOfMemory("too big")))
    assert failed.state == "failed" and failed.error == ErrorBody(
        code="GPU_OOM", message="too big", retryable=False)
    crashed = call_status("fc-1", modal.exception.RemoteError("killed"))
    assert crashed.error is not None and crashed.error.code == "CONTAINER_CRASH"
    assert crashed.error.retryable
    cancelled = call_status("fc-1", modal.exception.RemoteError("x"), cancelled=True)
    assert cancelled.state == "cancelled"
    # A result that arrived before the cancellation stands.
    assert call_status("fc-1", {"artifacts": []}, cancelled=True).state == "done"
    odd = call_status("fc-1", "not a dict")
    assert odd.state == "failed" and odd.error is not None and "version" in odd.error.message


# ---------------------------------------------------------------------------------------
# The backend


def test_module_imports_no_modal() -> None:
    import subprocess
    import sys

    code = ("import sys; import canvascast_cli.dispatch.modal_backend, "
            "canvascast_cli.protocol.modal_calls; print('modal' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"


def test_from_settings_reads_the_app_table(sdk: FakeModal) -> None:
    from canvascast_cli.config import load_config

    settings = load_config(search=False, env={"CANVASCAST_APP__ENVIRONMENT": "prod"}).settings
    made = ModalBackend.from_settings(settings, sdk=sdk)
    try:
        assert (made.app_name, made.volume_name, made.environment) == (
            "canvascast", "canvascast-render-cache", "prod")
        assert "token" not in repr(made).lower()
    finally:
        made.close()


def test_submit_spawns_and_status_polls(backend: ModalBackend, sdk: FakeModal) -> None:
    job_id = backend.submit("render_video", RENDER)
    assert job_id == "fc-0001"
    assert sdk.spawned == [("render_video", RENDER.model_dump(mode="json"))]
    assert ("Function", "canvascast/render_video", "staging") in sdk.lookups
    assert backend.status(job_id).state == "queued"  # no container has started it

    progress = sdk.dicts["canvascast-progress"]
    progress[job_id] = {"function": "render_video", "done": 5, "total": 20, "unit": "frames"}
    running = backend.status(job_id, wait=20)
    assert running.state == "running" and running.progress is not None
    assert running.progress.model_dump() == {"done": 5, "total": 20, "unit": "frames"}
    assert sdk.calls[job_id].waits[-1] == 20  # the long poll is Modal's own get(timeout=)

    sdk.calls[job_id].finish({"artifacts": [{"name": "video.mp4", "sha256": "c" * 64,
                                             "size": 1}], "billed_seconds": 3.0})
    done = backend.status(job_id)
    assert done.state == "done" and done.function == "render_video"
    assert done.result is not None and done.result.billed_seconds == 3.0


def test_job_failures_become_failed_statuses(backend: ModalBackend, sdk: FakeModal) -> None:
    job_id = backend.submit("transcribe_audio", TRANSCRIBE)
    sdk.calls[job_id].fail(modal.exception.FunctionTimeoutError("ran 180 s"))
    status = backend.status(job_id)
    assert status.state == "failed" and status.error is not None
    # Not retried: the job said how long it may take; the message says what to raise.
    assert status.error.code == "JOB_TIMEOUT" and not status.error.retryable
    assert "[functions.transcribe_audio]" in status.error.message

    sdk.calls[job_id].finish(failure_result(InvalidInput("audio: not a WAV")))
    status = backend.status(job_id)
    assert status.error == ErrorBody(code="INVALID_INPUT", message="audio: not a WAV",
                                     retryable=False)

    sdk.calls[job_id].state = "expired"
    status = backend.status(job_id)
    assert status.state == "failed" and status.error is not None
    assert "expired" in status.error.message and not status.error.retryable


def test_a_failed_poll_is_retried_then_raised(backend: ModalBackend, sdk: FakeModal,
                                              sleeps: Sleeps) -> None:
    job_id = backend.submit("render_video", RENDER)
    sdk.calls[job_id].fail(modal.exception.ConnectionError("cannot connect"))
    with pytest.raises(ModalUnavailable, match="poll job fc-0001"):
        backend.status(job_id)
    assert len(sleeps.delays) == 2  # three attempts, nothing slept for real


def test_unknown_job_ids(backend: ModalBackend, sdk: FakeModal) -> None:
    with pytest.raises(NotFound):
        backend.status("not-a-job")
    assert sdk.log == []  # refused without asking Modal
    with pytest.raises(NotFound, match="fc-9999"):
        backend.status("fc-9999")


def test_not_deployed_says_deploy(backend: ModalBackend, sdk: FakeModal) -> None:
    sdk.deployed = False
    with pytest.raises(ModalUnavailable, match=r"modal deploy -m modal_functions\.app"):
        backend.submit("render_video", RENDER)
    assert sdk.log.count("Function.spawn") == 1  # a spawn is never retried
    with pytest.raises(InvalidInput):
        backend.submit("make_coffee", RENDER)


def test_cancel(backend: ModalBackend, sdk: FakeModal) -> None:
    job_id = backend.submit("generate_images", IMAGES)
    status = backend.cancel(job_id)
    assert sdk.calls[job_id].cancelled
    assert status.state == "cancelled"
    assert sdk.dicts["canvascast-progress"]["cancelled:" + job_id] is True
    # Another client (no memory of the cancel) sees it through the Dict.
    other = ModalBackend(APP, VOLUME, sdk=sdk)
    try:
        assert other.status(job_id).state == "cancelled"
    finally:
        other.close()


def test_blobs_round_trip(backend: ModalBackend, sdk: FakeModal, tmp_path: Path) -> None:
    data = b"narration bytes" * 100
    digest = sha(data)
    source = tmp_path / "narration.wav"
    source.write_bytes(data)
    absent = sha(b"other")
    assert backend.missing([digest, absent, digest]) == [digest, absent]

    seen: list[int] = []
    assert backend.upload(digest, source, on_bytes=seen.append) == len(data)
    assert seen == [len(data)]
    assert sdk.volumes[VOLUME][blob_path(digest)] == data
    assert backend.missing([digest, absent]) == [absent]
    backend.upload(digest, source)  # already there: harmless (content-addressed)

    target = tmp_path / "out.bin"
    progress: list[int] = []
    assert backend.download(digest, target, on_bytes=progress.append) == len(data)
    assert target.read_bytes() == data
    assert progress[-1] == len(data) and len(progress) > 1


def test_upload_checks_the_hash_first(backend: ModalBackend, sdk: FakeModal,
                                      tmp_path: Path) -> None:
    source = tmp_path / "a.jpg"
    source.write_bytes(b"changed since it was hashed")
    with pytest.raises(IntegrityError, match="hashes to"):
        backend.upload(sha(b"original"), source)
    assert sdk.volumes[VOLUME] == {}


def test_download_verifies(backend: ModalBackend, sdk: FakeModal, tmp_path: Path) -> None:
    data = b"video"
    sdk.volumes[VOLUME][blob_path(sha(data))] = data
    sdk.corrupt[blob_path(sha(data))] = b"vide0"
    with pytest.raises(IntegrityError, match="hash to"):
        backend.download(sha(data), tmp_path / "v.mp4")
    with pytest.raises(NotFound, match="not on the Volume"):
        backend.download(sha(b"never uploaded"), tmp_path / "x.mp4")


def test_missing_volume_says_deploy(sdk: FakeModal, sleeps: Sleeps) -> None:
    del sdk.volumes[VOLUME]
    made = ModalBackend(APP, VOLUME, sdk=sdk, retry=RetryPolicy(attempts=1, sleep=sleeps))
    try:
        with pytest.raises(ModalUnavailable, match="modal deploy"):
            made.missing([sha(b"x")])
    finally:
        made.close()


@pytest.mark.parametrize(("method", "call"), [
    ("Function.spawn", lambda b, p: b.submit("render_video", RENDER)),
    ("FunctionCall.get", lambda b, p: b.status("fc-0001", wait=0.0)),
    ("Volume.listdir", lambda b, p: b.missing([sha(b"x")])),
    ("Volume.hydrate", lambda b, p: b.missing([sha(b"x")])),
    ("Volume.read_file", lambda b, p: b.download(sha(b"x"), p / "out")),
    ("FunctionCall.cancel", lambda b, p: b.cancel("fc-0001")),
])
def test_a_hanging_sdk_call_is_cut_by_the_timeout(
        sdk: FakeModal, sleeps: Sleeps, tmp_path: Path, method: str,
        call: Callable[[ModalBackend, Path], Any]) -> None:
    sdk.calls["fc-0001"] = FakeCall(sdk, "fc-0001")
    sdk.volumes[VOLUME][blob_path(sha(b"x"))] = b"x"
    sdk.hang.add(method)
    made = ModalBackend(APP, VOLUME, timeout=0.05, sdk=sdk,
                        retry=RetryPolicy(attempts=2, sleep=sleeps))
    began = time.monotonic()
    try:
        with pytest.raises(Timeout, match="no answer from Modal"):
            call(made, tmp_path)
    finally:
        made.close()
    assert time.monotonic() - began < 2.0  # two attempts of 0.05 s, not the SDK's ~60 s
    assert method in sdk.log


def test_the_real_sdk_without_a_token_fails_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    """The installed modal, no credentials: AuthFailed at once, no network needed."""
    import modal.config

    for name in ("MODAL_TOKEN_ID", "MODAL_TOKEN_SECRET", "MODAL_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    if modal.config.config.get("token_id"):
        pytest.skip("a Modal token is configured on this machine (~/.modal.toml)")
    made = ModalBackend(APP, VOLUME, timeout=5.0, retry=RetryPolicy(attempts=1))
    began = time.monotonic()
    try:
        with pytest.raises(AuthFailed, match="modal token new"):
            made.submit("render_video", RENDER)
    finally:
        made.close()
    assert time.monotonic() - began < 5.0
