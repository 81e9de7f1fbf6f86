"""The wire format: what the job API's client and server say to each other.

Both sides import this package and neither owns it (as Modal's SDK does with
``modal_proto``): ``dispatch/`` (the client) and ``server/`` plus ``modal_functions/``
(the hosts) never import each other. It holds, once:

- the API version and routes (``API``, ``/v1/...``);
- blobs: content addressing (``sha256_file``, ``check_sha256``), references to uploaded
  bytes inside a payload (``blob:<sha256><suffix>``), and their layout in a store;
- job ids and states (``JobState``: queued -> running -> done | failed | cancelled);
- the functions (``FUNCTIONS``: name, payload model, engine entry, resource class, unit);
- every body that crosses the wire as a pydantic model: the three job payloads, the job
  status with its progress, result and error, the envelope every response is wrapped in;
- the error code -> HTTP status table (``HTTP_STATUS``) the server answers with; a
  client turns an envelope's error back into its class with ``errors.from_dict``, and a
  status without our envelope with ``net.status_error``.

docs/wire-format.md describes it for people; ``canvascast serve`` publishes it as OpenAPI
(``GET /v1/openapi.json``, behind the token).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Generic, Literal, TypeVar, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from canvascast_cli import __version__
from canvascast_cli.config import FunctionName  # config's: a modal.toml table per function
from canvascast_cli.errors import CanvasCastError, InvalidInput, NotFound
from canvascast_cli.records import Seconds
from canvascast_cli.timeline import Timeline

API = "v1"  # the routes' prefix; a breaking change to any body below is a new one
API_VERSION = f"{API}.3"  # the document's version (OpenAPI info.version): v1.<revision>
CHUNK = 1 << 20

# ---------------------------------------------------------------------------------------
# Blobs: bytes named by their sha256

SHA256_PATTERN = r"[0-9a-f]{64}"
_SHA256 = re.compile(SHA256_PATTERN)
BLOB_REF_PATTERN = rf"blob:(?P<sha>{SHA256_PATTERN})(?P<suffix>\.[A-Za-z0-9]{{1,8}})?"
_BLOB_REF = re.compile(BLOB_REF_PATTERN)
_SUFFIX = re.compile(r"\.[A-Za-z0-9]{1,8}")


def check_sha256(value: Any, *, field: str = "sha256") -> str:
    """``value`` if it is a sha256 in hex (64 lower-case digits, nothing more), else
    InvalidInput naming ``field``."""
    if not isinstance(value, str) or not _SHA256.fullmatch(value):
        raise InvalidInput(f"{field}: {str(value)[:80]!r} is not a sha256 (64 lower-case hex "
                           "digits)")
    return value


def sha256_file(path: Path) -> tuple[str, int]:
    """(sha256 hex, size in bytes) of a file, read in chunks."""
    digest, size = hashlib.sha256(), 0
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def blob_ref(sha: str, suffix: str = "") -> str:
    """How a payload names uploaded bytes: ``blob:<sha256><suffix>``. The suffix (kept
    only when it is a plain extension) tells the worker what kind of file it is."""
    suffix = suffix.lower() if _SUFFIX.fullmatch(suffix or "") else ""
    return f"blob:{check_sha256(sha)}{suffix}"


def parse_ref(ref: Any) -> tuple[str, str] | None:
    """(sha256, suffix) of a blob reference, or None for anything else."""
    match = _BLOB_REF.fullmatch(ref) if isinstance(ref, str) else None
    return (match["sha"], match["suffix"] or "") if match else None


def blob_path(sha: str) -> str:
    """Where blob ``sha`` lives inside a store (the server's folder, the Modal Volume)."""
    check_sha256(sha)
    return f"blobs/{sha[:2]}/{sha}"


def is_url(ref: str) -> bool:
    return ref.startswith(("http://", "https://"))


# ---------------------------------------------------------------------------------------
# Jobs: ids and states

# `canvascast serve` names jobs job-<32 hex>; Modal names them by the call (fc-...).
JOB_ID_PATTERN = r"job-[0-9a-f]{32}|fc-[A-Za-z0-9]{1,64}"
_JOB_ID = re.compile(JOB_ID_PATTERN)

JobState = Literal["queued", "running", "done", "failed", "cancelled"]
STATES: tuple[str, ...] = get_args(JobState)
FINISHED = frozenset({"done", "failed", "cancelled"})


def check_job_id(job_id: Any) -> str:
    """A job id as a server issues them, or NotFound (no job can have it) — checked before
    it goes into a URL or a lookup."""
    if not isinstance(job_id, str) or not _JOB_ID.fullmatch(job_id):
        raise NotFound(f"{str(job_id)[:80]!r} is not a job id (job-<32 hex digits> from "
                       "`canvascast serve`, fc-... from Modal)")
    return job_id


# ---------------------------------------------------------------------------------------
# Bodies


class WireModel(BaseModel):
    """What a side reads from the other: fields it does not know are ignored, so a newer
    peer can add some without breaking an older one."""

    model_config = ConfigDict(extra="ignore", frozen=True)


class Payload(BaseModel):
    """What a client submits: strict, and an unknown field is a mistake to report."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


BlobRef = Annotated[str, Field(pattern=f"^{BLOB_REF_PATTERN}$",
                               description="Uploaded bytes: blob:<sha256><.suffix>.",
                               examples=["blob:" + "0" * 64 + ".flac"])]
X264Preset = Literal["ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow",
                     "slower", "veryslow"]


class PieceRef(Payload):
    """One piece of a split render, as a join names it: its blob and its frames."""

    sha256: str = Field(pattern=f"^{SHA256_PATTERN}$")
    frames: list[int] = Field(min_length=2, max_length=2,
                              description="The piece's frames [start, end).")


class RenderOptions(Payload):
    preset: X264Preset = "veryfast"
    crf: int = Field(20, ge=0, le=51, description="x264 quality (lower: better, larger).")
    frame_range: list[int] | None = Field(
        None, min_length=2, max_length=2, description="Render only frames [start, end).")
    allow_missing_glyphs: bool = False
    video_only: bool = Field(False, description="A piece of a split render: frame_range "
                             "as video only (artifact piece.mp4), to be joined.")
    audio_only: bool = Field(False, description="A split render's audio: the whole "
                             "video's mix encoded once (artifact audio.m4a), made while "
                             "the pieces render, for the join's audio.")
    pieces: list[PieceRef] | None = Field(
        None, min_length=1, max_length=1000, description="A split render's join: the "
        "pieces (blobs from video_only jobs), in order, covering the whole video; the "
        "host checks and joins them with the audio blob named by audio, or else mixes "
        "the audio itself (docs/scale.md).")
    audio: str | None = Field(
        None, pattern=f"^{SHA256_PATTERN}$", description="With pieces: the sha256 of the "
        "audio an audio_only job made; the join muxes it by stream copy instead of "
        "mixing the audio itself.")

    @model_validator(mode="after")
    def _join_or_piece(self) -> RenderOptions:
        if self.pieces is not None and (self.frame_range is not None or self.video_only
                                        or self.audio_only):
            raise ValueError("pieces (a join) takes neither frame_range, video_only nor "
                             "audio_only")
        if self.audio_only and (self.frame_range is not None or self.video_only):
            raise ValueError("audio_only (the whole video's audio) takes neither "
                             "frame_range nor video_only")
        if self.audio is not None and self.pieces is None:
            raise ValueError("audio is the audio of a join: it needs pieces")
        return self


class RenderPayload(Payload):
    """``render_video``: a timeline whose files are blob references (images may also be
    http(s) URLs, fetched by the worker)."""

    timeline: Timeline
    options: RenderOptions = RenderOptions()
    cache: bool = Field(True, description="Use the host's result cache (false: the "
                        "client's --no-cache; the job runs and its result is not kept).")
    upload: bool = Field(False, description="Upload each artifact to the host's "
                         "artifact store ([storage]) and say where (Artifact.stored).")


TranscribeEngine = Literal["faster-whisper", "openai-whisper"]


class TranscribePayload(Payload):
    """``transcribe_audio``: one audio blob -> words with start/end times."""

    audio: BlobRef
    engine: TranscribeEngine = "faster-whisper"
    model: str = Field("tiny.en", max_length=64,
                       description="A Whisper model name (tiny.en, small.en, ...), never a "
                       "path: a worker loads only models it has by name.")
    language: str | None = Field(None, pattern=r"^[a-z]{2,3}$")
    beam_size: int = Field(5, ge=1, le=20)
    script: list[Annotated[str, Field(max_length=200)]] | None = Field(
        None, max_length=200_000, description="The narration's words, when known.")
    offset: float = Field(0.0, ge=0, lt=10 * 24 * 3600)
    compute_type: Literal["int8", "int8_float16", "int8_float32", "int16", "float16",
                          "bfloat16", "float32"] | None = None
    allow_script_mismatch: bool = False
    refine: bool = True
    cache: bool = Field(True, description="Use the host's result cache (false: the "
                        "client's --no-cache; the job runs and its result is not kept).")
    upload: bool = Field(False, description="Upload each artifact to the host's "
                         "artifact store ([storage]) and say where (Artifact.stored).")

    @model_validator(mode="after")
    def _model_is_a_name(self) -> TranscribePayload:
        from canvascast_cli.engines.transcribe.models import model_names

        names = model_names(self.engine)
        if self.model not in names:
            raise ValueError(f"model: {self.model[:64]!r} is not a {self.engine} model name "
                             f"(remote jobs take names, not paths); allowed: "
                             f"{', '.join(names)}")
        return self


ImageProvider = Literal["gemini", "diffusers", "placeholder"]


class ImageRequest(Payload):
    index: int = Field(ge=0, le=100_000)
    prompt: str = Field(max_length=20_000)
    negative_prompt: str | None = Field(None, max_length=20_000)
    width: int = Field(ge=64, le=4096)
    height: int = Field(ge=64, le=4096)
    aspect_ratio: str = Field(pattern=r"^\d{1,2}:\d{1,2}$")
    seed: int = Field(ge=0, le=2**31 - 1)


class ImagesPayload(Payload):
    """``generate_images``: one batch of prompts (one invocation)."""

    provider: ImageProvider
    # A model id (owner/name), never a path on the worker's disk.
    model: str = Field(max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*"
                       r"(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")
    palette: list[Annotated[str, Field(pattern=r"^#[0-9A-Fa-f]{6}$")]] | None = Field(
        None, max_length=16)
    requests: list[ImageRequest] = Field(min_length=1, max_length=64)
    cache: bool = Field(True, description="Use the host's result cache (false: the "
                        "client's --no-cache; the job runs and its result is not kept).")
    upload: bool = Field(False, description="Upload each artifact to the host's "
                         "artifact store ([storage]) and say where (Artifact.stored).")


class Progress(WireModel):
    done: float
    total: float | None = None
    unit: str = ""


class StoredRef(WireModel):
    """Where the job's host uploaded an artifact (the payload's ``upload``): the
    artifact store's provider, bucket or folder, and object name."""

    provider: str
    location: str
    object_path: str


