"""The FastAPI application, and the one place where errors become HTTP answers.

    app = create_app(settings, store, blobs)

Every error body is `{"detail": "<string>"}`: ApiError with its status, unknown routes (404),
wrong methods (405), parameter errors (400) and anything unexpected (500 `Internal server error`,
answered by api.middleware.InternalErrorMiddleware).
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager, suppress
from typing import Any

import fastapi.routing
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import BaseRoute, Match

from daguerre import __version__
from daguerre.api import blobs as blob_routes
from daguerre.api import (
    events,
    files,
    generations,
    health,
    jobs,
    metrics,
    openapi,
    playground,
    usage,
    webhooks,
)
from daguerre.api.deps import Services
from daguerre.api.docs import mount_docs
from daguerre.api.files import maintain_files
from daguerre.api.middleware import BodySizeLimitMiddleware, HeadersMiddleware, InternalErrorMiddleware
from daguerre.api.relay import relay
from daguerre.blobs import BlobStore, LocalBlobStore
from daguerre.errors import ApiError
from daguerre.settings import Settings
from daguerre.store import Store
from daguerre.wire import Detail, FileCreate, GenerationCreate

log = logging.getLogger(__name__)

DESCRIPTION = """\
daguerre speaks Luma's Generations API: point the official `luma-agents` SDK at it with
`LUMA_BASE_URL=http://HOST:PORT/v1`. Authentication: `Authorization: Bearer luma-api-...`.
Every error body is `{"detail": "<string>"}`.
"""


FILE_MAINTENANCE_INTERVAL_S = 30.0


def create_app(
    settings: Settings, store: Store, blobs: BlobStore, readiness: health.Readiness | None = None
) -> FastAPI:
    """The API. `readiness` reports this process's workers for /readyz (models and moderation
    loaded); without one, only the store and blobs are checked."""
    svc = Services.build(settings, store, blobs)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        thresholds = _settle_garbage_collector()
        task = asyncio.create_task(_file_maintenance(svc))
        relay_task = asyncio.create_task(relay(svc)) if svc.dispatcher.outbox else None
        delivery_task = asyncio.create_task(webhooks.deliver(svc))
        try:
            yield
        finally:
            task.cancel()
            with suppress(asyncio.CancelledError):  # after the pass in progress, if any
                await task
            if relay_task is not None:
                relay_task.cancel()
                with suppress(asyncio.CancelledError):
                    await relay_task
            delivery_task.cancel()  # an attempt cut short is made again once its lease lapses
            with suppress(asyncio.CancelledError):
                await delivery_task
            await svc.starts.drain(STARTS_DRAIN_S)  # what is still starting then is the relay's
            await run_in_threadpool(svc.waiter.close)  # `Prefer: wait` requests answer now
            await svc.dispatcher.close()
            await svc.limiter.close()
            gc.unfreeze()
            gc.set_threshold(*thresholds)

    app = FastAPI(
        lifespan=lifespan,
        title="daguerre",
        version=__version__,
        description=DESCRIPTION,
        docs_url=None,  # api.docs serves /docs and /redoc, without a CDN
        redoc_url=None,
        openapi_url="/openapi.json",
    )
    app.state.services = svc
    app.state.queue_metrics = metrics.queue_registry(store)
    app.state.readiness = readiness

    app.include_router(generations.router)
    app.include_router(jobs.router)
    app.include_router(events.router)
    app.include_router(webhooks.router)
    mount_docs(app, app.openapi_url or "/openapi.json")
    app.include_router(files.router)
    app.include_router(usage.router)
    if isinstance(blobs, LocalBlobStore):
        app.include_router(blob_routes.router)

    app.include_router(health.router)
    app.include_router(metrics.router)
    app.include_router(playground.router)
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    # Added innermost first: headers go on every answer, including the cap's 413 and the 500 of
    # anything unexpected (which must not catch the cap's own signal, so it sits outside the cap).
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.max_request_bytes)
    app.add_middleware(InternalErrorMiddleware)
    app.add_middleware(HeadersMiddleware)
    app.add_middleware(metrics.MetricsMiddleware)  # outermost: counts every answer, the 413s too
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


STARTS_DRAIN_S = 5.0
"""How long shutdown waits for the workflow starts in flight."""

# Young-generation threshold once the server runs (CPython's default is 700 allocations).
GC_GEN0_THRESHOLD = 20_000


def _settle_garbage_collector() -> tuple[int, int, int]:
    """Keep the cyclic garbage collector off the request path.

    Everything built before the server starts (modules, routes, schemas, SQL statements) lives as
    long as the process, yet every full collection walks it again: with FastAPI, pydantic and
    SQLAlchemy loaded that took 50-90 ms, several times a minute under load (measured with
    gc.callbacks in bench/api_bench.py's server). `gc.freeze()` moves it out of the collector's
    sight. Requests allocate many short-lived objects that reference counting frees anyway, so
    the young generation is collected every GC_GEN0_THRESHOLD allocations instead of every 700.
    Together: GC time under the create benchmark fell from about 8 % to under 2 %. Answers the
    thresholds before, which shutdown restores (and unfreezes)."""
    gc.collect()
    gc.freeze()
    thresholds = gc.get_threshold()
    gc.set_threshold(GC_GEN0_THRESHOLD, thresholds[1], thresholds[2])
    return thresholds


async def _file_maintenance(svc: Services) -> None:
    """Expired files and interrupted ingests, every FILE_MAINTENANCE_INTERVAL_S seconds."""
    while True:
        running = asyncio.ensure_future(run_in_threadpool(maintain_files, svc))
        try:
            await asyncio.shield(running)
        except asyncio.CancelledError:
            # A thread cannot be stopped: the pass finishes before shutdown goes on to close the
            # store, which it would otherwise go on using (and reopen connections to).
            with suppress(Exception):
                await running
            raise
        except Exception:
            log.exception("file maintenance failed")
        await asyncio.sleep(FILE_MAINTENANCE_INTERVAL_S)


def _error(status: int, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


async def _api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return _error(exc.status, exc.detail, exc.headers)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    detail = exc.detail if isinstance(exc.detail, str) else Detail.NOT_FOUND
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        headers["Allow"] = _allowed_methods(request)
    return _error(exc.status_code, detail, headers)


def _allowed_methods(request: Request) -> str:
    """Every method the request's path is served with, for a 405's `Allow`.

    The router answers 405 from the first route whose path matched, and that route's `Allow`
    names only its own methods: GET /v1/files/{id} would hide DELETE. So every route is asked."""
    methods: set[str] = set()
    for route in _route_table(request.app.router.routes):
        match, _ = route.matches(request.scope)
        if match is not Match.NONE:
            methods.update(getattr(route, "methods", None) or ())
    return ", ".join(sorted(methods))


def _route_table(routes: Sequence[BaseRoute]) -> Iterable[Any]:
    """The routes one by one (recent FastAPI keeps each included router as one entry)."""
    expand = getattr(fastapi.routing, "iter_route_contexts", None)
    return expand(routes) if expand is not None else routes


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    first = exc.errors()[0] if exc.errors() else {}
    location = ".".join(str(part) for part in first.get("loc", ())[1:]) or "request"
    return _error(400, f"{location}: {first.get('msg', 'invalid value')}")


def _openapi(app: FastAPI) -> dict[str, Any]:
    if app.openapi_schema is None:
        schema = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        request_models = {
            model.__name__: model.model_json_schema(ref_template="#/components/schemas/{model}")
            for model in (GenerationCreate, FileCreate)
        }
        schema = openapi.finish(schema, request_models)
        schema["components"]["securitySchemes"] = {
            "bearer": {"type": "http", "scheme": "bearer", "description": "luma-api-... key"}
        }
        schema["security"] = [{"bearer": []}]
        app.openapi_schema = schema
    return app.openapi_schema
