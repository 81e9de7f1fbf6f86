"""Prompts + style -> image files (and a JSON sidecar each), in batches.

Prompts go to the provider in batches of ``batch_size`` (``modal.toml``: one batch per
Modal invocation). Image ``i`` gets seed ``seed + i``, so an image does not depend on the
batch it fell in. A batch that runs out of GPU memory is retried split in halves, down to
single images. A refused prompt (safety) is reported for that image; the others are kept.
Files are written to a temporary name and renamed.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
import unicodedata
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, SerializerFunctionWrapHandler, computed_field, model_serializer
from pydantic.dataclasses import dataclass

from canvascast_cli.atomic import check_writable, write_bytes
from canvascast_cli.engines.images.base import ImageRequest, ImageResult, Provider
from canvascast_cli.engines.images.style import StyleConfig
from canvascast_cli.errors import GpuOutOfMemory, InvalidInput
from canvascast_cli.records import dump

EXTENSIONS = {"image/png": ".png", "image/jpeg": ".jpg", "image/webp": ".webp"}
MAX_PROMPT_CHARS = 4000


# The sidecar's keys in the order they are written; the provider's ``details`` follow.
_SIDECAR_ORDER = ("index", "status", "file", "sidecar", "sha256", "prompt", "prompt_sent",
                  "negative_prompt", "provider", "model", "seed", "size", "aspect_ratio",
                  "safety")


@dataclass(frozen=True)
class ImageSize:
    width: int
    height: int


@dataclass(frozen=True)
class ImageRecord:
    """What was made for one prompt (the sidecar, plus where the files are).

    JSON (``records.dump``, the sidecar and ``--json``): these fields, ``status`` ("ok" or
    "blocked"), ``size`` for ``width`` and ``height``, and the provider's ``details``
    merged in at the top level.
    """

    index: int
    prompt: str  # the user's prompt
    prompt_sent: str  # after the style
    negative_prompt: str | None
    provider: str
    model: str
    seed: int
    width: Annotated[int, Field(exclude=True)]  # written as ``size``
    height: Annotated[int, Field(exclude=True)]
    aspect_ratio: str
    file: str | None
    sidecar: str | None
    sha256: str | None
    safety: dict[str, Any]
    details: dict[str, Any]

    @property
    def ok(self) -> bool:
        return self.file is not None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def status(self) -> str:
        return "ok" if self.ok else "blocked"

    @computed_field  # type: ignore[prop-decorator]
    @property
    def size(self) -> ImageSize:
        return ImageSize(self.width, self.height)

    @model_serializer(mode="wrap")
    def _sidecar(self, handler: SerializerFunctionWrapHandler) -> Any:
        data = handler(self)
        document = {key: data[key] for key in _SIDECAR_ORDER}
        document.update(data["details"])
        return document


def slug(text: str, limit: int = 40) -> str:
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    words = re.sub(r"[^a-zA-Z0-9]+", "-", ascii_text.lower()).strip("-")
    return (words[:limit].rstrip("-") or "image")


def file_stem(index: int, prompt: str) -> str:
    return f"{index + 1:03d}-{slug(prompt)}"


def check_prompts(prompts: Sequence[str]) -> list[str]:
    cleaned = [p.strip() for p in prompts]
    if not cleaned:
        raise InvalidInput("PROMPT: give at least one prompt (or --prompts-file)")
    problems = [f"prompt {i + 1}: empty" for i, p in enumerate(cleaned) if not p]
    problems += [f"prompt {i + 1}: {len(p)} characters; at most {MAX_PROMPT_CHARS}"
                 for i, p in enumerate(cleaned) if len(p) > MAX_PROMPT_CHARS]
    if problems:
        raise InvalidInput(f"{len(problems)} bad prompt(s)", details=problems)
    return cleaned


def build_requests(prompts: Sequence[str], style: StyleConfig, *, seed: int, width: int,
                   height: int, aspect_ratio: str, negative: bool) -> list[ImageRequest]:
    return [ImageRequest(index=i, prompt=style.apply(p),
                         negative_prompt=style.negative_prompt if negative else None,
                         width=width, height=height, aspect_ratio=aspect_ratio, seed=seed + i)
            for i, p in enumerate(prompts)]


def batches(requests: Sequence[ImageRequest], size: int) -> list[list[ImageRequest]]:
    return [list(requests[i: i + size]) for i in range(0, len(requests), size)]


def generate_batch(provider: Provider, batch: list[ImageRequest],
                   on_split: Callable[[int, int], None] | None = None) -> list[ImageResult]:
    """``provider.generate(batch)``, split in halves on GPU out-of-memory (the seed's "use a
    smaller batch"), down to one image; one image that still does not fit is re-raised."""
    try:
        return provider.generate(batch)
    except GpuOutOfMemory:
        if len(batch) == 1:
            raise
        half = (len(batch) + 1) // 2
        if on_split is not None:
            on_split(len(batch), half)
        return (generate_batch(provider, batch[:half], on_split)
                + generate_batch(provider, batch[half:], on_split))


def check_destination(out_dir: Path, prompts: Sequence[str], overwrite: bool) -> None:
    """Before anything is generated: the folder can be made and written, and (without
    ``overwrite``) none of the files it would get exist already."""
    if str(out_dir) == "-":
        raise InvalidInput("-o: '-' (stdout) is not supported; give a folder")
    if out_dir.exists() and not out_dir.is_dir():
        raise InvalidInput(f"-o: {out_dir} exists and is not a folder")
    existing = out_dir.absolute()
    while not existing.exists():  # the nearest folder that exists must be writable
        existing = existing.parent
    if not existing.is_dir():
        raise InvalidInput(f"-o: {existing} is not a folder")
    check_writable(existing, what="-o")
    if overwrite or not out_dir.is_dir():
        return
    taken = [str(p) for i, prompt in enumerate(prompts)
             for p in out_dir.glob(file_stem(i, prompt) + ".*")]
    if taken:
        raise InvalidInput(f"{len(taken)} output file(s) already exist; pass --overwrite to "
                           "replace them", details=taken[:10])


def write_result(out_dir: Path, prompt: str, request: ImageRequest, result: ImageResult,
                 provider: Provider) -> ImageRecord:
    stem = file_stem(request.index, prompt)
    safety = {"blocked": result.blocked is not None, "reason": result.blocked}
    common = dict(index=request.index, prompt=prompt, prompt_sent=request.prompt,
                  negative_prompt=request.negative_prompt, provider=provider.name,
                  model=provider.model, seed=request.seed, width=request.width,
                  height=request.height, aspect_ratio=request.aspect_ratio, safety=safety,
                  details=result.details)
    if result.data is None:
        return ImageRecord(file=None, sidecar=None, sha256=None, **common)  # type: ignore[arg-type]
    out_dir.mkdir(parents=True, exist_ok=True)
    image = out_dir / (stem + EXTENSIONS.get(result.mime_type or "", ".png"))
    sidecar = out_dir / (stem + ".json")
    digest = hashlib.sha256(result.data).hexdigest()
    record = ImageRecord(file=str(image.absolute()), sidecar=str(sidecar.absolute()),
                         sha256=digest, **common)  # type: ignore[arg-type]
    write_bytes(image, result.data)
    meta = {**dump(record), "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    write_bytes(sidecar, (json.dumps(meta, indent=1, ensure_ascii=False) + "\n").encode())
    return record
