"""Cache keys: a sha256 over everything a result depends on, and nothing else.

Each key is the sha256 of a canonical JSON document (sorted keys, no spaces) holding the
kind, ``SCHEMA`` (bumped when a key's meaning changes) and:

- render: the normalised timeline (``Timeline.model_dump``) with every file it names
  replaced by ``blob:<sha256><suffix>`` of its bytes (so moving or renaming an asset
  keeps the key, changing one byte changes it); the encode settings (preset, crf, frame
  range, audio bitrate, allow_missing_glyphs); the renderer (canvascast's version, PyAV's,
  Pillow's) and ffmpeg's identity: imageio-ffmpeg's version for the bundled binary, or
  the resolved path, size and modification time of one given with ``--ffmpeg`` /
  ``CANVASCAST_FFMPEG`` (another ffmpeg build encodes other bytes). Caption fonts given as
  files are hashed like any asset; a family name is kept as written (the machine's fonts
  are part of that machine's cache, and the bundled ones of canvascast's version). A
  timeline with image URLs is not cached (the bytes behind a URL may change).
- transcript: the audio's sha256; engine and its package version; the model (a name, or
  a local model's path, size and time); language, beam size, compute type, offset, the
  script's words, script-mismatch tolerance and refinement. Not the output format: one
  transcript serves JSON, SRT, VTT and text.
- image: provider, model (and the provider's package version), palette, the prompt as
  sent (style applied), negative prompt, width, height, aspect ratio and seed.

The client and the job API's host build keys with these same functions from the same
inputs (a blob's sha256 is the asset's), so a key means the same on both sides.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

from canvascast_cli import __version__

SCHEMA = 1
KINDS = ("render", "transcript", "images")


def digest(doc: Mapping[str, Any]) -> str:
    """sha256 (hex) of ``doc`` as canonical JSON."""
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def package_versions(*names: str) -> dict[str, str | None]:
    """canvascast's version and each named distribution's (None: not installed)."""
    found: dict[str, str | None] = {"canvascast": __version__}
    for name in names:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


_HASHES: dict[tuple[str, int, int, int], str] = {}


def file_sha256(path: Path) -> str:
    """sha256 of a file, remembered for this process by (path, size, mtime, inode)."""
    from canvascast_cli.protocol import sha256_file

    info = path.stat()
    memo = (str(path.resolve()), info.st_size, info.st_mtime_ns, info.st_ino)
    if memo not in _HASHES:
        _HASHES[memo] = sha256_file(path)[0]
    return _HASHES[memo]


def file_identity(path: Path) -> str:
    """A file (or a folder of files) by its resolved path, sizes and modification times:
    cheap, and different whenever it is replaced or edited."""
    path = path.expanduser().resolve()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    parts = []
    for item in files:
        info = item.stat()
        parts.append(f"{item.relative_to(path) if item != path else ''}:{info.st_size}:"
                     f"{info.st_mtime_ns}")
    return f"{path}|" + ",".join(parts)


# ---------------------------------------------------------------------------------------
# render


def ffmpeg_identity(explicit: str | None = None) -> str:
    """The ffmpeg a render runs (the engine's rule: ``explicit``, else
    ``$CANVASCAST_FFMPEG``, else imageio-ffmpeg's build), as a key part."""
    from canvascast_cli import env

    chosen = explicit or os.environ.get(env.FFMPEG)
    if chosen:
        path = Path(chosen).expanduser()
        return "file:" + (file_identity(path) if path.exists() else str(path))
    return f"imageio-ffmpeg {package_versions('imageio-ffmpeg')['imageio-ffmpeg']}"


def render_key(timeline: Mapping[str, Any], options: Mapping[str, Any], *,
               ffmpeg: str) -> str:
    """``timeline``: the timeline as JSON with its files as blob references (a payload's
    timeline, or ``local_render_timeline``); ``options``: preset, crf, frame_range,
    allow_missing_glyphs (the wire format's ``RenderOptions``); ``ffmpeg``:
    ``ffmpeg_identity``."""
    frames = options.get("frame_range")
    doc = {
        "kind": "render", "schema": SCHEMA, "timeline": dict(timeline),
        "preset": options.get("preset"), "crf": options.get("crf"),
        "frame_range": list(frames) if frames else None,
        "allow_missing_glyphs": bool(options.get("allow_missing_glyphs")),
        "audio_bitrate": options.get("audio_bitrate", "192k"),
        "renderer": package_versions("av", "pillow"), "ffmpeg": ffmpeg}
    # Split renders (docs/scale.md) make other bytes: a piece is video only, and a joined
    # video has an IDR where each piece starts. Only present when set, so the keys of
    # every other render stay as they were.
    if options.get("video_only"):
        doc["video_only"] = True
    if options.get("split"):
        doc["split"] = [list(r) for r in options["split"]]
    if options.get("pieces"):  # a join: the pieces' bytes
        doc["pieces"] = [[p["sha256"], list(p["frames"])] for p in options["pieces"]]
    return digest(doc)


def uncacheable_refs(refs: Mapping[str, str]) -> str | None:
    """Why a timeline with these file references cannot be cached, or None."""
    from canvascast_cli.protocol import is_url

    urls = [field for field, ref in refs.items() if is_url(ref)]
    if urls:
        return f"{urls[0]} is a URL (the bytes behind it may change)"
    return None


def local_render_timeline(timeline: Any, base_dir: Path) -> tuple[dict[str, Any] | None,
                                                                  str | None]:
    """(the timeline as JSON with each local file replaced by its blob reference, None)
    — or (None, why not) when it cannot be keyed: a URL, or a file that is missing (the
    render itself then says which)."""
    from canvascast_cli.protocol import blob_ref, rewrite_refs, timeline_refs

    data = timeline.model_dump(mode="json")
    refs = timeline_refs(data)
    reason = uncacheable_refs(refs)
    if reason is not None:
        return None, reason
    mapping: dict[str, str] = {}
    for ref in set(refs.values()):
        path = Path(ref).expanduser()
        path = path if path.is_absolute() else base_dir / path
        if not path.is_file():
            return None, f"{ref} is not a file"
        mapping[ref] = blob_ref(file_sha256(path), path.suffix)
    return rewrite_refs(data, mapping), None


# ---------------------------------------------------------------------------------------
# transcript

TRANSCRIBE_PACKAGES = {"faster-whisper": "faster-whisper", "openai-whisper": "openai-whisper"}


def model_identity(model: str) -> str:
    """A Whisper model as a key part: its name, or a local model's file identity."""
    path = Path(model).expanduser()
    if ("/" in model or os.sep in model or model.startswith(".")) and path.exists():
        return "path:" + file_identity(path)
    return model


def transcript_key(*, audio_sha256: str, engine: str, model: str, language: str | None,
                   beam_size: int, compute_type: str | None, offset: float,
                   script: Iterable[str] | None, allow_script_mismatch: bool,
                   refine: bool) -> str:
    """Everything that changes the words or their times; never the output format."""
    return digest({
        "kind": "transcript", "schema": SCHEMA, "audio": audio_sha256, "engine": engine,
        "model": model_identity(model), "language": language, "beam_size": beam_size,
        "compute_type": compute_type, "offset": float(offset),
        "script": list(script) if script is not None else None,
        "allow_script_mismatch": bool(allow_script_mismatch), "refine": bool(refine),
        "versions": package_versions(TRANSCRIBE_PACKAGES.get(engine, engine),
                                     *(("pocketsphinx",) if refine else ()))})


# ---------------------------------------------------------------------------------------
# images

IMAGE_PACKAGES = {"diffusers": ("diffusers", "torch"), "gemini": ("google-genai",),
                  "placeholder": ("pillow",)}
# Providers that make the same image again from the same seed; the others are cached
# only when the user fixed the seed (asking for the same image again).
DETERMINISTIC = frozenset({"placeholder", "diffusers"})


def image_key(*, provider: str, model: str, palette: Iterable[str] | None, prompt: str,
              negative_prompt: str | None, width: int, height: int, aspect_ratio: str,
              seed: int) -> str:
    """One image: everything that changes its pixels (not its index in the batch)."""
    return digest({
        "kind": "image", "schema": SCHEMA, "provider": provider,
        "model": model_identity(model), "palette": list(palette) if palette else None,
        "prompt": prompt, "negative_prompt": negative_prompt, "width": width,
        "height": height, "aspect_ratio": aspect_ratio, "seed": seed,
        "versions": package_versions(*IMAGE_PACKAGES.get(provider, ()))})


def request_key(provider: str, model: str, palette: Iterable[str] | None,
                request: Any) -> str:
    """``image_key`` of an ``ImageRequest`` (the engine's or the wire format's)."""
    return image_key(provider=provider, model=model, palette=palette,
                     prompt=request.prompt, negative_prompt=request.negative_prompt,
                     width=request.width, height=request.height,
                     aspect_ratio=request.aspect_ratio, seed=request.seed)


# ---------------------------------------------------------------------------------------
# a whole remote job (the job API's result cache)


def payload_key(payload: Any) -> tuple[str | None, str | None]:
    """(key, None) for a job payload, or (None, why it is not cached)."""
    from canvascast_cli.protocol import (
        ImagesPayload,
        RenderPayload,
        TranscribePayload,
        parse_ref,
        payload_refs,
    )

    if not getattr(payload, "cache", True):
        return None, "the client asked for no cache"
    if isinstance(payload, RenderPayload):
        reason = uncacheable_refs(payload_refs(payload))
        if reason is not None:
            return None, reason
        return render_key(payload.timeline.model_dump(mode="json"),
                          payload.options.model_dump(), ffmpeg=ffmpeg_identity()), None
    if isinstance(payload, TranscribePayload):
        ref = parse_ref(payload.audio)
        assert ref is not None
        return transcript_key(
            audio_sha256=ref[0], engine=payload.engine, model=payload.model,
            language=payload.language, beam_size=payload.beam_size,
            compute_type=payload.compute_type, offset=payload.offset,
            script=payload.script, allow_script_mismatch=payload.allow_script_mismatch,
            refine=payload.refine), None
    if isinstance(payload, ImagesPayload):
        return digest({"kind": "images", "schema": SCHEMA, "images": [
            [r.index, request_key(payload.provider, payload.model, payload.palette, r)]
            for r in payload.requests]}), None
    return None, "not a job payload"
