"""What a remote job is when it runs: the same code behind `canvascast serve` and Modal.

A job is a function name and its payload (``protocol.FUNCTIONS``: ``render_video``,
``transcribe_audio``, ``generate_images``). Files travel as blob references to bytes
already in the blob store; a timeline's images may also be http(s) URLs, fetched by the
worker from public addresses only (unless the host's operator allows others). A path on
the server's disk is never accepted, and a model is a name, never a path: a remote job
reads nothing but its blobs and the host's own models.

``check_inputs(payload, store)`` runs when a job is submitted (a bad timeline is a 400,
never a 500); ``execute(function, payload, store, ...)`` runs it in a worker (a `serve`
worker process, or a Modal container) and returns the ``JobResult``: artifacts stored as
blobs, the job's summary, and its timing. Errors name inputs by their blob reference,
never by the worker's temporary paths (the client puts its own file names back).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from canvascast_cli.engines.cache import ModelCache, load
from canvascast_cli.errors import CanvasCastError, InvalidInput, JobFailed
from canvascast_cli.protocol import (
    Artifact,
    ImageEntry,
    ImagesPayload,
    JobResult,
    Payload,
    PingReply,
    RenderPayload,
    StoredRef,
    TranscribePayload,
    is_url,
    parse_payload,
    parse_ref,
    payload_refs,
    rewrite_refs,
    timeline_refs,
)
from canvascast_cli.server.blobs import BlobStore

Progress = Callable[[float, float, str], None]  # (done, total, unit)

_FIRST_INPUT = True  # per process: is this the first job this container/worker runs?


def check_inputs(function: str, payload: Payload | Mapping[str, Any],
                 store: BlobStore | None) -> Payload:
    """The payload, parsed (``protocol.parse_payload``) with every file reference checked:
    a blob reference the store has (or, for images, an http(s) URL). InvalidInput lists
    every problem."""
    parsed = payload if isinstance(payload, Payload) else parse_payload(function, payload)
    problems: list[str] = []
    for field, ref in payload_refs(parsed).items():
        blob = parse_ref(ref)
        if blob is None:
            if field.endswith(".image") and is_url(ref):
                if not fetchable(ref):
                    problems.append(f"{field}: {ref[:100]!r} is not a valid http(s) URL")
                continue
            problems.append(f"{field}: {ref[:100]!r} is not a blob reference "
                            "(blob:<sha256><suffix>)" + (" or an http(s) URL"
                                                         if field.endswith(".image") else ""))
        elif store is not None and not store.has(blob[0]):
            problems.append(f"{field}: blob {blob[0]} has not been uploaded")
    if problems:
        raise InvalidInput(f"{function}: {len(problems)} problem(s) with the inputs",
                           details=problems)
    return parsed


def fetchable(url: str) -> bool:
    """Whether ``url`` parses as an http(s) URL with a host and a valid port (one that does
    not is the client's mistake, said at submit, not a worker's ValueError later)."""
    import httpx

    try:
        parsed = httpx.URL(url)
        port = urlsplit(url).port  # ValueError: out of range
    except (httpx.InvalidURL, ValueError):
        return False
    host = parsed.host
    return bool(host) and not any(c in host for c in "% ") and port != 0


def execute(function: str, payload: Payload | Mapping[str, Any], store: BlobStore,
            progress: Progress | None = None, *, workdir: Path | None = None,
            models: ModelCache | None = None, private_urls: bool = False) -> JobResult:
    """Run one job; its artifacts are stored as blobs before it returns.

    ``workdir``: the folder to work in (created, and removed afterwards); default a new
    temporary folder. ``models``: the host's cache of loaded models. ``private_urls``: let
    a timeline's image URLs reach private and loopback addresses (a dev loop's choice;
    never for a public job API)."""
    global _FIRST_INPUT
    first, _FIRST_INPUT = _FIRST_INPUT, False
    startup = process_age() if first else None
    parsed = check_inputs(function, payload, store)
    store.touch(blob[0] for blob in map(parse_ref, payload_refs(parsed).values()) if blob)
    began = time.perf_counter()
    key = result_key(parsed)
    cached = cached_result(store, key) if key is not None else None
    if cached is not None:  # done before: its artifacts are still in the store
        return uploaded(parsed, store, cached.model_copy(update={
            "billed_seconds": time.perf_counter() - began, "startup_seconds": startup,
            "container_id": container_id(), "cold_start": first, "cache": "hit"}))
    with _workdir(workdir) as work:
        try:
            if isinstance(parsed, RenderPayload):
                result = _render(parsed, store, work, progress, private_urls)
            elif isinstance(parsed, TranscribePayload):
                result = _transcribe(parsed, store, work, progress, models)
            else:
                assert isinstance(parsed, ImagesPayload)
                result = _images(parsed, store, progress, models)
        except CanvasCastError as exc:
            raise without_paths(exc, work) from None
        except Exception as exc:  # not foreseen (a bug, a full disk): still no paths
            failed = JobFailed(f"{function} failed: {type(exc).__name__}: {exc}")
            raise without_paths(failed, work) from exc
    if key is not None:
        keep_result(store, key, result)
    return uploaded(parsed, store, result.model_copy(update={
        "billed_seconds": time.perf_counter() - began, "startup_seconds": startup,
        "container_id": container_id(), "cold_start": first,
        "cache": "miss" if key is not None else "off"}))


# ---------------------------------------------------------------------------------------
# Uploads from the host (the payload's ``upload``): the artifacts go from here to the
# artifact store, so a large video does not travel through the client twice. The host's
# own credentials ([storage] and its key variables in this process's environment: the
# Modal Secret, or `serve`'s environment); without them nothing is uploaded here and the
# client uploads what it downloaded.

_HOST_STORE: list[Any] = []  # [store or None], opened on first use, per process


def host_artifact_store() -> Any:
    """This host's artifact store for uploads, or None (not Supabase, or no keys)."""
    if not _HOST_STORE:
        store = None
        try:
            from canvascast_cli.config import load_config
            from canvascast_cli.storage import open_store

            settings = load_config().settings
            if settings.storage.provider == "supabase":
                store = open_store(settings, os.environ)
        except CanvasCastError as exc:
            print(f"canvascast: no uploads from this host ({exc.message})", file=sys.stderr)
        _HOST_STORE.append(store)
    return _HOST_STORE[0]


