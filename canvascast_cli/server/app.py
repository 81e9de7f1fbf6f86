"""The job API: one ASGI app (FastAPI), hosted by `canvascast serve` and by Modal.

Routes, grouped by concern (every response is the envelope ``{"success", "data",
"error"}``; every route but ``/v1/health`` needs ``Authorization: Bearer <token>``):

    GET    /v1/health                   liveness, version             (here)
    GET    /v1/openapi.json             this API as OpenAPI 3         (here)
    POST   /v1/blobs/missing            which blobs the server lacks  (api_blobs.py)
    PUT    /v1/blobs/{sha256}           store bytes, hash-checked
    GET    /v1/blobs/{sha256}           stream them back
    POST   /v1/jobs/{function}          submit -> {"id"}              (api_jobs.py)
    GET    /v1/jobs/{id}?wait=S         status; waits up to S s (<= 25) for a change
    DELETE /v1/jobs/{id}                cancel

Bodies and replies are the wire format's models (``canvascast_cli.protocol``), so the
OpenAPI document is generated from the same types the client and server use. Requests
never block on a job (Modal cuts a web request at 150 s): clients submit, then
long-poll. A bad request is a 4xx with the CLI's own messages, never a 500.

FastAPI resolves route annotations at run time, so the route modules import it at the
top: they are imported only by `canvascast serve` and the Modal app, never at CLI
start-up.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from canvascast_cli import __version__
from canvascast_cli.errors import (
    AuthFailed,
    CanvasCastError,
    InvalidInput,
    NotFound,
    PayloadTooLarge,
    ServerError,
)
from canvascast_cli.protocol import API, API_VERSION, FUNCTIONS, Envelope, Health
from canvascast_cli.server import api_blobs, api_jobs
from canvascast_cli.server.blobs import BlobStore
from canvascast_cli.server.idempotency import IdempotencyKeys, MemoryKeys
from canvascast_cli.server.limits import BodyLimit, Janitor, Limits, SpoolBudget
from canvascast_cli.server.replies import refusals, reply
from canvascast_cli.server.runner import Runner

OPEN_PATHS = frozenset({f"/{API}/health"})  # everything else needs the token


def create_app(store: BlobStore, runner: Runner, token: str, *, limits: Limits = Limits(),
               keys: IdempotencyKeys | None = None, janitor: Janitor | None = None,
               submit: Callable[[str, Any], str] | None = None) -> FastAPI:
    """The job API over ``store`` and ``runner``; ``token`` is the bearer every client
    must send (compared in constant time). ``keys``: where Idempotency-Keys are kept
    (default: this process). ``janitor``: prunes the blob store (at start and after
    uploads). ``submit`` may replace ``runner.submit``."""
    if not token:
        raise ValueError("the job API needs a token")
    expected = token.encode()
    api = FastAPI(title="canvascast job API", version=API_VERSION,
                  summary=f"canvascast {__version__}: blobs and jobs (render, transcribe, "
                  "images)", docs_url=None, redoc_url=None,
                  openapi_url=None)  # served below, as a route the document lists
    # Bodies are JSON of at most max_json_bytes, but for blob uploads (their own cap).
    api.add_middleware(BodyLimit, limit=limits.max_json_bytes,
                       exempt=lambda method, path: method == "PUT"
                       and path.startswith(f"/{API}/blobs/"))
    api.state.store = store
    api.state.runner = runner
    api.state.limits = limits
    api.state.keys = keys or MemoryKeys()
    api.state.spool = SpoolBudget(limits.max_spool_bytes)
    api.state.waiters = anyio.CapacityLimiter(api_jobs.MAX_WAITING)  # long polls' threads
    api.state.janitor = janitor
    api.state.submit = submit or runner.submit

    @api.middleware("http")
    async def authenticate(request: Request,
                           call_next: Callable[[Request], Awaitable[Any]]) -> Any:
        if request.url.path not in OPEN_PATHS:
            scheme, _, given = request.headers.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(given.encode(), expected):
                return reply(error=AuthFailed("missing or wrong bearer token"))
        try:
            return await call_next(request)
        except CanvasCastError as exc:
            return reply(error=exc)

    _error_handlers(api)

    @api.get(f"/{API}/health", response_model=Envelope[Health], tags=["health"])
    async def health() -> JSONResponse:
        """Liveness and version; the only route without the token."""
        return reply(Health(functions=list(FUNCTIONS)))

    @api.get(f"/{API}/openapi.json", tags=["health"], response_class=JSONResponse,
             responses={200: {"description": "The OpenAPI 3 document.", "content": {
                 "application/json": {"schema": {"type": "object"}}}}, **refusals(401)})
    async def openapi_document() -> JSONResponse:
        """This API as OpenAPI 3 (what this document is)."""
        return JSONResponse(api.openapi())

    api.include_router(api_blobs.router)
    api.include_router(api_jobs.router)
    _document_the_token(api)
    if janitor is not None:
        api.router.on_startup.append(janitor.start)
    return api


def _document_the_token(api: FastAPI) -> None:
    """The document says what the middleware enforces: a bearer token on every route but
    the health check."""
    generate = api.openapi

    def document() -> dict[str, Any]:
        doc = generate()  # generated once, then the same dict
        doc.setdefault("components", {})["securitySchemes"] = {
            "bearer": {"type": "http", "scheme": "bearer",
                       "description": "The server's MODAL_TOKEN."}}
        doc["security"] = [{"bearer": []}]
        for path in OPEN_PATHS:
            for operation in doc["paths"].get(path, {}).values():
                operation["security"] = []
        return doc

    api.openapi = document  # type: ignore[method-assign]


def _error_handlers(api: FastAPI) -> None:
    @api.exception_handler(CanvasCastError)
    async def on_error(_request: Request, exc: CanvasCastError) -> JSONResponse:
        return reply(error=exc)

    @api.exception_handler(RequestValidationError)
    async def on_validation(_request: Request, exc: RequestValidationError) -> JSONResponse:
        from canvascast_cli.timeline import validation_problems

        errors = [{**e, "loc": tuple(e.get("loc") or ())[1:]} for e in exc.errors()]
        problems = validation_problems(errors)
        noun = "problem" if len(problems) == 1 else "problems"
        return reply(error=InvalidInput(f"bad request: {len(problems)} {noun}",
                                        details=problems))

    @api.exception_handler(StarletteHTTPException)
    async def on_http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        error: CanvasCastError
        if exc.status_code == 413:
            error = PayloadTooLarge(f"{request.method} {request.url.path}: {exc.detail}")
        elif exc.status_code == 404:
            error = NotFound(f"{request.method} {request.url.path}: no such route")
        elif exc.status_code >= 500:
            error = ServerError(str(exc.detail))
        else:
            error = InvalidInput(f"{request.method} {request.url.path}: {exc.detail}")
        return reply(error=error, status=exc.status_code, headers=exc.headers)

    @api.exception_handler(Exception)
    async def on_crash(_request: Request, exc: Exception) -> JSONResponse:
        return reply(error=ServerError(f"server error: {type(exc).__name__}"), status=500)
