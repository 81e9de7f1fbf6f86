"""canvascast on Modal: the three job functions, the job API, and their images.

    render_video      timeline -> MP4             (CPU; ffmpeg from imageio-ffmpeg)
    transcribe_audio  audio -> words with times   (GPU; faster-whisper, weights baked in)
    generate_images   prompts -> images           (GPU; diffusers FLUX.1-schnell baked in)
    api               the job API (``canvascast_cli.server.app``) as an ASGI app

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
loads its default model; ``reuse_models`` keeps every Whisper model and diffusers pipeline
a job loads for the container's life, by memoising the engines' factories in this process
(no engine code changed). Locally nothing heavy is imported: importing this module needs
neither network nor token, nor torch.

Failures: a job's non-retryable failure (bad input, GPU out of memory, a bug) is returned
as a failure result rather than raised, because Modal re-runs every raised exception up to
the function's ``retries``; retryable ones are raised so Modal does retry them.
``canvascast_cli.dispatch.modal_errors`` turns both, and Modal's own exceptions, into the
job status both backends report.
"""

from __future__ import annotations

import importlib
import os
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path, PurePosixPath
from typing import Any

import modal

from canvascast_cli import env
from canvascast_cli.dispatch.modal_errors import (
    PENDING,
    call_status,
    cancel_key,
    check_job_id,
    failure_result,
    is_job_outcome,
    progress_dict_name,
    to_canvascast,
)
from canvascast_cli.errors import CanvasCastError, InvalidInput, JobFailed
from modal_functions.images import ROLE_ENV, build_images, load_app_config
from modal_functions.resources import function_options

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

# The images: packages at the versions in requirements.lock, the settings above, canvascast.
app_images = build_images(config)
render_image = app_images.render
whisper_image = app_images.whisper
images_image = app_images.images
web_image = app_images.web

# ---------------------------------------------------------------------------------------
# Inside a container


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


def run_job(function: str, payload: dict[str, Any], *, volume: Any, progress: Any,
            call_id: str | None, root: str | Path = VOLUME_PATH) -> dict[str, Any]:
    """One job in this container: see the new blobs, run it, return its result (or a
    failure result for a failure Modal must not retry)."""
    from canvascast_cli.server.blobs import BlobStore
    from canvascast_cli.server.work import execute

    reuse_models(function)
    volume.reload()  # blobs uploaded since this container mounted the Volume
    store = BlobStore(Path(root), after_write=volume.commit,
                      before_read=lambda: reload_quietly(volume))
    report = ProgressWriter(progress, call_id, function)
    report.start()
    try:
        return execute(function, payload, store, report)
    except CanvasCastError as exc:
        if exc.retryable:
            raise  # Modal retries it (the function's retries=), then the client sees it
        return failure_result(exc)
    except Exception as exc:  # a bug, not bad luck: running it again would not help
        return failure_result(JobFailed(f"{function} failed: {type(exc).__name__}: {exc}"))


def reload_quietly(volume: Any) -> None:
    """``volume.reload()``, which fails while this container holds Volume files open (a
    blob being streamed): then the caller sees what this container already sees."""
    try:
        volume.reload()
    except Exception as exc:
        print(f"canvascast: Volume reload skipped ({type(exc).__name__}: {exc})",
              file=sys.stderr)


MODEL_CACHE: dict[tuple[Any, ...], Any] = {}  # per process: engines and pipelines loaded


def reuse_models(function: str) -> None:
    """Keep what ``function``'s engine loads for the life of this process (a container).

    The job code looks both factories up at call time, so replacing them in their modules
    is enough: ``transcribe.pipeline.create_engine`` (one Whisper model per model file,
    compute type and thread count) for transcribe_audio, ``images.providers.make_provider``
    for diffusers (one provider per model, which keeps its loaded pipeline) for
    generate_images. Rendering loads nothing worth keeping. Idempotent.
    """
    if function == "transcribe_audio":
        from canvascast_cli.engines.transcribe import pipeline

        if getattr(pipeline.create_engine, "canvascast_cached", False):
            return
        make_engine = pipeline.create_engine

        def cached_engine(model: Any, *, compute_type: str | None = None,
                          threads: int | None = None) -> Any:
            key = ("engine", model.engine, str(model.path), compute_type, threads)
            if key not in MODEL_CACHE:
                MODEL_CACHE[key] = make_engine(model, compute_type=compute_type,
                                               threads=threads)
            return MODEL_CACHE[key]

        cached_engine.canvascast_cached = True  # type: ignore[attr-defined]
        pipeline.create_engine = cached_engine
    elif function == "generate_images":
        from canvascast_cli.engines.images import providers

        if getattr(providers.make_provider, "canvascast_cached", False):
            return
        make_provider = providers.make_provider

        def cached_provider(name: str, model: str, **options: Any) -> Any:
            if name != "diffusers":  # the others hold nothing worth keeping
                return make_provider(name, model, **options)
            key = ("provider", name, model)
            if key not in MODEL_CACHE:
                MODEL_CACHE[key] = make_provider(name, model, **options)
            return MODEL_CACHE[key]

        cached_provider.canvascast_cached = True  # type: ignore[attr-defined]
        providers.make_provider = cached_provider


