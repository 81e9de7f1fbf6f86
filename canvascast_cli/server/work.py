"""What a remote job is, on the wire and when it runs: the same code behind `serve` and Modal.

A job is ``(function, payload)``: ``render_video``, ``transcribe_audio`` or
``generate_images`` with a JSON payload. Files travel as blob references
(``"blob:<sha256><suffix>"``, e.g. ``blob:9f2c...e1.jpg``) to bytes already uploaded to
the blob store; images may also be http(s) URLs, fetched by the worker. A path on the
server's disk is never accepted: a remote job reads nothing but its blobs.

``validate(function, payload, store)`` runs when a job is submitted (a bad timeline is a
400, never a 500); ``execute(function, payload, store, progress)`` runs it in a worker
(a `canvascast serve` worker process, or a Modal container) and returns the result:
artifacts (name, size, sha256) stored as blobs, plus the job's own summary.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

from canvascast_cli.errors import InvalidInput
from canvascast_cli.server.blobs import BlobStore

FUNCTIONS = ("render_video", "transcribe_audio", "generate_images")
BLOB_REF = re.compile(r"^blob:(?P<sha>[0-9a-f]{64})(?P<suffix>\.[A-Za-z0-9]{1,8})?$")
Progress = Callable[[float, float, str], None]  # (done, total, unit)

_FIRST_INPUT = True  # per process: is this the first job this container/worker runs?


def blob_ref(sha: str, suffix: str = "") -> str:
    suffix = suffix.lower() if re.fullmatch(r"\.[A-Za-z0-9]{1,8}", suffix or "") else ""
    return f"blob:{sha}{suffix}"


def parse_ref(ref: str) -> tuple[str, str] | None:
    match = BLOB_REF.match(ref)
    return (match["sha"], match["suffix"] or "") if match else None


def _is_url(ref: str) -> bool:
    return ref.startswith(("http://", "https://"))


# ---------------------------------------------------------------------------------------
# The files a job reads (the client uploads them; the server checks they are there)


def render_refs(timeline: Mapping[str, Any]) -> dict[str, str]:
    """field -> reference, for every file a timeline (as JSON) names."""
    from canvascast_cli.engines.render.inputs import FONT_SUFFIXES

    refs: dict[str, str] = {}
    for i, scene in enumerate(timeline.get("scenes") or []):
        if isinstance(scene, dict) and isinstance(scene.get("image"), str):
            refs[f"scenes[{i}].image"] = scene["image"]
    for key in ("narration", "music"):
        value = timeline.get(key)
        if isinstance(value, str):
            refs[f"{key}.path"] = value
        elif isinstance(value, dict) and isinstance(value.get("path"), str):
            refs[f"{key}.path"] = value["path"]
    captions = timeline.get("captions")
    if isinstance(captions, dict):
        if isinstance(captions.get("transcript"), str):
            refs["captions.transcript"] = captions["transcript"]
        style = captions.get("style")
        font = style.get("font") if isinstance(style, dict) else None
        if isinstance(font, str) and font.lower().endswith(FONT_SUFFIXES):
            refs["captions.style.font"] = font
        elif isinstance(font, list):  # the font, then its fallbacks
            for i, item in enumerate(font):
                if isinstance(item, str) and item.lower().endswith(FONT_SUFFIXES):
                    refs[f"captions.style.font[{i}]"] = item
    return refs


def rewrite_refs(timeline: dict[str, Any], mapping: Mapping[str, str]) -> dict[str, Any]:
    """A copy of ``timeline`` with each file reference replaced by ``mapping[ref]``."""
    out = json.loads(json.dumps(timeline))

    def swap(value: Any) -> Any:
        return mapping.get(value, value) if isinstance(value, str) else value

    for scene in out.get("scenes") or []:
        if isinstance(scene, dict):
            scene["image"] = swap(scene.get("image"))
    for key in ("narration", "music"):
        value = out.get(key)
        if isinstance(value, str):
            out[key] = swap(value)
        elif isinstance(value, dict):
            value["path"] = swap(value.get("path"))
    captions = out.get("captions")
    if isinstance(captions, dict):
        if "transcript" in captions:
            captions["transcript"] = swap(captions["transcript"])
        style = captions.get("style")
        if isinstance(style, dict) and isinstance(style.get("font"), list):
            style["font"] = [swap(item) for item in style["font"]]
        elif isinstance(style, dict) and "font" in style:
            style["font"] = swap(style["font"])
    return out


def payload_refs(function: str, payload: Mapping[str, Any]) -> dict[str, str]:
    if function == "render_video":
        timeline = payload.get("timeline")
        return render_refs(timeline) if isinstance(timeline, dict) else {}
    if function == "transcribe_audio":
        audio = payload.get("audio")
        return {"audio": audio} if isinstance(audio, str) else {}
    return {}


# ---------------------------------------------------------------------------------------
# Submission-time checks


def validate(function: str, payload: Any, store: BlobStore | None) -> None:
    """Everything that can be known wrong before the job runs; InvalidInput lists it."""
    if function not in FUNCTIONS:
        raise InvalidInput(f"unknown function {function!r}; allowed: {', '.join(FUNCTIONS)}")
    if not isinstance(payload, dict):
        raise InvalidInput("the job payload must be a JSON object")
    problems: list[str] = []
    for field, ref in payload_refs(function, payload).items():
        parsed = parse_ref(ref)
        if parsed is None:
            if field.endswith(".image") and _is_url(ref):
                continue
            problems.append(f"{field}: {ref[:100]!r} is not a blob reference "
                            "(blob:<sha256><suffix>)" + (" or an http(s) URL"
                                                         if field.endswith(".image") else ""))
        elif store is not None and not store.has(parsed[0]):
            problems.append(f"{field}: blob {parsed[0]} has not been uploaded")
    if problems:
        raise InvalidInput(f"{function}: {len(problems)} problem(s) with the inputs",
                           details=problems)
    _check_shape(function, payload)


def _check_shape(function: str, payload: dict[str, Any]) -> None:
    if function == "render_video":
        from canvascast_cli.timeline import parse_timeline

        parse_timeline(payload.get("timeline"), source="timeline")
        _render_options(payload)
    elif function == "transcribe_audio":
        _transcribe_job(payload, Path("unused"))
    else:
        _image_requests(payload)


def _render_options(payload: Mapping[str, Any]) -> Any:
    from canvascast_cli.engines.render.engine import RenderOptions
    from canvascast_cli.engines.render.presets import X264_PRESETS

    options = payload.get("options") or {}
    if not isinstance(options, dict):
        raise InvalidInput("options: must be an object")
    preset = options.get("preset", "veryfast")
    crf = options.get("crf", 20)
    frames = options.get("frame_range")
    if not isinstance(options.get("allow_missing_glyphs", False), bool):
        raise InvalidInput("options.allow_missing_glyphs: true or false")
    if preset not in X264_PRESETS:
        raise InvalidInput(f"options.preset: {preset!r}; allowed: {', '.join(X264_PRESETS)}")
    if not isinstance(crf, int) or isinstance(crf, bool) or not 0 <= crf <= 51:
        raise InvalidInput(f"options.crf: {crf!r}; allowed: 0 to 51")
    frame_range = None
    if frames is not None:
        if (not isinstance(frames, list) or len(frames) != 2
                or not all(isinstance(f, int) and not isinstance(f, bool) for f in frames)):
            raise InvalidInput("options.frame_range: [START, END] whole frame numbers")
        frame_range = (frames[0], frames[1])
    return RenderOptions(preset=preset, crf=crf, frame_range=frame_range)


def _transcribe_job(payload: Mapping[str, Any], audio: Path) -> Any:
    from canvascast_cli.engines.transcribe.job import TranscribeJob

    allowed = {"audio", "engine", "model", "language", "beam_size", "script", "offset",
               "compute_type", "allow_script_mismatch", "refine"}
    unknown = sorted(set(payload) - allowed)
    if unknown:
        raise InvalidInput(f"unknown field(s): {', '.join(unknown)}")
    script = payload.get("script")
    if script is not None and not (isinstance(script, list)
                                   and all(isinstance(t, str) for t in script)):
        raise InvalidInput("script: a list of words")
    if not isinstance(payload.get("refine", True), bool):
        raise InvalidInput("refine: true or false")
    try:
        return TranscribeJob(
            audio=audio, engine=str(payload.get("engine", "faster-whisper")),
            model=str(payload.get("model", "tiny.en")), language=payload.get("language"),
            beam_size=int(payload.get("beam_size", 5)), offset=float(payload.get("offset", 0)),
            script=tuple(script) if script else None,
            compute_type=payload.get("compute_type"),
            allow_script_mismatch=bool(payload.get("allow_script_mismatch", False)),
            refine=payload.get("refine", True))
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"transcribe_audio: {exc}") from None


def _image_requests(payload: Mapping[str, Any]) -> list[Any]:
    from canvascast_cli.engines.images.base import ImageRequest
    from canvascast_cli.engines.images.providers import PROVIDERS

    if payload.get("provider") not in PROVIDERS:
        raise InvalidInput(f"provider: {payload.get('provider')!r}; allowed: "
                           f"{', '.join(PROVIDERS)}")
    if not isinstance(payload.get("model"), str):
        raise InvalidInput("model: a model id")
    raw = payload.get("requests")
    if not isinstance(raw, list) or not 1 <= len(raw) <= 64:
        raise InvalidInput("requests: a list of 1 to 64 image requests")
    requests = []
    for i, item in enumerate(raw):
        try:
            requests.append(ImageRequest(**item))
        except TypeError as exc:
            raise InvalidInput(f"requests[{i}]: {exc}") from None
    return requests


# ---------------------------------------------------------------------------------------
# Running a job


def execute(function: str, payload: dict[str, Any], store: BlobStore,
            progress: Progress | None = None) -> dict[str, Any]:
    """Run one job; the result names its artifacts (already stored as blobs)."""
    global _FIRST_INPUT
    first, _FIRST_INPUT = _FIRST_INPUT, False
    validate(function, payload, store)
    began = time.perf_counter()
    with _workdir() as work:
        if function == "render_video":
            result = _render(payload, store, work, progress)
        elif function == "transcribe_audio":
            result = _transcribe(payload, store, work, progress)
        else:
            result = _images(payload, store, progress)
    result["billed_seconds"] = time.perf_counter() - began
    result["container_id"] = container_id()
    result["cold_start"] = first
    return result


def container_id() -> str:
    """Modal's task id inside a Modal container; host and process id elsewhere."""
    return os.environ.get("MODAL_TASK_ID") or f"{socket.gethostname()}-{os.getpid()}"