class Artifact(WireModel):
    name: str
    sha256: str
    size: int
    url: str | None = None  # where the job API serves it (GET /v1/blobs/<sha256>)
    stored: StoredRef | None = None  # uploaded by the host (payload's upload), if it was


class ImageEntry(WireModel):
    index: int
    blocked: str | None = None
    mime_type: str | None = None
    details: dict[str, Any] = {}
    artifact: str | None = None  # the artifact's name; None when blocked


class JobResult(WireModel):
    """What a finished job produced: its artifacts (already stored as blobs), a summary,
    and what it cost in time. ``startup_seconds``: for the first job of a container
    (``cold_start``), the seconds it waited for the container to start its process and
    load its engines before it could run; billed by Modal, kept apart from
    ``billed_seconds`` (the run itself) so an estimate can tell the two kinds of start."""

    artifacts: list[Artifact] = []
    summary: dict[str, Any] = {}
    images: list[ImageEntry] | None = None
    provider: str | None = None
    model: str | None = None
    units: float = 0.0
    unit: str = ""
    billed_seconds: Seconds = 0.0
    startup_seconds: Seconds | None = None
    container_id: str | None = None
    cold_start: bool | None = None
    # The host's result cache: hit (returned without running; billed_seconds ~0), miss
    # (run, then kept), off (not looked up: asked not to, or not cacheable).
    cache: Literal["hit", "miss", "off"] | None = Field(
        None, description="The host's result cache: hit (kept from an identical job; not "
        "run), miss (run, then kept), off (not cached); null from an older host.")

    def artifact(self, name: str) -> Artifact | None:
        return next((a for a in self.artifacts if a.name == name), None)


