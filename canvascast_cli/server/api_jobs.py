"""The job API's job routes: submit, poll (long), cancel.

    POST   /v1/jobs/render_video        RenderPayload     -> 202 {"id", "function", "state"}
    POST   /v1/jobs/transcribe_audio    TranscribePayload
    POST   /v1/jobs/generate_images     ImagesPayload
    GET    /v1/jobs/{id}?wait=S         JobStatus, after waiting up to S s (<= 25) for a change
    DELETE /v1/jobs/{id}                cancel; the job's status

A submit never waits for the job. Its payload is checked first (shape, and every blob it
names is uploaded): a bad one is 400 with every problem listed. With an
``Idempotency-Key`` header, a retried submit returns the job the first one made, and the
key reused for another request is 422.
"""

from __future__ import annotations

from typing import Annotated

import anyio
import anyio.to_thread
from fastapi import APIRouter, Header, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from canvascast_cli.protocol import (
    API,
    JOB_ID_PATTERN,
    Envelope,
    ImagesPayload,
    JobStatus,
    Payload,
    RenderPayload,
    Submitted,
    TranscribePayload,
    function,
)
from canvascast_cli.server.idempotency import check_key, fingerprint
from canvascast_cli.server.replies import refusals, reply
from canvascast_cli.server.work import check_inputs

MAX_WAIT = 25.0  # seconds a status request may wait: far under Modal's 150 s cut
MAX_WAITING = 500  # status requests waiting at once; more queue for a thread

router = APIRouter(prefix=f"/{API}/jobs", tags=["jobs"])
SUBMIT_REFUSALS = refusals(400, 401, 413, 422)
JobId = Annotated[str, PathParam(pattern=f"^(?:{JOB_ID_PATTERN})$",
                                 description="What the submit returned.")]
IdempotencyKey = Annotated[str | None, Header(
    alias="Idempotency-Key", description="Send the same key with every retry of one "
    "submission: it never starts a second job.")]


async def _submit(name: str, payload: Payload, request: Request, key: str | None
                  ) -> JSONResponse:
    state = request.app.state
    await run_in_threadpool(check_inputs, name, payload, state.store)

    def create() -> str:
        return str(state.submit(name, payload))

    if key:
        body = payload.model_dump_json().encode()
        job_id = await run_in_threadpool(state.keys.submit, check_key(key),
                                         fingerprint(name, body), create)
    else:
        job_id = await run_in_threadpool(create)
    return reply(Submitted(id=job_id, function=name), status=202)


@router.post("/render_video", status_code=202, response_model=Envelope[Submitted],
             responses=SUBMIT_REFUSALS, summary=function("render_video").summary)
async def submit_render(payload: RenderPayload, request: Request,
                        idempotency_key: IdempotencyKey = None) -> JSONResponse:
    return await _submit("render_video", payload, request, idempotency_key)


@router.post("/transcribe_audio", status_code=202, response_model=Envelope[Submitted],
             responses=SUBMIT_REFUSALS, summary=function("transcribe_audio").summary)
async def submit_transcribe(payload: TranscribePayload, request: Request,
                            idempotency_key: IdempotencyKey = None) -> JSONResponse:
    return await _submit("transcribe_audio", payload, request, idempotency_key)


@router.post("/generate_images", status_code=202, response_model=Envelope[Submitted],
             responses=SUBMIT_REFUSALS, summary=function("generate_images").summary)
async def submit_images(payload: ImagesPayload, request: Request,
                        idempotency_key: IdempotencyKey = None) -> JSONResponse:
    return await _submit("generate_images", payload, request, idempotency_key)


@router.post("/{name}", include_in_schema=False)
async def submit_unknown(name: str) -> JSONResponse:
    function(name)  # raises InvalidInput naming the functions there are
    raise AssertionError("unreachable: every function has its own route")


@router.get("/{job_id}", response_model=Envelope[JobStatus],
            responses=refusals(400, 401, 404))
async def job_status(job_id: JobId, request: Request,
                     wait: Annotated[float, Query(ge=0, le=3600, description=(
                         "Seconds to wait for a change (at most 25)."))] = 0.0
                     ) -> JSONResponse:
    """The job's status, once it changes or after ``wait`` seconds."""
    state = request.app.state
    wait = min(wait, MAX_WAIT)
    if wait <= 0:
        status = await run_in_threadpool(state.runner.status, job_id, 0.0)
    else:
        # A wait holds its thread for up to MAX_WAIT s: never one of the pool every other
        # route shares, or clients waiting on their jobs stall everyone's uploads.
        status = await anyio.to_thread.run_sync(state.runner.status, job_id, wait,
                                                limiter=state.waiters)
    return reply(_with_urls(status))


@router.delete("/{job_id}", response_model=Envelope[JobStatus],
               responses=refusals(400, 401, 404))
async def cancel_job(job_id: JobId, request: Request) -> JSONResponse:
    """Cancel the job (a running one is stopped); its status."""
    runner = request.app.state.runner
    return reply(_with_urls(await run_in_threadpool(runner.cancel, job_id)))


def _with_urls(status: JobStatus) -> JobStatus:
    """Each artifact with the route that serves it."""
    if status.result is None:
        return status
    artifacts = [a.model_copy(update={"url": f"/{API}/blobs/{a.sha256}"})
                 for a in status.result.artifacts]
    return status.model_copy(update={"result": status.result.model_copy(
        update={"artifacts": artifacts})})
