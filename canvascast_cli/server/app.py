"""The job API: one ASGI app (FastAPI), hosted by `canvascast serve` and by Modal.

Routes (every response is the envelope ``{"success", "data", "error"}``; every route but
``/v1/health`` needs ``Authorization: Bearer <token>``):

    GET    /v1/health                   liveness, version
    POST   /v1/blobs/missing            {"sha256": [...]} -> which of them the server lacks
    PUT    /v1/blobs/{sha256}           store bytes, checked against the hash (idempotent)
    GET    /v1/blobs/{sha256}           stream them back
    POST   /v1/jobs/{function}          submit -> {"id"}; never waits for the job
    GET    /v1/jobs/{id}?wait=S         queued | running (progress) | done (artifacts) |
                                        failed (code, message, retryable) | cancelled;
                                        waits up to S s (<= 25) for a change
    DELETE /v1/jobs/{id}                cancel

Requests never block on a job (Modal cuts a web request at 150 s); clients submit, then
long-poll. Bodies are size-limited (413 PAYLOAD_TOO_LARGE). A bad payload is 400
INVALID_INPUT with the same messages the CLI prints, never a 500.

FastAPI resolves route annotations at run time, so this module imports it at the top: it
is imported only by `canvascast serve` and the Modal app, never at CLI start-up.
"""

from __future__ import annotations

import hmac
import json
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import iterate_in_threadpool, run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from canvascast_cli import __version__
from canvascast_cli.errors import (
    CanvasCastError,
    InvalidInput,
    JobFailed,
    NotFound,
    PayloadTooLarge,
    from_dict,
)
from canvascast_cli.server.blobs import BlobStore, check_sha256
from canvascast_cli.server.runner import Runner
from canvascast_cli.server.work import FUNCTIONS, validate

MAX_WAIT = 25.0  # seconds a status request may wait: far under Modal's 150 s cut
HTTP_STATUS = {"INVALID_INPUT": 400, "CONFIG_INVALID": 400, "INTEGRITY": 422,
               "PAYLOAD_TOO_LARGE": 413, "AUTH": 401, "RATE_LIMITED": 429,
               "NOT_FOUND": 404}


@dataclass(frozen=True)
class Limits:
    max_json_bytes: int = 16 * 1024 * 1024  # a job payload (a 10,000-scene timeline fits)
    max_blob_bytes: int = 4 * 1024 * 1024 * 1024  # one upload


def envelope(data: Any = None, error: CanvasCastError | None = None) -> dict[str, Any]:
    return {"success": error is None, "data": data,
            "error": error.to_dict() if error is not None else None}