# ``canvascast warm ping``: the one payload every job function answers without work, so a
# container's start (and whether there was one) can be measured on its own.
PING_PAYLOAD: Mapping[str, Any] = {"ping": True}


def is_ping(payload: Any) -> bool:
    return isinstance(payload, Mapping) and dict(payload) == dict(PING_PAYLOAD)


class PingReply(WireModel):
    """A job function's answer to ``PING_PAYLOAD``: the container it ran in, and whether
    this was its first input (then ``startup_seconds``: what starting it took)."""

    pong: Literal[True] = True
    container_id: str | None = None
    cold_start: bool | None = None
    startup_seconds: Seconds | None = None


class ErrorBody(WireModel):
    """An error as it crosses the wire (``CanvasCastError.to_dict``); ``errors.from_dict``
    turns it back into its class."""

    model_config = ConfigDict(extra="allow", frozen=True)

    code: str
    message: str
    retryable: bool = False
    details: list[str] = []
    retry_after: float | None = None

    @classmethod
    def of(cls, error: CanvasCastError) -> ErrorBody:
        return cls.model_validate(error.to_dict())

    def error(self) -> CanvasCastError:
        from canvascast_cli.errors import from_dict

        return from_dict(self.model_dump(exclude_none=True))


class JobStatus(WireModel):
    """A job as ``GET /v1/jobs/{id}`` reports it."""

    id: str
    function: str | None = None
    state: JobState
    created: float | None = None
    started: float | None = None
    finished: float | None = None
    queue_seconds: Seconds | None = None
    progress: Progress | None = None
    result: JobResult | None = None  # when done
    error: ErrorBody | None = None  # when failed or cancelled

    @property
    def finished_state(self) -> bool:
        return self.state in FINISHED