def warm_container(role: str | None) -> None:
    """What ``@modal.enter`` would do: import the role's engines and load its default
    model before the first input, so a warm container (``min_containers``) answers at
    once. A failure is only noted: the first job then loads (and reports) it itself."""
    if not role:
        return
    try:
        if role == "transcribe_audio":
            reuse_models(role)
            from canvascast_cli.engines.transcribe import pipeline
            from canvascast_cli.engines.transcribe.models import resolve_model

            pipeline.create_engine(resolve_model("faster-whisper", "tiny.en"))
            from canvascast_cli.engines.transcribe import refine

            if refine.unavailable("en") is None:
                refine.get_refiner()  # the aligner's dictionary, kept for every job
        elif role == "generate_images":
            reuse_models(role)
            from canvascast_cli.engines.images import providers

            provider: Any = providers.make_provider("diffusers",
                                                    providers.DEFAULT_MODELS["diffusers"])
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


@app.function(image=render_image, volumes=VOLUMES, **function_options(settings, "render_video"))
def render_video(payload: dict[str, Any]) -> dict[str, Any]:
    """Render a timeline (blob references) to an MP4 blob."""
    return run_job("render_video", payload, volume=volume, progress=progress_store,
                   call_id=modal.current_function_call_id())


@app.function(image=whisper_image, volumes=VOLUMES,
              **function_options(settings, "transcribe_audio"))
def transcribe_audio(payload: dict[str, Any]) -> dict[str, Any]:
    """Transcribe an audio blob to a transcript blob (words with times)."""
    return run_job("transcribe_audio", payload, volume=volume, progress=progress_store,
                   call_id=modal.current_function_call_id())


@app.function(image=images_image, volumes=VOLUMES,
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
    it. Progress and cancellations are read from the progress Dict."""

    def __init__(self, functions: Mapping[str, Any], progress: Any, *, sdk: Any = modal) -> None:
        self.functions = dict(functions)
        self.progress = progress
        self.sdk = sdk

    def submit(self, function: str, payload: dict[str, Any]) -> str:
        fn = self.functions.get(function)
        if fn is None:
            raise InvalidInput(f"unknown function {function!r}; allowed: "
                               f"{', '.join(self.functions)}")
        try:
            call = fn.spawn(payload)
        except Exception as exc:
            raise to_canvascast(exc, doing=f"start {function}") from None
        return str(call.object_id)

    def status(self, job_id: str, wait: float = 0.0) -> dict[str, Any]:
        check_job_id(job_id)
        call = self.sdk.FunctionCall.from_id(job_id)
        outcome: Any
        try:
            outcome = call.get(timeout=max(0.0, float(wait)))
        except TimeoutError:  # the builtin one: not finished yet
            outcome = PENDING
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:  # InputCancellation is a BaseException
            if not is_job_outcome(exc):
                raise to_canvascast(exc, doing=f"poll job {job_id}", job_id=job_id) from None
            outcome = exc
        finished = not isinstance(outcome, BaseException) and outcome is not PENDING
        entry, cancelled = self._notes(job_id, finished)
        return call_status(job_id, outcome, entry=entry, cancelled=cancelled)

    def cancel(self, job_id: str) -> dict[str, Any]:
        check_job_id(job_id)
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

    def close(self) -> None:
        return None

    def _notes(self, job_id: str, finished: bool) -> tuple[Any, bool]:
        try:
            entry = self.progress.get(job_id)
            flagged = False if finished else bool(self.progress.get(cancel_key(job_id)))
        except Exception:  # progress is a nicety; the status stands without it
            return None, False
        return entry, flagged


@app.function(image=web_image, volumes=VOLUMES, secrets=[api_secret])
@modal.concurrent(max_inputs=WEB_CONCURRENCY)
@modal.asgi_app()
def api() -> Any:
    """The job API (see ``canvascast_cli.server.app``); its URL is ``MODAL_ENDPOINT``."""
    from canvascast_cli.server.app import create_app
    from canvascast_cli.server.blobs import BlobStore

    token = os.environ.get(env.MODAL_TOKEN, "").strip()
    if not token:
        raise RuntimeError(f"the {API_SECRET!r} Modal Secret has no {env.MODAL_TOKEN}: "
                           f"modal secret create {API_SECRET} {env.MODAL_TOKEN}=<a long "
                           "random string>")
    store = BlobStore(Path(VOLUME_PATH), after_write=volume.commit,
                      before_read=lambda: reload_quietly(volume))
    return create_app(store, ModalRunner(JOB_FUNCTIONS, progress_store), token)
