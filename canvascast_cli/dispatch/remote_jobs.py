"""The three jobs as the client sends them remotely, and how their results come back.

Each ``*_remote`` function turns a typed engine job into a ``RemoteJob`` (the wire
format's payload, with every local file replaced by the blob reference it is uploaded
as) and a ``fetch`` that downloads and verifies the artifacts into the job's destination,
atomically, returning the same typed result the local engine returns. Nothing here runs
an engine.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from canvascast_cli.atomic import staged
from canvascast_cli.dispatch.backend import Backend
from canvascast_cli.dispatch.dispatcher import RemoteJob, require_local_files
from canvascast_cli.errors import InvalidInput, JobFailed
from canvascast_cli.protocol import (
    Artifact,
    JobStatus,
    blob_ref,
    is_url,
    parse_payload,
    rewrite_refs,
    sha256_file,
    timeline_refs,
)

Fetch = Callable[[Backend, JobStatus], Any]


def _artifact(status: JobStatus, name: str, what: str) -> Artifact:
    artifact = status.result.artifact(name) if status.result is not None else None
    if artifact is None:
        raise JobFailed(f"the {what} finished without its {name} artifact")
    return artifact


# ---------------------------------------------------------------------------------------
# render


def render_remote(job: Any, stages: Any = None) -> tuple[RemoteJob, Fetch]:
    """A ``RenderJob`` -> (RemoteJob, fetch writing the MP4 to ``job.output``)."""
    from canvascast_cli.engines.render.engine import RenderResult

    timeline = job.timeline.model_dump(mode="json")
    refs = timeline_refs(timeline)
    files: dict[str, Path] = {}
    for field, ref in refs.items():
        if is_url(ref):
            continue  # fetched by the worker, within the same limits
        path = Path(ref).expanduser()
        files[field] = path if path.is_absolute() else job.base_dir / path
    require_local_files(files)
    mapping: dict[str, str] = {}
    uploads: dict[str, Path] = {}
    names: dict[str, str] = {}
    for field, path in files.items():
        ref = refs[field]
        if ref in mapping:
            continue
        sha, _size = sha256_file(path)
        mapping[ref] = blob_ref(sha, path.suffix)
        uploads[sha] = path
        names[mapping[ref]] = str(path)
    options = job.options
    payload = parse_payload("render_video", {
        "timeline": rewrite_refs(timeline, mapping),
        "options": {"preset": options.preset, "crf": options.crf,
                    "frame_range": list(options.frame_range) if options.frame_range else None,
                    "allow_missing_glyphs": job.allow_missing_glyphs}})
    remote = RemoteJob("render_video", payload, uploads, units=float(job.frames),
                       unit="frames", local_names=names)

    def fetch(backend: Backend, status: JobStatus) -> RenderResult:
        artifact = _artifact(status, "video.mp4", "render")
        if stages is not None:
            stages.stage("downloading", artifact.size, "bytes")
        output = job.output.expanduser().absolute()
        with staged(output, overwrite=job.overwrite, suffix=".part" + output.suffix) as tmp:
            backend.download(artifact.sha256, tmp,
                             stages.update if stages is not None else None)
        summary = dict(status.result.summary if status.result is not None else {})
        summary["output"] = str(output)
        return RenderResult(**summary)

    return remote, fetch


def split_jobs(whole: RemoteJob, ranges: Sequence[tuple[int, int]]
               ) -> tuple[list[RemoteJob], Callable[[list[str]], RemoteJob], list[RemoteJob]]:
    """A render's ``RemoteJob`` (from ``render_remote``, its cache and upload flags set)
    -> its pieces (frames ``ranges``, video only, never uploaded to a bucket), the join
    of their artifacts by sha256, which the host checks, concatenates and muxes with the
    audio, and the job beside the pieces that makes that audio once while they render
    (``Dispatcher.run_split(pieces, join, beside)``; docs/scale.md). ``join`` takes the
    pieces' shas, then the audio's."""
    assert whole.payload is not None
    data = whole.payload.model_dump(mode="json")

    def variant(options: dict[str, Any], units: float, upload: bool) -> RemoteJob:
        payload = parse_payload("render_video", {
            **data, "options": {**data["options"], **options}, "upload": upload})
        return replace(whole, payload=payload, units=units)

    pieces = [variant({"frame_range": [start, end], "video_only": True}, float(end - start),
                      False) for start, end in ranges]
    # No units: its seconds are not a render's seconds per frame (estimates).
    audio = variant({"audio_only": True}, 0.0, False)

    def join(shas: list[str]) -> RemoteJob:
        *videos, sound = shas
        refs = [{"sha256": sha, "frames": [start, end]}
                for sha, (start, end) in zip(videos, ranges, strict=True)]
        return variant({"pieces": refs, "audio": sound}, 0.0, bool(data.get("upload")))

    return pieces, join, [audio]


# ---------------------------------------------------------------------------------------
# transcribe


def check_transcribe_remote(job: Any) -> None:
    """What a ``TranscribeJob`` needs to run remotely, checked before any work: the audio
    file here, and a model name (not a model file on this machine)."""
    from canvascast_cli.engines.transcribe.models import model_names

    require_local_files({"AUDIO": job.audio})
    if job.model not in model_names(job.engine):
        raise InvalidInput(f"--model: {job.model!r}: a remote job takes a model name (one "
                           f"of {', '.join(model_names(job.engine))}); a model file on "
                           "this machine works with --local")


def transcribe_remote(job: Any, seconds: float) -> tuple[RemoteJob, Fetch]:
    """A ``TranscribeJob``, checked by ``check_transcribe_remote``, whose audio lasts
    ``seconds`` -> (RemoteJob, fetch returning the ``Transcript``)."""
    from canvascast_cli.engines.transcribe.result import Transcript

    sha, _size = sha256_file(job.audio)
    ref = blob_ref(sha, job.audio.suffix)
    payload = parse_payload("transcribe_audio", {
        "audio": ref, "engine": job.engine, "model": job.model, "language": job.language,
        "beam_size": job.beam_size,
        "script": list(job.script) if job.script is not None else None,
        "offset": job.offset, "compute_type": job.compute_type,
        "allow_script_mismatch": job.allow_script_mismatch, "refine": job.refine})
    remote = RemoteJob("transcribe_audio", payload, {sha: job.audio},
                       units=seconds, unit="seconds",
                       local_names={ref: str(job.audio)})

    def fetch(backend: Backend, status: JobStatus) -> Transcript:
        artifact = _artifact(status, "transcript.json", "transcription")
        with tempfile.TemporaryDirectory(prefix="canvascast-fetch-") as folder:
            path = Path(folder) / "transcript.json"
            backend.download(artifact.sha256, path)
            return Transcript.from_dict(json.loads(path.read_text(encoding="utf-8")))

    return remote, fetch


def transcribe_split_remote(job: Any, pieces: list[tuple[float, float, Path]]
                            ) -> tuple[list[RemoteJob], Callable[[Backend, list[JobStatus]],
                                                                 Any]]:
    """A long recording's ``TranscribeJob`` cut into ``pieces`` (``(start, end, file)``
    from ``parallel.cut_to_files``) -> one job per piece (its words come back on the
    recording's clock: the piece's start is the job's offset) and a fetch that stitches
    their transcripts into one, as the local parallel path does. The job is checked
    (``check_transcribe_remote``) and the pieces are files cut from its audio."""
    from canvascast_cli.engines.transcribe.parallel import Part, stitch, with_segment_words
    from canvascast_cli.engines.transcribe.result import Refinement, Transcript

    jobs = []
    for start, end, path in pieces:
        piece = replace(job, audio=path, offset=start, script=None)
        remote, _fetch = transcribe_remote(piece, seconds=end - start)
        jobs.append(replace(remote, local_names={ref: f"{job.audio} ({start:.1f}-{end:.1f} s)"
                                                 for ref in remote.local_names}))

    def fetch(backend: Backend, done: list[JobStatus]) -> Transcript:
        parts: list[Part] = []
        first: Transcript | None = None
        with tempfile.TemporaryDirectory(prefix="canvascast-fetch-") as folder:
            for n, (status, (start, end, _path)) in enumerate(zip(done, pieces, strict=True)):
                artifact = _artifact(status, "transcript.json", "transcription")
                path = Path(folder) / f"transcript-{n:04d}.json"
                backend.download(artifact.sha256, path)
                text = Transcript.from_dict(json.loads(path.read_text(encoding="utf-8")))
                path.unlink()
                first = first or text
                refined = text.refinement
                reasons = (refined.kept if refined is not None and refined.aligner is not None
                           else None)
                parts.append(Part(start=start, end=end, kept=reasons,
                                  segments=with_segment_words(text.segments, text.words)))
        assert first is not None
        segments, kept = stitch(parts)
        words = tuple(w for s in segments for w in s.words)
        refinement = first.refinement
        if refinement is not None and refinement.aligner is not None:
            refinement = Refinement(aligner=refinement.aligner, kept=tuple(kept or ()))
        total = pieces[-1][1]
        return Transcript(segments=tuple(segments), words=words, language=first.language,
                          duration=total, engine=first.engine, model=first.model,
                          refinement=refinement,
                          extra={"pieces": [[round(a, 3), round(b, 3)]
                                            for a, b, _ in pieces]}).shifted(job.offset)

    return jobs, fetch


def audio_seconds(path: Path) -> float:
    """The audio's length for the cost estimate (0 when it cannot be read cheaply)."""
    try:
        import av

        with av.open(str(path)) as container:
            if container.duration:
                return container.duration / 1_000_000
    except Exception:  # an estimate only; the job itself checks the file
        return 0.0
    return 0.0


# ---------------------------------------------------------------------------------------
# images: one remote job per batch; results come back as ImageResults


def images_remote(requests: list[Any], provider: str, model: str,
                  palette: list[str] | None) -> tuple[RemoteJob, Fetch]:
    """One batch of ``ImageRequest`` -> (RemoteJob, fetch returning ``ImageResult``s)."""
    from dataclasses import asdict

    from canvascast_cli.engines.images.base import ImageResult

    payload = parse_payload("generate_images", {
        "provider": provider, "model": model, "palette": palette,
        "requests": [asdict(r) for r in requests]})
    remote = RemoteJob("generate_images", payload, {}, units=float(len(requests)),
                       unit="images")

    def fetch(backend: Backend, status: JobStatus) -> list[ImageResult]:
        result = status.result
        entries = (result.images or []) if result is not None else []
        out = []
        with tempfile.TemporaryDirectory(prefix="canvascast-fetch-") as folder:
            for entry in entries:
                data = None
                if entry.artifact:
                    path = Path(folder) / Path(entry.artifact).name
                    backend.download(_artifact(status, entry.artifact, "batch").sha256, path)
                    data = path.read_bytes()
                out.append(ImageResult(entry.index, data, entry.mime_type,
                                       blocked=entry.blocked, details=dict(entry.details)))
        by_index = {r.index: r for r in out}
        missing = [r.index for r in requests if r.index not in by_index]
        if missing:
            raise JobFailed(f"the batch finished without images {missing}")
        return [by_index[r.index] for r in requests]

    return remote, fetch


class DispatchedProvider:
    """The images ``Provider`` protocol over the dispatcher: each batch is one remote job.

    A GPU out-of-memory comes back as ``GpuOutOfMemory``, so ``pipeline.generate_batch``
    splits the batch and submits the halves, as it does locally; when the remote side is
    unavailable a batch runs on the local provider (built on first need).
    """

    def __init__(self, name: str, model: str, palette: list[str] | None, dispatcher: Any,
                 make_local: Callable[[], Any]) -> None:
        self.name, self.model, self._palette = name, model, palette
        self._dispatcher = dispatcher
        self._make_local = make_local
        self._local: Any = None
        self.outcomes: list[Any] = []
        # Sent where the provider may use one; a remote model that cannot says so
        # (details.negative_prompt_ignored) instead of silently dropping it.
        self.supports_negative_prompt = name == "diffusers"

    def cost_per_image(self, request: Any) -> float | None:
        if self.name == "gemini":
            from canvascast_cli.engines.images.gemini import PRICE_PER_IMAGE

            return PRICE_PER_IMAGE.get(self.model.removeprefix("models/"))
        return 0.0 if self.name == "placeholder" else None

    def generate(self, batch: list[Any]) -> list[Any]:
        remote, fetch = images_remote(batch, self.name, self.model, self._palette)
        outcome = self._dispatcher.run(remote, local=lambda: self._local_provider().generate(
            batch), fetch=fetch)
        self.outcomes.append(outcome)
        return list(outcome.value)

    def _local_provider(self) -> Any:
        if self._local is None:
            self._local = self._make_local()
        return self._local
