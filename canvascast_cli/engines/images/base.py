"""What every image provider takes and returns.

A provider turns a batch of ``ImageRequest`` into one ``ImageResult`` per request, in
order. A result is either an encoded image or a per-image refusal (a safety block): one
refused prompt never discards the others. Failures of the whole batch are raised as
``canvascast_cli.errors`` types — ``RateLimited`` (retryable), ``GpuOutOfMemory`` (the
caller retries the batch split in halves), ``InvalidInput`` (missing key, unknown model),
``JobFailed`` — so retry and breaker logic stay provider-agnostic.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class ImageRequest:
    index: int  # position in the user's prompt list (file names and seeds follow it)
    prompt: str  # as sent: the user's prompt with the style applied
    negative_prompt: str | None  # sent only where the provider supports it
    width: int
    height: int
    aspect_ratio: str  # "16:9": for providers that take a ratio rather than a size
    seed: int  # base seed + index: an image never depends on its batch


@dataclass(frozen=True)
class ImageResult:
    index: int
    data: bytes | None  # the encoded image, or None when refused
    mime_type: str | None  # "image/png", "image/jpeg", ...
    blocked: str | None = None  # why the provider refused this prompt (safety), else None
    details: dict[str, Any] = field(default_factory=dict)  # provider-specific metadata

    @property
    def ok(self) -> bool:
        return self.data is not None


class Provider(Protocol):
    name: str  # "gemini", "diffusers", "placeholder"
    model: str  # model id or path as used
    supports_negative_prompt: bool

    def generate(self, batch: list[ImageRequest]) -> list[ImageResult]:
        """One result per request, same order."""
        ...

    def cost_per_image(self, request: ImageRequest) -> float | None:
        """USD per image where the provider bills per image (None: billed by time)."""
        ...
