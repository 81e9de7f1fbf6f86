"""The job API's replies: every response is the envelope (``reply``), with the status the
wire format gives an error; and how its refusals are documented — each status a route may
answer with an error, as the envelope it really sends (never FastAPI's own 422 validation
body, which this API does not send: a bad request is 400 with every problem listed)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi.responses import JSONResponse

from canvascast_cli.errors import CanvasCastError
from canvascast_cli.protocol import Envelope, envelope, http_status


def reply(data: Any = None, error: CanvasCastError | None = None,
          status: int | None = None, headers: Mapping[str, str] | None = None
          ) -> JSONResponse:
    """A response: the envelope, with the status the wire format gives the error."""
    if status is None:
        status = 200 if error is None else http_status(error)
    headers = dict(headers or {})
    hint = getattr(error, "retry_after", None)
    if hint is not None:
        headers["Retry-After"] = str(max(1, round(hint)))
    return JSONResponse(envelope(data, error), status_code=status, headers=headers)


class ErrorEnvelope(Envelope[None]):
    """A request the API refused, or one it failed: ``success`` false, ``data`` null and
    ``error`` saying why (its ``code`` is what a client matches on)."""


REASONS = {
    400: "Invalid input (INVALID_INPUT): error.details lists every problem.",
    401: "A missing or wrong bearer token (AUTH).",
    404: "No such job or blob (NOT_FOUND).",
    413: "A body over the server's cap (PAYLOAD_TOO_LARGE).",
    422: "Bytes that do not hash to their name (INTEGRITY), or an Idempotency-Key used "
         "before for another request (IDEMPOTENCY_CONFLICT).",
    429: "The server is receiving as many upload bytes as it takes (RATE_LIMITED); "
         "Retry-After says when to try again.",
}


def refusals(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for these error statuses, each the error envelope, and any
    other error (``default``: a 405, a 500) as the same envelope."""
    responses: dict[int | str, dict[str, Any]] = {
        status: {"model": ErrorEnvelope, "description": REASONS[status]}
        for status in statuses}
    responses["default"] = {"model": ErrorEnvelope,
                            "description": "Any other error, in the same envelope."}
    return responses
