"""Images from Google's Gemini image models ("Nano Banana") through the google-genai SDK.

One ``generate_content`` request per prompt (the API returns one image per request), a
batch's requests run concurrently on a small thread pool, and results come back in prompt
order. A safety refusal is a per-image result, never an exception. Every SDK and transport
exception is translated here, at this one boundary, into ``canvascast_cli.errors`` — with
the API key scrubbed from every message, because SDK exceptions carry the request (and
with it the ``x-goog-api-key`` header).

Retries: rate limits (429), server errors (5xx) and failed connections are retried here up
to ``attempts`` times per prompt by the one retry policy (``canvascast_cli.retry``: its
backoff and jitter, the service's retry hint — ``Retry-After`` or ``RetryInfo`` — honoured
up to the same cap as everywhere). The SDK's own retry is off by default, so nothing
retries twice.

Seeds are recorded in the sidecars but not sent: Gemini image output is not reproducible
from a seed, and an unverified request field risks a 400 on every image.
"""

from __future__ import annotations

import io
import os
import re
import time
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from typing import Any

from canvascast_cli import env
from canvascast_cli.engines.images.base import ImageRequest, ImageResult
from canvascast_cli.errors import (
    AuthFailed,
    CanvasCastError,
    ConnectionFailed,
    InvalidInput,
    JobFailed,
    RateLimited,
    ServerError,
    Timeout,
    is_retryable,
)

DEFAULT_MODEL = "gemini-3.1-flash-image"
KEY_VARIABLES = env.GEMINI_KEYS  # first set wins
BASE_URL_VARIABLE = env.GEMINI_BASE_URL  # a local server (tests) or a proxy

# USD per generated image, from https://ai.google.dev/gemini-api/docs/pricing
# (gemini-3.1-flash-image: the 1K output size, the size the API returns by default).
# Blocked prompts return no image and are not counted by the caller.
PRICE_PER_IMAGE: dict[str, float] = {
    "gemini-3.1-flash-image": 0.067,
    "gemini-2.5-flash-image": 0.039,
}
KNOWN_MODELS = tuple(PRICE_PER_IMAGE)

# Candidate finish reasons that mean "refused", as opposed to a technical stop. Any
# response without an image is reported as blocked anyway (with its finish reason, or
# NO_IMAGE), so this set only decides which reason wins when several are present.
SAFETY_REASONS = frozenset({
    "SAFETY", "IMAGE_SAFETY", "PROHIBITED_CONTENT", "IMAGE_PROHIBITED_CONTENT", "BLOCKLIST",
    "SPII", "RECITATION", "IMAGE_RECITATION",
})

REQUEST_TIMEOUT_S = 120.0  # an image takes ~5-30 s; past 2 min something is wrong
MAX_WORKERS = 4  # concurrent requests per batch: enough for latency, gentle on quotas
ATTEMPTS = 3  # per prompt, first try included


