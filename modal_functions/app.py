"""canvascast on Modal: the three job functions, the job API, and their images.

    render_video      timeline -> MP4             (CPU; ffmpeg from imageio-ffmpeg)
    transcribe_audio  audio -> words with times   (GPU; faster-whisper, weights baked in)
    generate_images   prompts -> images           (GPU; diffusers FLUX.1-schnell baked in)
    api               the job API (``canvascast_cli.server.app``) as an ASGI app
    reconcile_warm_pools  [warm]'s windows -> each function's min_containers (scheduled;
                      defined only when modal.toml has ``[[warm.windows]]``)

Deploy: ``modal deploy -m modal_functions.app`` (or ``modal deploy modal_functions/app.py``)
from the repository, with canvascast installed (``pip install -e .``). docs/modal.md has
the whole set-up (token, secrets, endpoint, costs).

Every function is a thin wrapper around ``canvascast_cli.server.work.execute``, the code
``canvascast serve`` runs too. Their resources, timeouts, retries and scaling come from
the project's ``modal.toml`` (read here at import, through ``function_options``); inputs
and results are content-addressed blobs on the Volume named by ``[app] volume``; progress
goes to the ``<app>-progress`` Dict, keyed by the function call's id, which is the job id.

Functions, not classes: the client looks them up with ``modal.Function.from_name(app,
"render_video")``, which ``@app.cls`` methods cannot be. ``@modal.enter`` exists only on
classes, so the same effect is had by hand: each image names its role
(``CANVASCAST_MODAL_ROLE``), and when this module is imported in a container (once per
container, before its first input) ``warm_container`` imports that role's engines and
loads its default model into ``MODELS``, the container's ``ModelCache``, which every job
of the container is handed (the engines take it as an argument: a Whisper model or a
diffusers pipeline is loaded once per container). Locally nothing heavy is imported:
importing this module needs neither network nor token, nor torch.

Failures: a job's non-retryable failure (bad input, GPU out of memory, a job that ran
past its timeout, a bug) is returned as a failure result rather than raised, because
Modal re-runs every raised exception up to the function's ``retries``; retryable ones are
raised so Modal does retry them. ``canvascast_cli.protocol.modal_calls`` turns both, and
Modal's own exceptions, into the job status both the job API and the client's modal
backend report.
"""

from __future__ import annotations

import importlib
import os
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

import modal

from canvascast_cli import env
from canvascast_cli.engines.cache import ModelCache
from canvascast_cli.errors import CanvasCastError, JobFailed, ServerError
from canvascast_cli.ops.fleet import ModalFleet
from canvascast_cli.ops.windows import (
    OVERRIDES_KEY,
    Applied,
    ReconcileError,
    cron_expression,
    parse_overrides,
    reconcile,
)
from canvascast_cli.protocol import (
    JobStatus,
    Payload,
    function,
    is_ping,
    parse_ref,
    payload_refs,
)
from canvascast_cli.protocol.modal_calls import (
    cancel_key,
    check_call_id,
    failure_result,
    get_outcome,
    poll,
    progress_dict_name,
    read_notes,
    to_canvascast,
)
from canvascast_cli.server.idempotency import conflict
from modal_functions.images import ROLE_ENV, build_images, load_app_config
from modal_functions.resources import RECONCILER_OPTIONS, function_options

VOLUME_PATH = "/vol"  # where the blob Volume is mounted (BlobStore root)
API_SECRET = "canvascast-api"  # a Modal Secret holding MODAL_TOKEN, the job API's bearer
PROGRESS_INTERVAL = 2.0  # seconds between progress writes (the last one always goes)
# Requests one web container serves at once: the job API mostly waits (long polls, blob
# streams), so one container holds many; Modal adds containers beyond that. Kept under
# the 40 worker threads Starlette runs blocking calls in, so a container full of long
# polls still has threads for blob requests.
WEB_CONCURRENCY = 32

# Locally: modal.toml and CANVASCAST_* as the CLI reads them; in a container: the copy of
# those effective settings its image carries (modal_functions/images.py).
config = load_app_config()
settings = config.settings

app = modal.App(settings.app.name)
volume = modal.Volume.from_name(settings.app.volume, create_if_missing=True)
progress_store = modal.Dict.from_name(progress_dict_name(settings.app.name),
                                      create_if_missing=True)
api_secret = modal.Secret.from_name(API_SECRET, required_keys=[env.MODAL_TOKEN])
# [storage] provider = "supabase": the job functions upload results from their containers
# (a payload's upload) with the project's URL and key from this Secret.
STORAGE_SECRET = "canvascast-storage"
storage_secrets = ([modal.Secret.from_name(STORAGE_SECRET, required_keys=[
    settings.storage.url_env, settings.storage.key_env])]
    if settings.storage.provider == "supabase" else [])

