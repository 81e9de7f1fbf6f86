"""Retries: which failures, how many times, how long between — the one policy, with tenacity.

Every caller that retries uses this (the job API and Modal backends, the dispatcher's job
attempts, image downloads of a timeline, the Gemini provider): there is no other backoff.

Retried: ``errors.is_retryable`` failures (TIMEOUT, CONTAINER_CRASH, RATE_LIMITED,
SERVER_ERROR, CONNECTION_FAILED, MODAL_UNAVAILABLE) — never INVALID_INPUT or AUTH.
Waits: 1 s x 2^n capped at 30 s, plus up to 10 % jitter so many clients do not retry in
step; a server's hint (``RateLimited.retry_after``, read from a ``Retry-After`` header in
seconds or as an HTTP date by ``retry_after``) is honoured up to ``RETRY_AFTER_MAX``.
``sleep`` and the jitter's random source are injectable: tests record delays instead of
sleeping. A leaf module: it imports only ``errors`` (and tenacity).
"""

from __future__ import annotations

import email.utils
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import tenacity

from canvascast_cli.errors import RateLimited, is_retryable

T = TypeVar("T")

BACKOFF_INITIAL = 1.0
BACKOFF_MAX = 30.0
JITTER = 0.1  # share of the delay added at random
RETRY_AFTER_MAX = 120.0  # a server asking for longer is treated as unavailable


def retry_after(headers: Mapping[str, str] | None, *, now: float | None = None
                ) -> float | None:
    """Seconds a response asks the client to wait (its ``Retry-After`` header), or None.

    ``headers``: any case-insensitive mapping (``httpx.Headers``, a requests/genai
    response's headers). ``now``: the clock to measure an HTTP date against."""
    if headers is None:
        return None
    return parse_retry_after(headers.get("retry-after"), now=now)


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


@dataclass
class RetryPolicy:
    """How often to try (``attempts``, first try included) and how to wait between."""

    attempts: int = 3
    sleep: Callable[[float], None] = time.sleep
    rng: random.Random = field(default_factory=random.Random)
    on_retry: Callable[[int, BaseException, float], None] | None = None  # (attempt, error, delay)
    # Which failures another attempt is for: ``errors.is_retryable``, or a caller's
    # narrower rule (Gemini does not retry a timeout: the image may be made and billed).
    retry_if: Callable[[BaseException], bool] = is_retryable

    def delay(self, attempt: int, error: BaseException | None) -> float:
        """The wait after failed attempt number ``attempt`` (1-based)."""
        base = min(BACKOFF_MAX, BACKOFF_INITIAL * 2 ** (attempt - 1))
        base += self.rng.uniform(0, JITTER * base)
        hint = getattr(error, "retry_after", None) if isinstance(error, RateLimited) else None
        if hint is not None:
            base = max(base, min(float(hint), RETRY_AFTER_MAX))
        return base

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)``, retried on retryable failures; the last error is
        re-raised as itself."""

        def wait(state: tenacity.RetryCallState) -> float:
            error = state.outcome.exception() if state.outcome is not None else None
            delay = self.delay(state.attempt_number, error)
            if self.on_retry is not None and error is not None:
                self.on_retry(state.attempt_number, error, delay)
            return delay

        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(max(1, self.attempts)),
            wait=wait,
            retry=tenacity.retry_if_exception(self.retry_if),
            sleep=self.sleep,
            reraise=True,
        )
        return retrying(fn, *args, **kwargs)