@contextmanager
def _workdir() -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="canvascast-job-"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _materialise(refs: Mapping[str, str], store: BlobStore, work: Path) -> dict[str, str]:
    """Link each referenced blob into ``work`` under a name with its suffix."""
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


def _artifact(name: str, sha: str, size: int) -> dict[str, Any]:
    return {"name": name, "sha256": sha, "size": size}


def _render(payload: dict[str, Any], store: BlobStore, work: Path,
            progress: Progress | None) -> dict[str, Any]:
    from canvascast_cli.engines.render.job import RenderJob, run_render
    from canvascast_cli.timeline import parse_timeline

    mapping = _materialise(render_refs(payload["timeline"]), store, work)
    timeline = parse_timeline(rewrite_refs(payload["timeline"], mapping), source="timeline")
    options = _render_options(payload)
    output = work / "video.mp4"
    allow = (payload.get("options") or {}).get("allow_missing_glyphs") is True
    job = RenderJob(timeline=timeline, base_dir=work, output=output, options=options,
                    allow_missing_glyphs=allow)
    report = (lambda done, total: progress(done, total, "frames")) if progress else None
    rendered = run_render(job, progress=report)
    sha, size = store.put_file(output)
    summary = rendered.to_dict()
    summary.pop("output", None)
    return {"artifacts": [_artifact("video.mp4", sha, size)], "summary": summary,
            "units": float(rendered.frames), "unit": "frames"}