class Submitted(WireModel):
    id: str
    function: str
    state: JobState = "queued"


class MissingRequest(Payload):
    sha256: list[Annotated[str, Field(pattern=f"^{SHA256_PATTERN}$")]] = Field(
        max_length=100_000)


class MissingReply(WireModel):
    missing: list[str]


class BlobStored(WireModel):
    sha256: str
    size: int
    stored: bool  # false: the store had these bytes already


class Health(WireModel):
    status: Literal["ok"] = "ok"
    version: str = __version__
    api: str = API_VERSION
    functions: list[str] = []


T = TypeVar("T")


class Envelope(WireModel, Generic[T]):
    """Every response body: ``{"success", "data", "error"}`` (the seed's shape)."""

    success: bool
    data: T | None = None
    error: ErrorBody | None = None


# ---------------------------------------------------------------------------------------
# The functions


@dataclass(frozen=True)
class FunctionSpec:
    """One job function, as every side knows it."""

    name: FunctionName
    payload: type[Payload]
    entry: str  # the engine function that does the work (module:function)
    resource: Literal["cpu", "gpu"]  # what its container is mostly paid for
    unit: Literal["frames", "seconds", "images"]  # what its cost scales with
    summary: str


FUNCTIONS: Mapping[str, FunctionSpec] = {spec.name: spec for spec in (
    FunctionSpec("render_video", RenderPayload, "canvascast_cli.engines.render.job:run_render",
                 "cpu", "frames", "Render a timeline to an H.264/AAC MP4."),
    FunctionSpec("transcribe_audio", TranscribePayload,
                 "canvascast_cli.engines.transcribe.job:run_transcribe", "gpu", "seconds",
                 "Transcribe audio to words with start and end times."),
    FunctionSpec("generate_images", ImagesPayload,
                 "canvascast_cli.engines.images.job:generate", "gpu", "images",
                 "Generate one batch of images."),
)}
FUNCTION_NAMES: tuple[FunctionName, ...] = get_args(FunctionName)


