"""`GET /metrics` (Prometheus text format) and the middleware that counts HTTP requests.

Requests are labelled by route template (`/v1/generations/{generation_id}`), never by raw path, so
the label set stays small; requests no route matched are counted as `unmatched`. With
`metrics_token` set, /metrics needs `Authorization: Bearer <metrics_token>` (compared in constant
time). See daguerre.metrics for what is measured and docs/operations.md#metrics for how to scrape.
"""

from __future__ import annotations

import hmac
import time

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from daguerre import metrics
from daguerre.api.deps import services
from daguerre.store import Store

router = APIRouter(include_in_schema=False)


@router.get("/metrics")
def prometheus_metrics(request: Request) -> Response:
    token = services(request).settings.metrics_token
    if token is not None:
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            return Response("Unauthorized\n", status_code=401, headers={"WWW-Authenticate": "Bearer"})
    queue: CollectorRegistry = request.app.state.queue_metrics
    body = generate_latest(metrics.REGISTRY) + generate_latest(queue)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


def queue_registry(store: Store) -> CollectorRegistry:
    """The queue gauges of this app's store (read at each scrape); also registers the process
    collectors in this process's registry."""
    metrics.register_process_collectors()
    registry = CollectorRegistry()
    registry.register(metrics.QueueCollector(store.generations.queue_summary))
    return registry


class MetricsMiddleware:
    """Counts every HTTP request by route template, method and status, and times it to the start
    of its response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def noting_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                metrics.HTTP_SECONDS.labels(_route(scope), scope["method"]).observe(
                    time.perf_counter() - started
                )
            await send(message)

        try:
            await self.app(scope, receive, noting_status)
        finally:
            metrics.HTTP_REQUESTS.labels(_route(scope), scope["method"], str(status)).inc()


def _route(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "unmatched"
