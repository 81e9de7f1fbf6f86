"""The HTTP backend: the job API (`canvascast serve`, or the app Modal hosts) over httpx.

Every request is retried by the ``RetryPolicy`` on transient failures and every failure
leaves here as a ``canvascast_cli.errors`` class, mapped in one place (``_request``):

    connect error, reset, protocol error     -> ConnectionFailed   (retryable)
    read/write/pool timeout                  -> Timeout            (retryable)
    401 / 403                                -> AuthFailed         (exit 3, not retried)
    413                                      -> PayloadTooLarge
    429 (+ Retry-After)                      -> RateLimited        (retryable, hint kept)
    502 / 503 / 504                          -> ModalUnavailable   (retryable, exit 3)
    other 5xx                                -> ServerError        (retryable)
    an envelope with an error                -> that error's own class (errors.from_dict)
    a body that is not the envelope          -> ServerError        (retryable)

The token is sent in a header and never appears in a message: errors name the endpoint
and the route, nothing else of the request.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

from canvascast_cli import __version__
from canvascast_cli.dispatch.retry import RetryPolicy, parse_retry_after
from canvascast_cli.errors import (
    AuthFailed,
    CanvasCastError,
    ConnectionFailed,
    IntegrityError,
    ModalUnavailable,
    PayloadTooLarge,
    RateLimited,
    ServerError,
    Timeout,
    from_dict,
)

CHUNK = 1 << 20
Bytes = Callable[[int], None]  # bytes moved so far in this transfer


class HttpBackend:
    name = "http"

    def __init__(self, endpoint: str, token: str, *, retry: RetryPolicy | None = None,
                 transport: httpx.BaseTransport | None = None, timeout: float = 60.0,
                 clock: Callable[[], float] | None = None) -> None:
        self.endpoint = endpoint.rstrip("/")
        self.retry = retry or RetryPolicy()
        self._clock = clock
        self._client = httpx.Client(
            base_url=self.endpoint, transport=transport, follow_redirects=False,
            timeout=httpx.Timeout(timeout, connect=min(10.0, timeout)),
            headers={"Authorization": f"Bearer {token}",
                     "User-Agent": f"canvascast/{__version__}"})

    def __repr__(self) -> str:  # never the token
        return f"HttpBackend({self.endpoint!r})"

    def close(self) -> None:
        self._client.close()

    # -- the job API ----------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        return self._call("GET", "/v1/health")

    def missing(self, shas: list[str]) -> list[str]:
        if not shas:
            return []
        data = self._call("POST", "/v1/blobs/missing", json={"sha256": shas})
        return list(data.get("missing") or [])

    def upload(self, sha: str, path: Path, on_bytes: Bytes | None = None) -> int:
        """PUT one file (streamed); the server checks its hash."""

        def once() -> int:
            sent = 0

            def chunks() -> Iterator[bytes]:
                nonlocal sent
                with path.open("rb") as fh:
                    while chunk := fh.read(CHUNK):
                        sent += len(chunk)
                        if on_bytes is not None:
                            on_bytes(sent)
                        yield chunk

            self._request("PUT", f"/v1/blobs/{sha}", content=chunks(),
                          headers={"Content-Length": str(path.stat().st_size),
                                   "Content-Type": "application/octet-stream"})
            return sent

        return self.retry.call(once)

    def submit(self, function: str, payload: dict[str, Any]) -> str:
        # One key for this submission and all its retried requests: a reply lost on the
        # way back never starts a second job.
        key = uuid.uuid4().hex
        data = self._call("POST", f"/v1/jobs/{function}", json=payload,
                          headers={"Idempotency-Key": key})
        return str(data["id"])

    def status(self, job_id: str, wait: float = 0.0) -> dict[str, Any]:
        return self._call("GET", f"/v1/jobs/{job_id}", params={"wait": wait},
                          timeout=wait + 30.0)

    def cancel(self, job_id: str) -> dict[str, Any]:
        return self._call("DELETE", f"/v1/jobs/{job_id}")

    def download(self, sha: str, into: Path, on_bytes: Bytes | None = None) -> int:
        """GET a blob into the open-for-writing file ``into``; its sha256 must match."""

        def once() -> int:
            digest, size = hashlib.sha256(), 0
            with into.open("wb") as out:
                try:
                    with self._client.stream("GET", f"/v1/blobs/{sha}") as response:
                        if response.status_code != 200:
                            response.read()
                            raise self._status_error(response, f"GET /v1/blobs/{sha}")
                        for chunk in response.iter_bytes(CHUNK):
                            digest.update(chunk)
                            out.write(chunk)
                            size += len(chunk)
                            if on_bytes is not None:
                                on_bytes(size)
                except httpx.HTTPError as exc:
                    raise self._transport_error(exc, f"GET /v1/blobs/{sha}") from None
            if digest.hexdigest() != sha:
                raise IntegrityError(f"downloaded {size:,} bytes hash to {digest.hexdigest()}, "
                                     f"not {sha}")
            return size

        return self.retry.call(once)

    # -- one request, mapped ----------------------------------------------------------

    def _call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        return self.retry.call(self._request, method, path, **kwargs)

    def _request(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        route = f"{method} {path.split('?')[0]}"
        try:
            response = self._client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise self._transport_error(exc, route) from None
        if response.status_code >= 300:
            raise self._status_error(response, route)
        try:
            doc = response.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ServerError(f"{self.endpoint}: {route} answered HTTP "
                              f"{response.status_code} with a body that is not JSON") from None
        if not isinstance(doc, dict) or "success" not in doc:
            raise ServerError(f"{self.endpoint}: {route}: the response is not the job API's "
                              "envelope (is MODAL_ENDPOINT the job API?)")
        if not doc["success"]:
            raise _envelope_error(doc, f"{route}: ")
        data = doc.get("data")
        return data if isinstance(data, dict) else {"value": data}

    def _transport_error(self, exc: httpx.HTTPError, route: str) -> CanvasCastError:
        kind = type(exc).__name__
        if isinstance(exc, httpx.TimeoutException):
            return Timeout(f"{self.endpoint}: {route}: no answer in time ({kind})")
        return ConnectionFailed(f"cannot reach {self.endpoint}: {route}: {kind}")

    def _status_error(self, response: httpx.Response, route: str) -> CanvasCastError:
        code = response.status_code
        said = f"{self.endpoint}: {route} answered HTTP {code}"
        try:
            doc = response.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            doc = None
        if isinstance(doc, dict) and isinstance(doc.get("error"), dict):
            error = _envelope_error(doc, f"{route}: ")
        else:
            error = None
        if code in (401, 403):
            return error if isinstance(error, AuthFailed) else AuthFailed(
                f"{said}: the token was refused (check MODAL_TOKEN)")
        if code == 413:
            return error if isinstance(error, PayloadTooLarge) else PayloadTooLarge(said)
        if code == 429:
            hint = parse_retry_after(response.headers.get("retry-after"),
                                     now=self._clock() if self._clock else None)
            return RateLimited(f"{said}: rate limited", retry_after=hint)
        if code in (502, 503, 504):
            return ModalUnavailable(f"{said}: the service is unavailable")
        if code >= 500:
            return ServerError(f"{said}" + (f": {error.message}" if error else ""))
        if code in (301, 302, 303, 307, 308):
            return ServerError(f"{said} (a redirect: is the request longer than the host "
                               "allows?)")
        return error or ServerError(said)


def _envelope_error(doc: dict[str, Any], prefix: str) -> CanvasCastError:
    body = dict(doc.get("error") or {})
    body["message"] = prefix + str(body.get("message") or body.get("code") or "failed")
    return from_dict(body)