def uploaded(payload: Payload, store: BlobStore, result: JobResult,
             artifacts: Any = None) -> JobResult:
    """``result`` with each artifact uploaded (``Artifact.stored``) when the payload asks
    for it and this host can; a failed upload is noted, never the job's failure (the
    client then uploads what it fetched)."""
    if not getattr(payload, "upload", False) or not result.artifacts:
        return result
    target = artifacts if artifacts is not None else host_artifact_store()
    if target is None:
        return result
    done = []
    for artifact in result.artifacts:
        try:
            put = target.put(store.path(artifact.sha256), sha256=artifact.sha256,
                             name=artifact.name)
        except CanvasCastError as exc:
            print(f"canvascast: {artifact.name} not uploaded from this host ({exc.message})",
                  file=sys.stderr)
            done.append(artifact)
            continue
        done.append(artifact.model_copy(update={"stored": StoredRef(
            provider=put.provider, location=put.location, object_path=put.object_path)}))
    return result.model_copy(update={"artifacts": done})


# ---------------------------------------------------------------------------------------
# The host's result cache: <store>/results/<key>.json, a JobResult whose artifacts are
# blobs in the same store (the keys are the client's: ``canvascast_cli.cache.keys``).

RESULTS = "results"


def result_key(payload: Payload) -> str | None:
    """The job's cache key, or None when it is not cached (the client sent cache=false,
    or a timeline names URLs)."""
    from canvascast_cli.cache.keys import payload_key

    return payload_key(payload)[0]


def _result_path(store: BlobStore, key: str) -> Path:
    return store.root / RESULTS / key[:2] / f"{key}.json"