# The images: packages at the versions in requirements.lock, the settings above, canvascast.
app_images = build_images(config)
render_image = app_images.render
whisper_image = app_images.whisper
images_image = app_images.images
web_image = app_images.web

# ---------------------------------------------------------------------------------------
# Inside a container

MODELS = ModelCache()  # what this container's jobs load, kept for its life


class ProgressWriter:
    """``work.execute``'s progress callback: ``{done, total, unit}`` into the progress Dict
    under the call's id, at most every ``interval`` s (the final one always). Best effort:
    a failed write never fails the job."""

    def __init__(self, store: Any, key: str | None, function: str, *,
                 interval: float = PROGRESS_INTERVAL,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.key = key
        self.function = function
        self.interval = interval
        self.clock = clock
        self._last: float | None = None

    def start(self) -> None:
        """The job has a container (a status with no entry is still queued)."""
        self._put({"function": self.function, "done": 0, "total": None, "unit": "",
                    "started": time.time()})

    def __call__(self, done: float, total: float, unit: str) -> None:
        now = self.clock()
        final = bool(total) and done >= total
        if not final and self._last is not None and now - self._last < self.interval:
            return
        self._last = now
        self._put({"function": self.function, "done": done, "total": total, "unit": unit,
                   "updated": time.time()})

    def _put(self, entry: dict[str, Any]) -> None:
        if self.key is None:  # not in a Modal call (fn.local(), tests)
            return
        try:
            self.store.put(self.key, entry)
        except Exception as exc:
            print(f"canvascast: progress not recorded ({type(exc).__name__})", file=sys.stderr)


def volume_store(volume: Any, root: str | Path = VOLUME_PATH) -> Any:
    """The blob store on the Volume. Uploads are spooled on the container's own disk and
    moved in only when complete, so nothing is open on the Volume when it commits (an
    open file makes the next ``reload()`` fail)."""
    from canvascast_cli.server.blobs import BlobStore

    spool = Path(tempfile.gettempdir()) / "canvascast-spool"
    return BlobStore(Path(root), spool=spool, after_write=volume.commit,
                     before_read=lambda: reload_quietly(volume))


def run_job(function_name: str, payload: dict[str, Any], *, volume: Any, progress: Any,
            call_id: str | None, root: str | Path = VOLUME_PATH,
            models: ModelCache | None = None) -> dict[str, Any]:
    """One job in this container: see the new blobs, run it, return its result (or a
    failure result for a failure Modal must not retry). ``PING_PAYLOAD`` (``canvascast
    warm ping``) is answered without work."""
    from canvascast_cli.server.work import execute, ping

    if is_ping(payload):
        return ping().model_dump(mode="json")

    volume.reload()  # blobs uploaded since this container mounted the Volume
    report = ProgressWriter(progress, call_id, function_name)
    report.start()
    try:
        result = execute(function_name, payload, volume_store(volume, root), report,
                         models=models if models is not None else MODELS)
    except CanvasCastError as exc:
        if exc.retryable:
            raise  # Modal retries it (the function's retries=), then the client sees it
        return failure_result(exc)
    except Exception as exc:  # a bug, not bad luck: running it again would not help
        return failure_result(JobFailed(f"{function_name} failed: {type(exc).__name__}: "
                                        f"{exc}"))
    return result.model_dump(mode="json")


def reload_quietly(volume: Any) -> None:
    """``volume.reload()``, which fails while this container holds Volume files open (a
    blob being streamed): then the caller sees what this container already sees."""
    try:
        volume.reload()
    except Exception as exc:
        print(f"canvascast: Volume reload skipped ({type(exc).__name__}: {exc})",
              file=sys.stderr)


def warm_container(role: str | None, models: ModelCache | None = None) -> None:
    """What ``@modal.enter`` would do: import the role's engines and load its default
    model into ``models`` before the first input, so a warm container
    (``min_containers``) answers at once. A failure is only noted: the first job then
    loads (and reports) it itself."""
    if not role:
        return
    models = models if models is not None else MODELS
    try:
        if role == "transcribe_audio":
            from canvascast_cli.engines.transcribe import refine
            from canvascast_cli.engines.transcribe.models import resolve_model
            from canvascast_cli.engines.transcribe.pipeline import load_recogniser

            load_recogniser(resolve_model("faster-whisper", "tiny.en", names_only=True),
                            models=models)
            if refine.unavailable("en") is None:
                refine.get_refiner()  # the aligner's dictionary, kept for every job
        elif role == "generate_images":
            from canvascast_cli.engines.images.providers import DEFAULT_MODELS
            from canvascast_cli.server.work import image_provider

            provider: Any = image_provider("diffusers", DEFAULT_MODELS["diffusers"],
                                           models=models)
            provider._pipeline()  # the weights, onto the GPU (what the first job would do)
        elif role == "render_video":
            importlib.import_module("canvascast_cli.engines.render.job")  # OpenCV, numpy
        elif role == "api":
            importlib.import_module("canvascast_cli.server.app")  # FastAPI
    except Exception as exc:
        print(f"canvascast: warm-up for {role} failed ({type(exc).__name__}: {exc}); the "
              "first job will try again", file=sys.stderr)


if not modal.is_local():  # in a container: once, before its first input
    warm_container(os.environ.get(ROLE_ENV))

# ---------------------------------------------------------------------------------------
# The functions

VOLUMES: dict[str | PurePosixPath, modal.Volume | modal.CloudBucketMount] = {
    VOLUME_PATH: volume}


@app.function(image=render_image, volumes=VOLUMES, secrets=storage_secrets,
              **function_options(settings, "render_video"))
def render_video(payload: dict[str, Any]) -> dict[str, Any]:
    """Render a timeline (blob references) to an MP4 blob."""
    return run_job("render_video", payload, volume=volume, progress=progress_store,
                   call_id=modal.current_function_call_id())


@app.function(image=whisper_image, volumes=VOLUMES, secrets=storage_secrets,
              **function_options(settings, "transcribe_audio"))
def transcribe_audio(payload: dict[str, Any]) -> dict[str, Any]:
    """Transcribe an audio blob to a transcript blob (words with times)."""
    return run_job("transcribe_audio", payload, volume=volume, progress=progress_store,
                   call_id=modal.current_function_call_id())


@app.function(image=images_image, volumes=VOLUMES, secrets=storage_secrets,
              **function_options(settings, "generate_images"))
def generate_images(payload: dict[str, Any]) -> dict[str, Any]:
    """Generate one batch of images (blobs), one invocation per batch."""
    return run_job("generate_images", payload, volume=volume, progress=progress_store,
                   call_id=modal.current_function_call_id())


JOB_FUNCTIONS: dict[str, Any] = {"render_video": render_video,
                                 "transcribe_audio": transcribe_audio,
                                 "generate_images": generate_images}

# ---------------------------------------------------------------------------------------
# The job API


class ModalRunner:
    """The job API's ``Runner`` on Modal: a job is a spawned call of one of the functions;
    its id is the call's id, so any web container (or the CLI's modal backend) can poll
    it. Its status is read the one way both sides read it (``modal_calls.poll``), with
    progress and cancellations from the progress Dict."""

    def __init__(self, functions: Mapping[str, Any], progress: Any, *, sdk: Any = modal) -> None:
        self.functions = dict(functions)
        self.progress = progress
        self.sdk = sdk
        self._live: dict[str, set[str]] = {}  # jobs started here, not seen finished: blobs
        self._started: dict[str, str] = {}  # job id -> function, for jobs started here

    def submit(self, function_name: str, payload: Payload) -> str:
        function(function_name)
        fn = self.functions[function_name]
        try:
            call = fn.spawn(payload.model_dump(mode="json"))
        except Exception as exc:
            raise to_canvascast(exc, doing=f"start {function_name}") from None
        job_id = str(call.object_id)
        self._started[job_id] = function_name
        self._live[job_id] = {blob[0] for blob in map(parse_ref, payload_refs(payload)
                                                      .values()) if blob}
        return job_id

    def status(self, job_id: str, wait: float = 0.0) -> JobStatus:
        check_call_id(job_id)
        call = self.sdk.FunctionCall.from_id(job_id)
        wait = max(0.0, float(wait))
        status = poll(job_id, get_outcome(lambda: call.get(timeout=wait)),
                      lambda finished: self._notes(job_id, finished),
                      function=self._started.get(job_id))
        if status.finished_state:
            self._live.pop(job_id, None)
        return status

    def cancel(self, job_id: str) -> JobStatus:
        check_call_id(job_id)
        try:
            self.sdk.FunctionCall.from_id(job_id).cancel()
        except Exception as exc:
            raise to_canvascast(exc, doing=f"cancel job {job_id}", job_id=job_id) from None
        try:
            self.progress.put(cancel_key(job_id), True)
        except Exception as exc:
            print(f"canvascast: cancellation of {job_id} not noted ({type(exc).__name__})",
                  file=sys.stderr)
        return self.status(job_id, 0.0)

    def live_blobs(self) -> set[str]:
        """Blobs of the jobs this container started and has not seen finish. (Other
        containers' jobs are protected by retention's age floor: ``blobs_days`` is at
        least twice the longest function timeout.)"""
        return set().union(*self._live.values()) if self._live else set()

    def close(self) -> None:
        return None

    def _notes(self, job_id: str, finished: bool) -> Any:
        try:
            return read_notes(self.progress.get, job_id, finished)
        except Exception:  # progress is a nicety; the status stands without it
            return None


class DictKeys:
    """Idempotency-Keys kept in the progress Dict, so every web container agrees: the
    first request with a key claims it atomically (``put(..., skip_if_exists=True)``),
    the others wait for the job id it records."""

    PREFIX = "idempotency:"

    def __init__(self, store: Any, *, wait: float = 20.0, sleep: Callable[[float], None] =
                 time.sleep, clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.wait = wait
        self.sleep = sleep
        self.clock = clock

    def submit(self, key: str, fingerprint: str, create: Callable[[], str]) -> str:
        name = self.PREFIX + key
        if self.store.put(name, {"fingerprint": fingerprint, "id": None},
                          skip_if_exists=True):
            try:
                job_id = create()
            except BaseException:
                self.store.pop(name)  # the next request with the key tries again
                raise
            self.store.put(name, {"fingerprint": fingerprint, "id": job_id})
            return job_id
        deadline = self.clock() + self.wait
        while True:
            entry = self.store.get(name) or {}
            if entry.get("fingerprint") != fingerprint:
                raise conflict(key)
            if entry.get("id"):
                return str(entry["id"])
            if self.clock() > deadline:
                raise ServerError("another request with this Idempotency-Key is still "
                                  "starting its job; try again")
            self.sleep(0.2)


@app.function(image=web_image, volumes=VOLUMES, secrets=[api_secret])
@modal.concurrent(max_inputs=WEB_CONCURRENCY)
@modal.asgi_app()
def api() -> Any:
    """The job API (see ``canvascast_cli.server.app``); its URL is ``MODAL_ENDPOINT``."""
    from canvascast_cli.server.app import create_app
    from canvascast_cli.server.limits import Janitor

    token = os.environ.get(env.MODAL_TOKEN, "").strip()
    if not token:
        raise RuntimeError(f"the {API_SECRET!r} Modal Secret has no {env.MODAL_TOKEN}: "
                           f"modal secret create {API_SECRET} {env.MODAL_TOKEN}=<a long "
                           "random string>")
    store = volume_store(volume)
    runner = ModalRunner(JOB_FUNCTIONS, progress_store)
    janitor = Janitor.from_settings(store, runner.live_blobs, settings)
    return create_app(store, runner, token, keys=DictKeys(progress_store), janitor=janitor)


# ---------------------------------------------------------------------------------------
# The warm-pool reconciler (only with [[warm.windows]])



def reconcile_now(fleet: Any, store: Any, now: datetime, *,
                  using: Any = None) -> list[Applied]:
    """One reconciler run: each windowed function's min_containers set to what the
    windows say at ``now`` (``ops.windows.reconcile``), an operator's override (the
    progress Dict's ``OVERRIDES_KEY``, read best effort) instead where there is one. One
    line per function; a failed function is raised at the end, after the others."""
    overrides: dict[str, Any] = {}
    try:
        raw = store.get(OVERRIDES_KEY)
    except Exception as exc:
        print(f"canvascast: warm overrides not read ({type(exc).__name__}: {exc}); the "
              "windows apply", file=sys.stderr)
    else:
        overrides, problems = parse_overrides(raw)
        for problem in problems:
            print(f"canvascast: skipped: {problem}", file=sys.stderr)
    try:
        applied = reconcile(using or settings, fleet, now, overrides)
    except ReconcileError as exc:
        for done in exc.applied:
            print(f"canvascast: {done.line()}")
        for error in exc.errors:
            print(f"canvascast: not updated: {error}", file=sys.stderr)
        raise
    for done in applied:
        print(f"canvascast: {done.line()}")
    return applied


if settings.warm.windows:
    _warm_cron = cron_expression(settings)
    assert _warm_cron is not None  # there are windows

    @app.function(image=web_image, schedule=modal.Cron(_warm_cron,
                                                       timezone=settings.warm.timezone),
                  **RECONCILER_OPTIONS)
    def reconcile_warm_pools() -> None:
        """Keep each function's warm containers where [warm]'s windows say (no secrets:
        in a container the SDK acts as the app itself)."""
        fleet = ModalFleet(settings.app.name, environment=settings.app.environment)
        try:
            reconcile_now(fleet, progress_store, datetime.now(UTC))
        finally:
            fleet.close()
