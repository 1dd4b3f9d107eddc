"""Liveness and readiness, off the `/v1` auth (for load balancers and orchestrators).

    GET /healthz   200 {"status": "ok"} while the process answers
    GET /readyz    200 {"status": "ready", "checks": {...}} when the store answers, blobs are
                   writable and this process's workers have loaded their models and moderation;
                   503 {"status": "not ready", "not_ready": ["store: ...", ...], "checks": {...}}

A blob probe is written and deleted at most every BLOB_PROBE_S per process; the store is asked
`SELECT 1` each time (bounded by CHECK_TIMEOUT_S).
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Callable

import sqlalchemy as sa
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from daguerre.api.deps import services

router = APIRouter(include_in_schema=False)

Readiness = Callable[[], dict[str, str]]
"""What this process's workers report: component -> "ok" or what is wrong (e.g. "loading")."""
CHECK_TIMEOUT_S = 3.0
BLOB_PROBE_S = 10.0
PROBE_KEY = f"health/readyz-{socket.gethostname()}-{os.getpid()}"


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(request: Request) -> JSONResponse:
    checks = {
        "store": await _bounded(_store_check, request),
        "blobs": await _bounded(_blob_check, request),
    }
    workers: Readiness | None = getattr(request.app.state, "readiness", None)
    if workers is not None:
        checks.update(workers())
    problems = [f"{name}: {state}" for name, state in checks.items() if state != "ok"]
    if problems:
        return JSONResponse({"status": "not ready", "not_ready": problems, "checks": checks}, status_code=503)
    return JSONResponse({"status": "ready", "checks": checks})


async def _bounded(check: Callable[[Request], str], request: Request) -> str:
    try:
        return await asyncio.wait_for(run_in_threadpool(check, request), CHECK_TIMEOUT_S)
    except TimeoutError:
        return f"no answer within {CHECK_TIMEOUT_S:g} s"


def _store_check(request: Request) -> str:
    try:
        with services(request).store.db.engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except Exception as error:  # any driver error means not ready
        return _one_line(error)
    return "ok"


def _blob_check(request: Request) -> str:
    """Write and delete a probe; a success is trusted for BLOB_PROBE_S (kept on the app, whose
    blob store it speaks for), a failure is probed again at the next request."""
    last_ok: float | None = getattr(request.app.state, "blob_probe_ok_at", None)
    if last_ok is not None and time.monotonic() - last_ok < BLOB_PROBE_S:
        return "ok"
    blobs = services(request).blobs
    try:
        blobs.put(PROBE_KEY, b"ok", "text/plain")
        blobs.delete(PROBE_KEY)
    except Exception as error:  # a full disk, a missing bucket, refused credentials...
        return f"not writable: {_one_line(error)}"
    request.app.state.blob_probe_ok_at = time.monotonic()
    return "ok"


def _one_line(error: Exception) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text[:200]