def cached_result(store: BlobStore, key: str) -> JobResult | None:
    """The result kept under ``key`` when every artifact blob is still in the store (they
    are touched, so the pruner keeps them); an entry whose blobs were pruned, or that
    cannot be read, is removed."""
    path = _result_path(store, key)
    try:
        result = JobResult.model_validate_json(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        path.unlink(missing_ok=True)
        return None
    shas = [a.sha256 for a in result.artifacts]
    if not all(store.has(sha) for sha in shas):
        path.unlink(missing_ok=True)
        return None
    store.touch(shas)
    return result


def keep_result(store: BlobStore, key: str, result: JobResult) -> None:
    """Write the entry atomically (a temporary file in the store's tmp/, then a rename:
    two workers finishing the same job leave one whole entry). A failure to write it is
    not the job's failure."""
    path = _result_path(store, key)
    body = result.model_copy(update={"cache": None}).model_dump_json().encode("utf-8")
    tmp = store.root / "tmp" / f"result-{key}.{os.getpid()}.{time.monotonic_ns()}.part"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(body)
        os.replace(tmp, path)
    except OSError:
        return
    finally:
        tmp.unlink(missing_ok=True)
    store.commit()  # a Modal Volume: other containers see the entry


def ping() -> PingReply:
    """The answer to ``PING_PAYLOAD``: no work, but it is this container's input like any
    other (a first one is its cold start, and the next job is then warm)."""
    global _FIRST_INPUT
    first, _FIRST_INPUT = _FIRST_INPUT, False
    return PingReply(container_id=container_id(), cold_start=first,
                     startup_seconds=process_age() if first else None)


def container_id() -> str:
    """Modal's task id inside a Modal container; host and process id elsewhere."""
    return os.environ.get("MODAL_TASK_ID") or f"{socket.gethostname()}-{os.getpid()}"


def process_age() -> float | None:
    """Seconds since this process started (what a cold start cost before the first job
    could run: interpreter, imports, warm-up), from /proc; None where that is unknown."""
    try:
        stat = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return max(0.0, uptime - int(stat[19]) / ticks)
    except (OSError, ValueError, IndexError):
        return None


def without_paths(error: CanvasCastError, work: Path) -> CanvasCastError:
    """``error`` with the worker's own paths replaced: an input by its blob reference (the
    client knows which of its files that is), anything else in the job's folder by its
    name alone."""
    folder = str(work)

    def clean(text: str) -> str:
        if folder not in text:
            return text
        for entry in sorted(work.glob("*"), key=lambda p: -len(str(p))):
            blob = parse_ref("blob:" + entry.name)
            text = text.replace(str(entry), "blob:" + entry.name if blob else entry.name)
        return text.replace(folder + os.sep, "").replace(folder, "the job's folder")

    return error.rewritten(clean)


@contextmanager
def _workdir(folder: Path | None) -> Iterator[Path]:
    if folder is None:
        folder = Path(tempfile.mkdtemp(prefix="canvascast-job-"))
    else:
        folder.mkdir(parents=True, exist_ok=False)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _materialise(refs: Mapping[str, str], store: BlobStore, work: Path) -> dict[str, str]:
    """Link each referenced blob into ``work`` as ``<sha256><suffix>``."""
    mapping: dict[str, str] = {}
    for ref in set(refs.values()):
        parsed = parse_ref(ref)
        if parsed is None:
            continue
        sha, suffix = parsed
        target = work / f"{sha}{suffix}"
        if not target.exists():
            try:
                os.symlink(store.path(sha), target)
            except OSError:
                shutil.copyfile(store.path(sha), target)
        mapping[ref] = str(target)
    return mapping


def _artifact(name: str, sha: str, size: int) -> Artifact:
    return Artifact(name=name, sha256=sha, size=size)


def _render(payload: RenderPayload, store: BlobStore, work: Path, progress: Progress | None,
            private_urls: bool) -> JobResult:
    from canvascast_cli.engines.render.engine import RenderOptions
    from canvascast_cli.engines.render.job import RenderJob, run_render
    from canvascast_cli.records import dump
    from canvascast_cli.timeline import parse_timeline

    timeline = payload.timeline.model_dump(mode="json")
    mapping = _materialise(timeline_refs(timeline), store, work)
    options = payload.options
    # A split render's piece, its audio, or a whole video (or a join of pieces).
    name = ("piece.mp4" if options.video_only else "audio.m4a" if options.audio_only
            else "video.mp4")
    job = RenderJob(
        timeline=parse_timeline(rewrite_refs(timeline, mapping), source="timeline"),
        base_dir=work, output=work / name,
        options=RenderOptions(preset=options.preset, crf=options.crf,
                              frame_range=(options.frame_range[0], options.frame_range[1])
                              if options.frame_range else None,
                              video_only=options.video_only),
        allow_missing_glyphs=options.allow_missing_glyphs)
    report = (lambda done, total: progress(done, total, "frames")) if progress else None
    transport = None
    if not private_urls:
        from canvascast_cli.net import public_only

        transport = public_only()
    if options.audio_only:
        return _audio(job, store, transport)
    if options.pieces is not None:
        rendered = _join(job, options.pieces, options.audio, store, transport)
    else:
        rendered = run_render(job, progress=report, transport=transport)
    sha, size = store.put_file(job.output)
    summary = dump(rendered)
    summary.pop("output", None)
    return JobResult(artifacts=[_artifact(name, sha, size)], summary=summary,
                     units=float(rendered.frames), unit="frames")


def _resolved(job: Any, transport: Any) -> Any:
    from canvascast_cli.engines.render.inputs import resolve_timeline

    return resolve_timeline(job.timeline, job.base_dir, limits=job.limits,
                            allow_missing_glyphs=job.allow_missing_glyphs,
                            transport=transport)


def _audio(job: Any, store: BlobStore, transport: Any) -> JobResult:
    """A split render's audio, made while its pieces render: the whole video's mix,
    encoded once (``split.make_audio``), kept here for the join (``audio``)."""
    from canvascast_cli.engines.render.split import make_audio

    resolved = _resolved(job, transport)
    make_audio(resolved, job.output, options=job.options)
    sha, size = store.put_file(job.output)
    seconds = resolved.timeline.total_frames / resolved.output.fps
    return JobResult(artifacts=[_artifact(job.output.name, sha, size)],
                     summary={"audio_seconds": round(seconds, 6)}, units=0.0, unit="frames")


def _join(job: Any, pieces: Any, audio: str | None, store: BlobStore, transport: Any) -> Any:
    """A split render's join on the host: the pieces (and the audio an audio_only job
    made, if named) are blobs here, never fetched by the client; they are checked and
    joined by stream copy (without ``audio``, the audio is mixed here, once)."""
    from canvascast_cli.engines.render.split import join

    resolved = _resolved(job, transport)
    paths = [store.path(p.sha256) if store.has(p.sha256) else None for p in pieces]
    ranges = [(p.frames[0], p.frames[1]) for p in pieces]
    if audio is not None and not store.has(audio):
        raise JobFailed(f"the join's audio (blob {audio[:12]}…) is not on this host; "
                        "render again")
    return join(resolved, paths, ranges, job.output, options=job.options,
                audio=store.path(audio) if audio is not None else None)


def _transcribe(payload: TranscribePayload, store: BlobStore, work: Path,
                progress: Progress | None, models: ModelCache | None) -> JobResult:
    from canvascast_cli.engines.transcribe.job import TranscribeJob, run_transcribe
    from canvascast_cli.records import dump

    mapping = _materialise({"audio": payload.audio}, store, work)
    job = TranscribeJob(
        audio=Path(mapping[payload.audio]), engine=payload.engine, model=payload.model,
        language=payload.language, beam_size=payload.beam_size, offset=payload.offset,
        script=tuple(payload.script) if payload.script else None,
        compute_type=payload.compute_type,
        allow_script_mismatch=payload.allow_script_mismatch, refine=payload.refine,
        names_only=True)
    report = (lambda done, total: progress(done, total, "seconds")) if progress else None
    transcript = run_transcribe(job, progress=report, models=models)
    text = json.dumps(dump(transcript), ensure_ascii=False) + "\n"
    sha, size = store.put_bytes(text.encode("utf-8"))
    return JobResult(artifacts=[_artifact("transcript.json", sha, size)],
                     summary={"words": len(transcript.words),
                              "duration": transcript.duration},
                     units=transcript.duration, unit="seconds")


def image_provider(name: str, model: str, palette: list[str] | None = None,
                   models: ModelCache | None = None) -> Any:
    """The images provider for a job: a diffusers pipeline (seconds to load, gigabytes on
    the GPU) is kept in ``models``; the others hold nothing worth keeping."""
    from canvascast_cli.engines.images.providers import make_provider

    def build() -> Any:
        return make_provider(name, model, palette=palette)

    return load(models, ("images", name, model), build) if name == "diffusers" else build()


def _images(payload: ImagesPayload, store: BlobStore, progress: Progress | None,
            models: ModelCache | None) -> JobResult:
    from canvascast_cli.engines.images.base import ImageRequest
    from canvascast_cli.engines.images.pipeline import EXTENSIONS

    requests = [ImageRequest(**r.model_dump()) for r in payload.requests]
    provider = image_provider(payload.provider, payload.model, payload.palette or None,
                              models)
    # One batch is one invocation: a GPU out-of-memory fails the job (GPU_OOM) and the
    # client splits the batch and submits the halves, as it does locally.
    ignored = not provider.supports_negative_prompt and any(r.negative_prompt
                                                             for r in requests)
    if ignored:  # the model would not use it: say so rather than pretend
        requests = [replace(r, negative_prompt=None) for r in requests]
    results = provider.generate(requests)
    artifacts, images = [], []
    for request, result in zip(requests, results, strict=True):
        details = {**result.details, **({"negative_prompt_ignored": True} if ignored else {})}
        name = None
        if result.data is not None:
            name = f"image-{request.index:04d}{EXTENSIONS.get(result.mime_type or '', '.png')}"
            sha, size = store.put_bytes(result.data)
            artifacts.append(_artifact(name, sha, size))
        images.append(ImageEntry(index=request.index, blocked=result.blocked,
                                 mime_type=result.mime_type, details=details, artifact=name))
        if progress is not None:
            progress(len(images), len(requests), "images")
    return JobResult(artifacts=artifacts, images=images, provider=provider.name,
                     model=provider.model, units=float(len(requests)), unit="images")
