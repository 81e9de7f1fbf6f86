"""The job API's blob routes: content-addressed bytes, uploaded once, read by many.

    POST /v1/blobs/missing      {"sha256": [...]} -> which of them the server lacks
    PUT  /v1/blobs/{sha256}     store bytes; their hash must be the name (idempotent)
    GET  /v1/blobs/{sha256}     stream them back (X-Content-SHA256 says what to expect)

Every upload is held to the one-blob cap and to the server's spool budget — including one
of bytes the store already has, whose body is read and discarded, not trusted.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import iterate_in_threadpool, run_in_threadpool

from canvascast_cli.errors import NotFound, PayloadTooLarge
from canvascast_cli.protocol import (
    API,
    SHA256_PATTERN,
    BlobStored,
    Envelope,
    MissingReply,
    MissingRequest,
    check_sha256,
)
from canvascast_cli.server.replies import refusals, reply

router = APIRouter(prefix=f"/{API}/blobs", tags=["blobs"])
Sha256 = Annotated[str, Path(pattern=f"^{SHA256_PATTERN}$",
                              description="The bytes' sha256, 64 lower-case hex digits.")]


@router.post("/missing", response_model=Envelope[MissingReply],
             responses=refusals(400, 401, 413))
async def missing(body: MissingRequest, request: Request) -> JSONResponse:
    """Which of these blobs the server lacks (upload those, then submit). The others count
    as used now: retention must not take them before the submit that will name them."""
    store = request.app.state.store

    def lacking() -> list[str]:
        absent = store.missing(body.sha256)
        store.touch(set(body.sha256) - set(absent))
        return list(absent)

    return reply(MissingReply(missing=await run_in_threadpool(lacking)))


@router.put("/{sha}", response_model=Envelope[BlobStored],
            responses=refusals(400, 401, 413, 422, 429),
            openapi_extra={"requestBody": {"required": True, "content": {
                "application/octet-stream": {"schema": {"type": "string",
                                                        "format": "binary"}}}}})
async def put_blob(sha: Sha256, request: Request) -> JSONResponse:
    """Store the body as blob ``sha`` (its sha256 is checked; a mismatch is 422)."""
    check_sha256(sha)
    state = request.app.state
    store, limits, spool = state.store, state.limits, state.spool
    declared = request.headers.get("content-length")
    size = int(declared) if declared is not None and declared.isdigit() else None
    if size is not None and size > limits.max_blob_bytes:
        raise PayloadTooLarge(f"a blob of {size:,} bytes; at most {limits.max_blob_bytes:,}")
    reserved = size if size is not None else 0
    spool.take(reserved)
    try:
        if await run_in_threadpool(store.has, sha):
            # Idempotent: the stored bytes stay (and count as used now); the body is
            # read, within the same caps, and dropped.
            await run_in_threadpool(store.touch, [sha])
            received = 0
            async for chunk in request.stream():
                received += len(chunk)
                if received > limits.max_blob_bytes:
                    raise PayloadTooLarge(f"blob over {limits.max_blob_bytes:,} bytes")
            return reply(BlobStored(sha256=sha, size=store.size(sha), stored=False))
        with store.writer(expected=sha, limit=limits.max_blob_bytes) as out:
            async for chunk in request.stream():
                if out.size + len(chunk) > reserved:  # a body longer than announced
                    spool.take(out.size + len(chunk) - reserved)
                    reserved = out.size + len(chunk)
                out.write(chunk)
            stored, written = await run_in_threadpool(out.finish)
    finally:
        spool.give(reserved)
    janitor = state.janitor
    if janitor is not None:
        await run_in_threadpool(janitor.maybe_prune)
    return reply(BlobStored(sha256=stored, size=written, stored=True))


@router.get("/{sha}", response_class=StreamingResponse, responses={200: {"content": {
    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}},
    **refusals(400, 401, 404)})
async def get_blob(sha: Sha256, request: Request) -> Any:
    """Stream blob ``sha``."""
    check_sha256(sha)
    store = request.app.state.store
    if not await run_in_threadpool(store.has, sha):
        raise NotFound(f"blob {sha} not found")
    size = store.size(sha)

    async def body() -> AsyncIterator[bytes]:
        async for chunk in iterate_in_threadpool(store.read(sha)):
            yield chunk

    return StreamingResponse(body(), media_type="application/octet-stream",
                             headers={"Content-Length": str(size), "X-Content-SHA256": sha})