def function(name: Any) -> FunctionSpec:
    """The function called ``name``, or InvalidInput listing the ones there are."""
    spec = FUNCTIONS.get(name) if isinstance(name, str) else None
    if spec is None:
        raise InvalidInput(f"unknown function {str(name)[:80]!r}; allowed: "
                           f"{', '.join(FUNCTIONS)}")
    return spec


def parse_payload(name: str, data: Any) -> Payload:
    """``data`` (decoded JSON) as function ``name``'s payload; InvalidInput lists every
    problem with its field path."""
    spec = function(name)
    try:
        return spec.payload.model_validate(data)
    except ValidationError as exc:
        from canvascast_cli.timeline import validation_problems

        problems = validation_problems(exc.errors(include_url=False))
        noun = "problem" if len(problems) == 1 else "problems"
        raise InvalidInput(f"{name}: {len(problems)} {noun} with the payload",
                           details=problems) from None


def payload_refs(payload: Payload) -> dict[str, str]:
    """field -> reference, for every file a payload names (blob references and URLs)."""
    if isinstance(payload, RenderPayload):
        refs = timeline_refs(payload.timeline.model_dump(mode="json"))
        for n, piece in enumerate(payload.options.pieces or ()):
            refs[f"options.pieces[{n}]"] = blob_ref(piece.sha256, ".mp4")
        if payload.options.audio is not None:
            refs["options.audio"] = blob_ref(payload.options.audio, ".m4a")
        return refs
    if isinstance(payload, TranscribePayload):
        return {"audio": payload.audio}
    return {}


def timeline_refs(timeline: Mapping[str, Any]) -> dict[str, str]:
    """field -> reference, for every file a timeline (as JSON) names (a caption font is a
    file when it has a font file's suffix, the render engine's rule; else a family)."""
    from canvascast_cli.engines.render.fonts.faces import FONT_SUFFIXES

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
        fonts = [font] if isinstance(font, str) else font if isinstance(font, list) else []
        for i, item in enumerate(fonts):
            if isinstance(item, str) and item.lower().endswith(FONT_SUFFIXES):
                refs["captions.style.font" + (f"[{i}]" if isinstance(font, list) else "")] = item
    return refs


def rewrite_refs(timeline: Mapping[str, Any], mapping: Mapping[str, str]) -> dict[str, Any]:
    """A copy of ``timeline`` (as JSON) with each file reference replaced by
    ``mapping[ref]`` (a local path by its blob reference, or back)."""
    import copy

    out: dict[str, Any] = copy.deepcopy(dict(timeline))

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


# ---------------------------------------------------------------------------------------
# Errors <-> HTTP statuses

# What the server answers each error code with (anything else: 500). A client reads the
# envelope's code back into its class (errors.from_dict); the status alone matters only
# when the body is not our envelope (net.status_error).
HTTP_STATUS: Mapping[str, int] = {
    "INVALID_INPUT": 400, "CONFIG_INVALID": 400, "UNEXPECTED_RESPONSE": 400,
    "AUTH": 401,
    "NOT_FOUND": 404,
    "PAYLOAD_TOO_LARGE": 413,
    "INTEGRITY": 422, "IDEMPOTENCY_CONFLICT": 422,
    "RATE_LIMITED": 429,
    "SERVER_ERROR": 500, "JOB_FAILED": 500,
    "MODAL_UNAVAILABLE": 503, "CIRCUIT_OPEN": 503,
    "TIMEOUT": 504,
}


def http_status(error: CanvasCastError) -> int:
    """The HTTP status the job API answers ``error`` with."""
    for cls in type(error).__mro__:
        code = getattr(cls, "code", None)
        if isinstance(code, str) and code in HTTP_STATUS:
            return HTTP_STATUS[code]
    return 500


def envelope(data: Any = None, error: CanvasCastError | None = None) -> dict[str, Any]:
    """A response body (JSON-ready)."""
    from canvascast_cli.records import dump

    return {"success": error is None,
            "data": dump(data) if isinstance(data, BaseModel) else data,
            "error": error.to_dict() if error is not None else None}