def create_app(store: BlobStore, runner: Runner, token: str, *, limits: Limits = Limits(),
               submit: Callable[[str, dict[str, Any]], str] | None = None) -> FastAPI:
    """The job API over ``store`` and ``runner``; ``token`` is the bearer every client
    must send (compared in constant time). ``submit`` may replace ``runner.submit``."""
    if not token:
        raise ValueError("the job API needs a token")
    expected = token.encode()
    api = FastAPI(title="canvascast job API", version=__version__, docs_url=None,
                  redoc_url=None, openapi_url=None)

    def reply(data: Any = None, error: CanvasCastError | None = None,
              status: int | None = None) -> JSONResponse:
        if status is None:
            status = 200 if error is None else HTTP_STATUS.get(error.code, 500)
        headers = {}
        if error is not None and getattr(error, "retry_after", None) is not None:
            headers["Retry-After"] = str(int(error.retry_after))  # type: ignore[attr-defined]
        return JSONResponse(envelope(data, error), status_code=status, headers=headers)

    @api.middleware("http")
    async def authenticate(request: Request,
                           call_next: Callable[[Request], Awaitable[Any]]) -> Any:
        if request.url.path != "/v1/health":
            header = request.headers.get("authorization", "")
            scheme, _, given = header.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(given.encode(), expected):
                from canvascast_cli.errors import AuthFailed

                return reply(error=AuthFailed("missing or wrong bearer token"))
        try:
            return await call_next(request)
        except CanvasCastError as exc:
            return reply(error=exc)

    @api.exception_handler(CanvasCastError)
    async def on_error(_request: Request, exc: CanvasCastError) -> JSONResponse:
        return reply(error=exc)

    @api.exception_handler(RequestValidationError)
    async def on_validation(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return reply(error=InvalidInput(f"bad request: {exc.errors()[:3]}"))

    @api.exception_handler(StarletteHTTPException)
    async def on_http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        error = InvalidInput(str(exc.detail))
        return reply(error=error, status=exc.status_code)

    @api.exception_handler(Exception)
    async def on_crash(_request: Request, exc: Exception) -> JSONResponse:
        return reply(error=JobFailed(f"server error: {type(exc).__name__}"), status=500)

    async def read_json(request: Request) -> Any:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limits.max_json_bytes:
            raise PayloadTooLarge(f"request body of {int(declared):,} bytes; at most "
                                  f"{limits.max_json_bytes:,}")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > limits.max_json_bytes:
                raise PayloadTooLarge(f"request body over {limits.max_json_bytes:,} bytes")
        from canvascast_cli.timeline import load_json

        return load_json(bytes(body), source="request body")

    @api.get("/v1/health")
    async def health() -> JSONResponse:
        return reply({"status": "ok", "version": __version__, "functions": list(FUNCTIONS)})

    @api.post("/v1/blobs/missing")
    async def missing(request: Request) -> JSONResponse:
        body = await read_json(request)
        shas = body.get("sha256") if isinstance(body, dict) else None
        if not isinstance(shas, list) or len(shas) > 100_000:
            raise InvalidInput('body: {"sha256": [up to 100,000 hashes]}')
        return reply({"missing": await run_in_threadpool(store.missing, shas)})

    @api.put("/v1/blobs/{sha}")
    async def put_blob(sha: str, request: Request) -> JSONResponse:
        check_sha256(sha)
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limits.max_blob_bytes:
            raise PayloadTooLarge(f"blob of {int(declared):,} bytes; at most "
                                  f"{limits.max_blob_bytes:,}")
        if await run_in_threadpool(store.has, sha):
            # Idempotent: drain (and discard) the body, keep the stored bytes.
            async for _ in request.stream():
                pass
            return reply({"sha256": sha, "size": store.size(sha), "stored": False})
        total = 0
        import os
        import tempfile

        # Spool to disk in the event loop's thread pool: uploads can be gigabytes.
        fd, name = tempfile.mkstemp(dir=store.root / "tmp", prefix="spool-")
        try:
            with os.fdopen(fd, "wb") as spool:
                async for chunk in request.stream():
                    total += len(chunk)
                    if total > limits.max_blob_bytes:
                        raise PayloadTooLarge(f"blob over {limits.max_blob_bytes:,} bytes")
                    spool.write(chunk)

            def store_spool() -> tuple[str, int]:
                with open(name, "rb") as fh:
                    return store.put_chunks(iter(lambda: fh.read(1 << 20), b""), expected=sha)

            stored, size = await run_in_threadpool(store_spool)
        finally:
            os.unlink(name)
        return reply({"sha256": stored, "size": size, "stored": True})

    @api.get("/v1/blobs/{sha}")
    async def get_blob(sha: str) -> Any:
        check_sha256(sha)
        if not await run_in_threadpool(store.has, sha):
            return reply(error=NotFound(f"blob {sha} not found"))
        size = store.size(sha)

        async def body() -> AsyncIterator[bytes]:
            async for chunk in iterate_in_threadpool(store.read(sha)):
                yield chunk

        return StreamingResponse(body(), media_type="application/octet-stream",
                                 headers={"Content-Length": str(size),
                                          "X-Content-SHA256": sha})

    submitted: OrderedDict[str, str] = OrderedDict()  # Idempotency-Key -> job id

    @api.post("/v1/jobs/{function}")
    async def submit_job(function: str, request: Request) -> JSONResponse:
        key = request.headers.get("idempotency-key", "")[:200]
        if key and key in submitted:  # a retried request: the job already exists
            return reply({"id": submitted[key], "function": function, "state": "queued"},
                         status=202)
        payload = await read_json(request)
        await run_in_threadpool(validate, function, payload, store)
        job_id = await run_in_threadpool(submit or runner.submit, function, payload)
        if key:
            submitted[key] = job_id
            while len(submitted) > 10_000:
                submitted.popitem(last=False)
        return reply({"id": job_id, "function": function, "state": "queued"}, status=202)

    @api.get("/v1/jobs/{job_id}")
    async def job_status(job_id: str, wait: float = 0.0) -> JSONResponse:
        seconds = min(max(wait, 0.0), MAX_WAIT)
        status = await run_in_threadpool(runner.status, job_id, seconds)
        return reply(_with_urls(status))

    @api.delete("/v1/jobs/{job_id}")
    async def cancel_job(job_id: str) -> JSONResponse:
        return reply(_with_urls(await run_in_threadpool(runner.cancel, job_id)))

    return api


def _with_urls(status: dict[str, Any]) -> dict[str, Any]:
    result = status.get("result")
    if isinstance(result, dict):
        for artifact in result.get("artifacts") or []:
            artifact["url"] = f"/v1/blobs/{artifact['sha256']}"
    return status


def error_from_envelope(body: bytes) -> CanvasCastError | None:
    """The error an envelope carries (client side), or None for a success."""
    try:
        doc = json.loads(body)
    except ValueError:
        return None
    if isinstance(doc, dict) and isinstance(doc.get("error"), dict):
        return from_dict(doc["error"])
    return None