def _transcribe(payload: dict[str, Any], store: BlobStore, work: Path,
                progress: Progress | None) -> dict[str, Any]:
    from canvascast_cli.engines.transcribe.job import run_transcribe

    mapping = _materialise({"audio": payload["audio"]}, store, work)
    job = _transcribe_job(payload, Path(mapping[payload["audio"]]))
    report = (lambda done, total: progress(done, total, "seconds")) if progress else None
    transcript = run_transcribe(job, progress=report)
    data = (json.dumps(transcript.to_dict(), ensure_ascii=False) + "\n").encode("utf-8")
    sha, size = store.put_bytes(data)
    return {"artifacts": [_artifact("transcript.json", sha, size)],
            "summary": {"words": len(transcript.words), "duration": transcript.duration},
            "units": transcript.duration, "unit": "seconds"}


def _images(payload: dict[str, Any], store: BlobStore,
            progress: Progress | None) -> dict[str, Any]:
    from canvascast_cli.engines.images.pipeline import EXTENSIONS
    from canvascast_cli.engines.images.providers import make_provider

    requests = _image_requests(payload)
    palette = payload.get("palette") or None
    provider = make_provider(str(payload["provider"]), str(payload["model"]), palette=palette)
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
        entry: dict[str, Any] = {"index": request.index, "blocked": result.blocked,
                                 "mime_type": result.mime_type, "details": details,
                                 "artifact": None}
        if result.data is not None:
            name = f"image-{request.index:04d}{EXTENSIONS.get(result.mime_type or '', '.png')}"
            sha, size = store.put_bytes(result.data)
            artifacts.append(_artifact(name, sha, size))
            entry["artifact"] = name
        images.append(entry)
        if progress is not None:
            progress(len(images), len(requests), "images")
    return {"artifacts": artifacts, "images": images, "provider": provider.name,
            "model": provider.model, "units": float(len(requests)), "unit": "images"}
