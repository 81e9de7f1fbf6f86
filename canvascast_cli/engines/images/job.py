"""One images job: plan it, generate it in batches, write the files.

``plan_images`` turns what the user asked for (prompts, style, flags) into a typed
``ImagesJob``: provider and model chosen, size and base seed fixed, destination checked.
``run_images`` generates batch by batch with any ``Provider`` and writes each image and
its sidecar as it comes. Generation and writing are separate steps (``generate`` /
``pipeline.write_result``) so a remote host can generate and the client write.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from canvascast_cli.engines.images import pipeline
from canvascast_cli.engines.images.base import ImageRequest, ImageResult, Provider
from canvascast_cli.engines.images.providers import (
    DEFAULT_MODELS,
    LONG_SIDE,
    PROVIDERS,
    default_provider,
)
from canvascast_cli.engines.images.style import StyleConfig, resolve_size
from canvascast_cli.errors import InvalidInput

MAX_SEED = 2**31 - 1  # seeds are 31-bit: what every provider and --seed accept
Progress = Callable[[float, float], None]  # (images done, images in all)


@dataclass(frozen=True)
class ImagesJob:
    prompts: tuple[str, ...]
    style: StyleConfig
    provider: str
    model: str
    seed: int  # image i gets seed + i
    width: int
    height: int
    aspect_ratio: str
    batch_size: int
    output_dir: Path
    overwrite: bool = False

    def requests(self, *, negative: bool) -> list[ImageRequest]:
        return pipeline.build_requests(
            self.prompts, self.style, seed=self.seed, width=self.width, height=self.height,
            aspect_ratio=self.aspect_ratio, negative=negative)


@dataclass(frozen=True)
class ImagesResult:
    records: list[pipeline.ImageRecord]
    cost_usd: float  # what per-image providers billed (blocked images are not billed)
    generation_seconds: float  # busy seconds reported by time-billed providers
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def failed(self) -> list[pipeline.ImageRecord]:
        return [r for r in self.records if not r.ok]


def plan_images(
    prompts: Sequence[str],
    style: StyleConfig,
    *,
    output_dir: Path,
    provider: str | None = None,
    model: str | None = None,
    seed: int | None = None,
    size: str | None = None,
    aspect: str | None = None,
    batch_size: int = 5,
    overwrite: bool = False,
    environ: Mapping[str, str] | None = None,
) -> ImagesJob:
    """Check everything that can be checked before a provider is built."""
    import os

    cleaned = tuple(pipeline.check_prompts(prompts))
    name = provider or default_provider(os.environ if environ is None else environ)
    if name not in PROVIDERS:
        raise InvalidInput(f"--provider: {name!r}; allowed: {', '.join(PROVIDERS)}")
    if not 1 <= batch_size <= 64:
        raise InvalidInput(f"--batch-size: {batch_size}; allowed: 1 to 64")
    width, height, ratio = resolve_size(style, size, aspect, LONG_SIDE[name])
    count = len(cleaned)
    base = seed if seed is not None else style.seed
    if base is None:
        base = secrets.randbelow(MAX_SEED - count + 2)  # the last image's seed fits too
    elif base + count - 1 > MAX_SEED:
        raise InvalidInput(f"--seed: {base} + {count - 1} (one seed per image) passes "
                           f"{MAX_SEED}; give at most {MAX_SEED - count + 1}")
    pipeline.check_destination(output_dir, cleaned, overwrite)
    return ImagesJob(prompts=cleaned, style=style, provider=name,
                     model=model or DEFAULT_MODELS[name], seed=base, width=width,
                     height=height, aspect_ratio=ratio, batch_size=batch_size,
                     output_dir=output_dir, overwrite=overwrite)


def generate(provider: Provider, requests: Sequence[ImageRequest], batch_size: int,
             on_split: Callable[[int, int], None] | None = None
             ) -> Iterator[tuple[ImageRequest, ImageResult]]:
    """Each request with its result, batch by batch (a GPU OOM splits the batch)."""
    for batch in pipeline.batches(requests, batch_size):
        results = pipeline.generate_batch(provider, batch, on_split)
        yield from zip(batch, results, strict=True)


def run_images(job: ImagesJob, provider: Provider, *, progress: Progress | None = None,
               on_split: Callable[[int, int], None] | None = None) -> ImagesResult:
    requests = job.requests(negative=provider.supports_negative_prompt)
    prices = {r.index: provider.cost_per_image(r) for r in requests}
    records = []
    for done, (request, result) in enumerate(
            generate(provider, requests, job.batch_size, on_split), 1):
        records.append(pipeline.write_result(job.output_dir, job.prompts[request.index],
                                             request, result, provider))
        if progress is not None:
            progress(done, len(requests))
    return summarise(records, prices)


def summarise(records: list[pipeline.ImageRecord],
              prices: Mapping[int, float | None]) -> ImagesResult:
    cost = sum(prices.get(r.index) or 0.0 for r in records if r.ok)
    # Providers billed by time (diffusers) report seconds per batch, shared by its images.
    busy = sum(float(r.details.get("seconds", 0)) / int(r.details.get("batch_images", 1))
               for r in records if "seconds" in r.details)
    return ImagesResult(records=records, cost_usd=cost, generation_seconds=busy)