class GeminiProvider:
    """The Provider protocol on Gemini's ``generate_content`` with image output."""

    name = "gemini"
    # Gemini image models take no negative prompt: there is no such request field, and
    # writing "avoid X" into the prompt tends to put X in the picture.
    supports_negative_prompt = False

    def __init__(self, api_key: str, model: str = DEFAULT_MODEL, *,
                 base_url: str | None = None, timeout_s: float = REQUEST_TIMEOUT_S,
                 max_workers: int = MAX_WORKERS, attempts: int = ATTEMPTS,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        """``sleep`` is what the retry backoff waits with (tests record instead)."""
        if not api_key.strip():
            raise InvalidInput(_missing_key_message())
        self.model = model
        self.base_url = base_url
        self.max_workers = max(1, max_workers)
        self.attempts = max(1, attempts)
        self._api_key = api_key.strip()
        self._sleep = sleep
        try:
            from google import genai
            from google.genai import types
        except ImportError:
            raise InvalidInput("the gemini provider needs the google-genai package: "
                               "pip install 'canvascast[images]'") from None
        self._types = types
        self._client = genai.Client(
            api_key=self._api_key,
            # The SDK takes the timeout in milliseconds; no retry_options: we retry here.
            http_options=types.HttpOptions(base_url=base_url,
                                           timeout=int(timeout_s * 1000)),
        )

    @classmethod
    def from_environment(cls, model: str = DEFAULT_MODEL, *, base_url: str | None = None,
                         sleep: Callable[[float], None] = time.sleep) -> GeminiProvider:
        """The provider configured from ``GEMINI_API_KEY`` (or ``GOOGLE_API_KEY``) and
        ``CANVASCAST_GEMINI_BASE_URL`` (where ``base_url`` is not given).

        The key is checked before google-genai is imported, so a missing key is reported
        as such (exit 2) even where the SDK is not installed.
        """
        key = next((os.environ[v].strip() for v in KEY_VARIABLES
                    if os.environ.get(v, "").strip()), None)
        if key is None:
            raise InvalidInput(_missing_key_message())
        return cls(key, model, base_url=base_url or os.environ.get(BASE_URL_VARIABLE) or None,
                   sleep=sleep)

    def __repr__(self) -> str:
        # Deliberately without the key: reprs end up in logs and tracebacks.
        return (f"GeminiProvider(model={self.model!r}, base_url={self.base_url!r}, "
                f"max_workers={self.max_workers}, attempts={self.attempts})")

    def close(self) -> None:
        """Close the SDK's HTTP connections (also done when the provider is collected)."""
        self._client.close()

    def cost_per_image(self, request: ImageRequest) -> float | None:
        return PRICE_PER_IMAGE.get(_bare_model(self.model))

    def generate(self, batch: list[ImageRequest]) -> list[ImageResult]:
        """One request per prompt, up to ``max_workers`` at once; results in batch order.

        The first failure (after its retries) fails the batch: requests not yet started
        are cancelled, requests in flight are waited for, and the error of the earliest
        failed prompt is raised.
        """
        if not batch:
            return []
        if len(batch) == 1:  # no pool for a single prompt
            return [self._generate_one(batch[0])]
        with ThreadPoolExecutor(max_workers=min(self.max_workers, len(batch)),
                                thread_name_prefix="gemini") as pool:
            futures = [pool.submit(self._generate_one, r) for r in batch]
            done, _ = wait(futures, return_when=FIRST_EXCEPTION)
            if any(f.exception() is not None for f in done):
                for future in futures:
                    future.cancel()  # a failed batch should not keep paying for images
                wait(futures)
                raise _first_error(futures)
            return [f.result() for f in futures]

    # -- one prompt ---------------------------------------------------------------------

    def _generate_one(self, request: ImageRequest) -> ImageResult:
        from canvascast_cli.retry import RetryPolicy

        policy = RetryPolicy(attempts=self.attempts, sleep=self._sleep, retry_if=_retry_here)
        return _to_result(request, policy.call(self._call, request))

    def _call(self, request: ImageRequest) -> Any:
        """One ``generate_content`` call; any exception comes out translated."""
        types = self._types
        config = types.GenerateContentConfig(
            response_modalities=["IMAGE"],
            image_config=types.ImageConfig(aspect_ratio=request.aspect_ratio),
        )
        try:
            return self._client.models.generate_content(
                model=self.model, contents=request.prompt, config=config)
        except Exception as exc:  # the boundary: nothing untranslated gets past here
            error = self._translate(exc)
        # Raised outside the except block on purpose: the SDK's exception (which holds the
        # request, key header included) is then neither __cause__ nor __context__.
        raise error

    # -- exceptions ---------------------------------------------------------------------

    def _translate(self, exc: Exception) -> CanvasCastError:
        from google.genai import errors as genai_errors

        if isinstance(exc, genai_errors.APIError):
            return self._translate_api_error(exc)
        timeouts, transport = _httpx_errors()
        if isinstance(exc, (*timeouts, TimeoutError)):
            return Timeout(f"Gemini did not answer within the request timeout "
                           f"({self._redact(type(exc).__name__)})")
        if isinstance(exc, (*transport, ConnectionError)):
            return ConnectionFailed(f"cannot reach Gemini at {self._endpoint()}: "
                                    f"{self._redact(str(exc) or type(exc).__name__)}")
        return JobFailed(f"Gemini request failed: {type(exc).__name__}: "
                         f"{self._redact(str(exc))}")

    def _translate_api_error(self, exc: Any) -> CanvasCastError:
        code = int(exc.code or 0)
        status = str(exc.status or "")
        message = self._redact(str(exc.message or status or "no message"))
        said = f"HTTP {code}{' ' + status if status else ''}: {message}"
        details = exc.details if isinstance(exc.details, dict) else {}
        if code == 429:
            retry_after = _retry_hint(exc.response, details)
            hint = f"; the service asks to retry after {retry_after:g} s" if retry_after else ""
            return RateLimited(f"Gemini rate limit or quota exceeded ({said}){hint}",
                                retry_after=retry_after)
        # An invalid key is a 400 INVALID_ARGUMENT (reason API_KEY_INVALID), not a 401.
        if code in (401, 403) or "API_KEY_INVALID" in str(details) or (
                code == 400 and "api key" in message.lower()):
            return AuthFailed(f"Gemini rejected the API key ({said}); check "
                              f"{' or '.join(KEY_VARIABLES)}")
        if code == 404 or (code == 400 and _about_the_model(message)):
            return InvalidInput(
                f"--model: Gemini has no image model {self.model!r} ({said})",
                details=[f"known image models: {', '.join(KNOWN_MODELS)}"])
        if code == 408:
            return Timeout(f"Gemini timed out ({said})")
        if 400 <= code < 500:
            return InvalidInput(f"Gemini rejected the request ({said})")
        if 500 <= code < 600:  # overloaded/unavailable: transient
            return ServerError(f"Gemini server error ({said})")
        return JobFailed(f"Gemini request failed ({said})")

    def _redact(self, text: str) -> str:
        """``text`` without the API key (servers and proxies may echo it back)."""
        if self._api_key:
            text = text.replace(self._api_key, "***")
        return re.sub(r"(?i)(x-goog-api-key[\"']?\s*[:=]\s*[\"']?|[?&]key=)[^\s&\"',}]+",
                      r"\1***", text)

    def _endpoint(self) -> str:
        return self.base_url or "generativelanguage.googleapis.com"


# ---------------------------------------------------------------------------------------
# Helpers (module-level: no state, easy to test)


def _missing_key_message() -> str:
    return ("the gemini provider needs an API key: export GEMINI_API_KEY=... (from "
            "https://aistudio.google.com/apikey), or use --provider placeholder")


def _bare_model(model: str) -> str:
    return model.removeprefix("models/")


def _about_the_model(message: str) -> bool:
    """Whether a 400's message says the model is unknown or cannot make images."""
    text = message.lower()
    return "model" in text and any(s in text for s in (
        "not found", "not supported", "unknown", "does not support", "is not available"))


def _retry_here(exc: BaseException) -> bool:
    """Rate limits, 5xx and failed connections; not timeouts (a timed-out image may still
    be generated and billed) nor anything that is the request's fault."""
    return (isinstance(exc, CanvasCastError) and is_retryable(exc)
            and not isinstance(exc, Timeout))


def _retry_hint(response: Any, details: dict[str, Any]) -> float | None:
    """Seconds to wait from a ``Retry-After`` header or a ``google.rpc.RetryInfo``."""
    from canvascast_cli.retry import retry_after

    hint = retry_after(getattr(response, "headers", None))
    if hint is not None:
        return hint
    error = details.get("error", details)
    for item in (error.get("details") or []) if isinstance(error, dict) else []:
        delay = item.get("retryDelay") if isinstance(item, dict) else None
        if isinstance(delay, str) and delay.endswith("s"):  # protobuf Duration: "27s"
            try:
                return max(0.0, float(delay[:-1]))
            except ValueError:
                pass
    return None


def _httpx_errors() -> tuple[tuple[type[BaseException], ...], tuple[type[BaseException], ...]]:
    """(timeouts, other transport errors) of httpx and httpx2: the SDK uses either."""
    timeouts: list[type[BaseException]] = []
    transport: list[type[BaseException]] = []
    for name in ("httpx", "httpx2"):
        try:
            module = __import__(name)
        except ImportError:
            continue
        timeouts.append(module.TimeoutException)
        transport.append(module.TransportError)
    return tuple(timeouts), tuple(transport)


def _first_error(futures: list[Future[ImageResult]]) -> BaseException:
    """The exception of the earliest prompt that failed (not a cancelled one)."""
    for future in futures:
        if not future.cancelled() and future.exception() is not None:
            error = future.exception()
            assert error is not None
            return error
    raise AssertionError("no failed future")  # pragma: no cover - callers check first


def _enum_name(value: Any) -> str | None:
    if value is None:
        return None
    return str(getattr(value, "value", value))


def _to_result(request: ImageRequest, response: Any) -> ImageResult:
    """An image, or a refusal with its reason (never an exception)."""
    candidate = response.candidates[0] if response.candidates else None
    parts = (candidate.content.parts or []) if candidate is not None and candidate.content \
        else []
    # Thinking models may send interim images marked as thoughts; the answer comes last.
    images = [p.inline_data for p in parts
              if p.inline_data is not None and p.inline_data.data and not p.thought
              and (p.inline_data.mime_type or "image/png").startswith("image/")]
    text = " ".join(p.text.strip() for p in parts if p.text and not p.thought).strip()
    details: dict[str, Any] = {}
    if text:
        details["model_text"] = text
    if images:
        blob = images[-1]
        size = _decoded_size(blob.data)
        if size is not None:
            # Gemini picks the pixel size for the ratio: record what actually came back.
            details["actual_size"] = {"width": size[0], "height": size[1]}
        return ImageResult(request.index, blob.data, blob.mime_type or "image/png",
                           details=details)
    finish = _enum_name(candidate.finish_reason) if candidate is not None else None
    feedback = response.prompt_feedback
    block = _enum_name(feedback.block_reason) if feedback is not None else None
    reasons = [r for r in (block, finish) if r and r != "STOP"]
    reason = next((r for r in reasons if r in SAFETY_REASONS), None) or next(
        iter(reasons), "NO_IMAGE")
    return ImageResult(request.index, None, None, blocked=reason, details=details)


def _decoded_size(data: bytes) -> tuple[int, int] | None:
    try:
        from PIL import Image
    except ImportError:  # Pillow is optional here: the size is informative only
        return None
    try:
        with Image.open(io.BytesIO(data)) as image:  # reads the header only
            return image.size
    except Exception:  # an undecodable image is still written; the size is unknown
        return None
