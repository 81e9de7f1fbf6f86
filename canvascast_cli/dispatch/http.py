"""The HTTP backend: the job API (`canvascast serve`, or the app Modal hosts) over httpx.

Every request is retried by the ``RetryPolicy`` on transient failures, and every failure
leaves here as a ``canvascast_cli.errors`` class through the one httpx mapping
(``canvascast_cli.net``, with the job API's reading of statuses, ``net.JOB_API``):

    connect error, reset, protocol error      -> ConnectionFailed    (retryable)
    read/write/pool timeout, 408              -> Timeout             (retryable)
    our envelope with an error                -> that error's own class (errors.from_dict)
    401 / 403                                 -> AuthFailed          (exit 3, not retried)
    413                                       -> PayloadTooLarge
    429 (+ Retry-After)                       -> RateLimited         (retryable, hint kept)
    502 / 503 / 504                           -> ModalUnavailable    (retryable, exit 3)
    other 5xx                                 -> ServerError         (retryable)
    any other 4xx or 3xx without our envelope,
    a 2xx that is not our envelope (a proxy's
    page, a wrong URL), a reply that is not
    the model the route returns               -> UnexpectedResponse  (exit 2, never retried:
                                                                      one request, no breaker)

"Our envelope" is ``{"success": false, "error": {"code": ..., ...}}``; another app's JSON
error document (``{"detail": ...}``, ``{"error": {"message": ...}}``) is not, and its
status decides.

Bodies are read and written as the wire format's models. The token is sent in a header
and never appears in a message: errors name the endpoint (without any user-info) and the
route, nothing else of the request. Job ids are checked before they go into a URL.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ValidationError

from canvascast_cli import __version__
from canvascast_cli.errors import CanvasCastError, IntegrityError, UnexpectedResponse, from_dict
from canvascast_cli.net import JOB_API, redact, status_error, transport_error
from canvascast_cli.protocol import (
    API,
    CHUNK,
    BlobStored,
    Health,
    JobStatus,
    MissingReply,
    Payload,
    Submitted,
    check_job_id,
    check_sha256,
    function,
)
from canvascast_cli.retry import RetryPolicy

M = TypeVar("M", bound=BaseModel)
Bytes = Callable[[int], None]  # bytes moved so far in this transfer


class HttpBackend:
    name = "http"

    def __init__(self, endpoint: str, token: str, *, retry: RetryPolicy | None = None,
                 transport: httpx.BaseTransport | None = None, timeout: float = 60.0,
                 clock: Callable[[], float] | None = None) -> None:
        self.endpoint = endpoint.rstrip("/")
        self._shown = redact(self.endpoint)  # how messages name it: never its user-info
        self.retry = retry or RetryPolicy()
        self._clock = clock
        self._client = httpx.Client(
            base_url=self.endpoint, transport=transport, follow_redirects=False,
            timeout=httpx.Timeout(timeout, connect=min(10.0, timeout)),
            headers={"Authorization": f"Bearer {token}",
                     "User-Agent": f"canvascast/{__version__}"})

    def __repr__(self) -> str:  # never the token
        return f"HttpBackend({self._shown!r})"

    def close(self) -> None:
        self._client.close()

    # -- the job API ----------------------------------------------------------------

    def missing(self, shas: list[str]) -> list[str]:
        if not shas:
            return []
        reply = self._call(MissingReply, "POST", "/blobs/missing", json={"sha256": shas})
        return list(reply.missing)

    def upload(self, sha: str, path: Path, on_bytes: Bytes | None = None) -> int:
        """PUT one file (streamed); the server checks its hash."""
        check_sha256(sha)

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

            self._request(BlobStored, "PUT", f"/blobs/{sha}", content=chunks(),
                          headers={"Content-Length": str(path.stat().st_size),
                                   "Content-Type": "application/octet-stream"})
            return sent

        return self.retry.call(once)

    def submit(self, function_name: str, payload: Payload) -> str:
        function(function_name)
        # One key for this submission and all its retried requests: a reply lost on the
        # way back never starts a second job.
        key = uuid.uuid4().hex
        reply = self._call(Submitted, "POST", f"/jobs/{function_name}",
                           content=payload.model_dump_json().encode(),
                           headers={"Idempotency-Key": key,
                                    "Content-Type": "application/json"})
        return reply.id

    def status(self, job_id: str, wait: float = 0.0) -> JobStatus:
        return self._call(JobStatus, "GET", f"/jobs/{_segment(job_id)}", params={"wait": wait},
                          timeout=wait + 30.0)

    def cancel(self, job_id: str) -> JobStatus:
        return self._call(JobStatus, "DELETE", f"/jobs/{_segment(job_id)}")

    def health(self) -> Health:
        """The server's liveness and version (no token needed; mapped like any call)."""
        return self._call(Health, "GET", "/health")

    def download(self, sha: str, into: Path, on_bytes: Bytes | None = None) -> int:
        """GET a blob into the file ``into``; its sha256 must match."""
        check_sha256(sha)
        route = f"/{API}/blobs/{sha}"

        def once() -> int:
            digest, size = hashlib.sha256(), 0
            with into.open("wb") as out:
                try:
                    with self._client.stream("GET", route) as response:
                        if response.status_code != 200:
                            response.read()
                            raise self._status_error(response, f"GET {route}")
                        for chunk in response.iter_bytes(CHUNK):
                            digest.update(chunk)
                            out.write(chunk)
                            size += len(chunk)
                            if on_bytes is not None:
                                on_bytes(size)
                except httpx.HTTPError as exc:
                    raise transport_error(exc, f"{self._shown}: GET {route}") from None
            if digest.hexdigest() != sha:
                raise IntegrityError(f"downloaded {size:,} bytes hash to {digest.hexdigest()}, "
                                     f"not {sha}")
            return size

        return self.retry.call(once)

    # -- one request, mapped ----------------------------------------------------------

    def _call(self, model: type[M], method: str, path: str, **kwargs: Any) -> M:
        return self.retry.call(self._request, model, method, path, **kwargs)

    def _request(self, model: type[M], method: str, path: str, **kwargs: Any) -> M:
        path = f"/{API}{path}"
        route = f"{method} {path}"
        try:
            response = self._client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise transport_error(exc, f"{self._shown}: {route}") from None
        if response.status_code >= 300:
            raise self._status_error(response, route)
        doc = _json(response)
        if _is_our_error(doc):
            raise _envelope_error(doc, f"{route}: ")
        if not isinstance(doc, dict) or doc.get("success") is not True:
            raise UnexpectedResponse(
                f"{self._shown}: {route} answered HTTP {response.status_code} with "
                f"{'JSON that is not' if doc is not None else 'a body that is not'} the job "
                f"API's envelope ({JOB_API.client_hint})")
        try:
            return model.model_validate(doc.get("data"))
        except ValidationError as exc:
            raise UnexpectedResponse(
                f"{self._shown}: {route}: the reply is not the {model.__name__} this "
                f"canvascast expects ({exc.error_count()} problem(s); is the server a "
                "compatible version?)") from None

    def _status_error(self, response: httpx.Response, route: str) -> CanvasCastError:
        doc = _json(response)
        said = _envelope_error(doc, f"{route}: ") if _is_our_error(doc) else None
        return status_error(response.status_code, response.headers,
                            f"{self._shown}: {route}", JOB_API, said=said, clock=self._clock)


def _segment(job_id: str) -> str:
    """A job id, checked and escaped, as one path segment."""
    return quote(check_job_id(job_id), safe="")


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None


def _is_our_error(doc: Any) -> bool:
    """Whether a body is our envelope with an error: another app's JSON error document
    (``{"error": {"message": ...}}``, ``{"detail": ...}``) is not, and its status
    decides (``net.status_error``)."""
    if not isinstance(doc, dict) or doc.get("success") is not False:
        return False
    error = doc.get("error")
    return isinstance(error, dict) and isinstance(error.get("code"), str)


def _envelope_error(doc: dict[str, Any], prefix: str) -> CanvasCastError:
    body = dict(doc.get("error") or {})
    body["message"] = prefix + str(body.get("message") or body.get("code") or "failed")
    return from_dict(body)
