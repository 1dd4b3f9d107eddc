"""POST /v1/generations and GET /v1/generations/{id}.

The POST validates, stores the input images, and inserts the generation in one transaction; it
returns at once with the Generation in `queued`. Workers pick it up from the store (embedded), or,
with execution = "temporal", the row is also put in the outbox and its workflow is started after
the commit (api.relay). Once the row is committed the handler must not answer 5xx: the SDK would
retry and create a duplicate.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool

from daguerre import metrics, pricing
from daguerre.api.deps import RequestRoute, authenticate, base_url, json_body, services
from daguerre.api.idempotency import REPLAYED, find_earlier, fingerprint, requested_key
from daguerre.api.ingest import ingest_inputs
from daguerre.api.openapi import (
    CANCEL_AFTER_PARAMETER,
    IDEMPOTENCY_KEY_PARAMETER,
    PREFER_WAIT_PARAMETER,
    PREFERENCE_APPLIED_HEADER,
    RATE_LIMIT_HEADERS,
    RETRY_AFTER_HEADER,
)
from daguerre.api.waiting import requested_wait
from daguerre.blobs import BlobStore
from daguerre.dispatch import Dispatch
from daguerre.errors import ApiError
from daguerre.fetch import url_problem
from daguerre.sizing import pick_aspect_ratio
from daguerre.store.accounts import applied_limit
from daguerre.store.clock import utcnow
from daguerre.store.generations import GenerationRecord, GenerationSummary, NewGeneration, Refusal
from daguerre.store.ids import uuid7
from daguerre.validation import parse_cancel_after, parse_generation_create
from daguerre.wire import (
    OUTPUT_URL_TTL_S,
    Detail,
    ErrorBody,
    Generation,
    GenerationCreate,
    GenerationType,
    State,
    format_timestamp,
    parse_uuid,
)

router = APIRouter(prefix="/v1/generations", tags=["generations"], route_class=RequestRoute)

_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": description}
    for status, description in {
        400: "Invalid parameters",
        401: "Missing or bad API key",
        402: "Insufficient balance; nothing queued, nothing charged",
        403: "Account suspended or deactivated",
        409: "Idempotency-Key: a request with this key is still being processed",
        413: "Request body or an input image too large",
        422: "Bad media data, or an Idempotency-Key reused with a different request",
        429: "Rate limit exceeded or too many concurrent jobs",
        503: "URL ingestion unavailable",
    }.items()
}
_ERRORS[429]["headers"] = {**RETRY_AFTER_HEADER, **RATE_LIMIT_HEADERS}


def to_wire(
    record: GenerationRecord | GenerationSummary, blobs: BlobStore, request: Request | str
) -> Generation:
    """The Luma Generation for a stored record; output URLs are minted fresh on every call, for the
    address the client reached this server at (or the base URL given instead of a request). A
    completed generation whose outputs the retention policy deleted (only a purge leaves a completed
    row without output keys, see worker.sweep) has none: Luma clients rely on a completed
    Generation having an output URL, so it answers 404."""
    output = []
    if record.state == State.COMPLETED:
        if not record.output_keys:
            raise ApiError(404, Detail.GENERATION_PURGED)
        base = request if isinstance(request, str) else base_url(request)
        output = [{"url": blobs.presign_get(key, OUTPUT_URL_TTL_S, base)} for key in record.output_keys]
    # Validated from a dict (in pydantic's compiled core): measured faster than model_construct,
    # which skips validation but runs in Python (2 us against 9).
    return Generation.model_validate(
        {
            "id": record.id,
            "type": record.type,
            "state": record.state,
            "model": record.model,
            "created_at": format_timestamp(record.created_at),
            "output": output,
            "failure_reason": record.failure_reason,
            "failure_code": record.failure_code,
        }
    )


class GenerationResponse(Response):
    """JSON of a Generation, serialised once by pydantic (FastAPI would validate it again first)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        assert isinstance(content, Generation)
        return content.model_dump_json().encode()


@router.post(
    "",
    status_code=201,
    response_model=Generation,
    responses={201: {"headers": {**RATE_LIMIT_HEADERS, **PREFERENCE_APPLIED_HEADER}}, **_ERRORS},
    summary="Create a generation",
    openapi_extra={
        "parameters": [IDEMPOTENCY_KEY_PARAMETER, PREFER_WAIT_PARAMETER, CANCEL_AFTER_PARAMETER],
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/GenerationCreate"}}},
        },
    },
)
async def create_generation(request: Request) -> GenerationResponse:
    """Validate the request, store its input images and queue it; answers with state `queued`.

    Checks, in order: the key (401/403), the body (400), requests per minute (429), and then one
    transaction that counts the concurrent jobs (429), holds the price (402) and inserts the row. A
    request with input images takes an early look at the concurrent jobs and the balance before its
    images are decoded and stored (413 / 422 / 503), so a refused request stores nothing.
    Everything here is CPU-light except input images (decoded and stored in the thread pool) and the
    transaction (on SQLite shared with the other creates of the moment, on PostgreSQL one of its
    own: `Database.run`).

    Like the GET, it is a RequestRoute and authenticates in its body rather than through
    dependencies: FastAPI's per-request handler was a seventh of the cost of a create."""
    caller = await authenticate(request)
    body = await json_body(request)
    svc = services(request)
    settings, store, blobs = svc.settings, svc.store, svc.blobs
    create = parse_generation_create(body)
    wait_s = requested_wait(request)
    if create.callback_url is not None and (problem := url_problem(create.callback_url, svc.url_policy)):
        raise ApiError(
            400, Detail.CALLBACK_URL_HTTPS if problem == "https required" else Detail.CALLBACK_URL_INVALID
        )
    cancel_after = request.headers.get("cancel-after")
    deadline_s = None if cancel_after is None else parse_cancel_after(cancel_after, settings.active_job_ttl_s)
    key = requested_key(request, "generations", fingerprint(body))
    if key is not None and (earlier := await find_earlier(svc, caller.account_id, key)) is not None:
        # Nothing created, nothing counted.
        return await _answer(
            request, caller.account_id, earlier.resource_id, earlier.status_code, REPLAYED, wait_s
        )
    # Limits: the account's own, else the deployment's default; None: unlimited (no window is kept
    # and the 201 carries no X-RateLimit-* headers; no count of the account's active jobs).
    rpm = applied_limit(caller.rpm_limit, settings.default_rpm)
    decision = None if rpm is None else await svc.limiter.hit(caller.account_id, rpm)
    if decision is not None and not decision.allowed:
        raise ApiError(429, Detail.RATE_LIMITED, decision.headers())
    concurrency = applied_limit(caller.concurrency_limit, settings.default_concurrency)
    inputs = (1 if create.source is not None else 0) + len(create.image_ref or [])
    price = pricing.price(settings, create.model, inputs)
    if inputs:  # the transaction below decides; this early look only spares storing the inputs
        if concurrency is not None:
            active = await store.generations.count_active_async(caller.account_id, concurrency)
            if active >= concurrency:
                raise ApiError(429, Detail.TOO_MANY_JOBS, {"Retry-After": "60"})
        if caller.metered and (await store.accounts.get_async(caller.account_id)).available < price:
            raise ApiError(402, Detail.INSUFFICIENT_BALANCE)
    generation_id = uuid7()
    input_keys = await ingest_inputs(create, generation_id, caller.account_id, svc)
    aspect_ratio = None
    if create.type == GenerationType.IMAGE:
        aspect_ratio = create.aspect_ratio or pick_aspect_ratio(create.prompt, create.style)
    outcome = await store.generations.create_async(
        NewGeneration(
            id=generation_id,
            account_id=caller.account_id,
            request=create,
            aspect_ratio=aspect_ratio,
            input_keys=input_keys,
            max_attempts=settings.max_attempts,
            price=price,
            metered=caller.metered,
            concurrency_limit=concurrency,
            outbox=svc.dispatcher.outbox,
            idempotency=key,
            callback_url=create.callback_url,
            # Output URLs in its webhook payload are built on it (only blob keys are stored otherwise).
            callback_base_url=base_url(request) if create.callback_url is not None else None,
            deadline_at=None if deadline_s is None else utcnow() + timedelta(seconds=deadline_s),
        )
    )
    if isinstance(outcome, Refusal):
        if input_keys:
            await run_in_threadpool(_drop_inputs, blobs, generation_id, input_keys)
        if outcome == Refusal.DUPLICATE:  # a concurrent request with the same key won
            assert key is not None
            if (earlier := await find_earlier(svc, caller.account_id, key)) is not None:
                return await _answer(
                    request, caller.account_id, earlier.resource_id, earlier.status_code, REPLAYED, wait_s
                )
            raise ApiError(409, Detail.IDEMPOTENCY_KEY_BUSY)
        if outcome == Refusal.CONCURRENCY:
            raise ApiError(429, Detail.TOO_MANY_JOBS, {"Retry-After": "60"})
        raise ApiError(402, Detail.INSUFFICIENT_BALANCE)
    metrics.GENERATIONS_CREATED.labels(create.model, create.type).inc()
    if svc.dispatcher.outbox:  # committed: start its workflow (the relay retries a failure)
        svc.starts.start_soon(svc, Dispatch(generation_id, caller.account_id, create.model))
    headers = decision.headers() if decision is not None else {}
    if wait_s is None:
        return GenerationResponse(to_wire(outcome, blobs, request), status_code=201, headers=headers)
    return await _answer(request, caller.account_id, generation_id, 201, headers, wait_s)


async def _answer(
    request: Request,
    account_id: str,
    generation_id: str,
    status: int,
    headers: dict[str, str],
    wait_s: int | None,
) -> GenerationResponse:
    """The generation as it is now (a repeated Idempotency-Key's, or one just created after
    `Prefer: wait`: once it has ended, or `wait_s` seconds on)."""
    svc = services(request)
    if wait_s is not None:
        await svc.waiter.wait(generation_id, wait_s)
        headers = {**headers, "Preference-Applied": f"wait={wait_s}"}
    summary = await svc.store.generations.summary_async(generation_id, account_id)
    if summary is None:
        raise ApiError(404, Detail.GENERATION_NOT_FOUND)
    return GenerationResponse(to_wire(summary, svc.blobs, request), status_code=status, headers=headers)


def _drop_inputs(blobs: BlobStore, generation_id: str, keys: tuple[str, ...]) -> None:
    """Remove the input blobs stored for a create that was refused (reused keys are not ours)."""
    for key in keys:
        if key.startswith(f"inputs/{generation_id}/"):
            blobs.delete(key)


@router.get(
    "/{generation_id}",
    response_model=Generation,
    responses={
        401: _ERRORS[401],
        403: _ERRORS[403],
        404: {
            "model": ErrorBody,
            "description": "Generation not found, or its output was deleted after the retention period",
        },
    },
    summary="Get a generation",
    openapi_extra={
        "parameters": [
            {
                "name": "generation_id",
                "in": "path",
                "required": True,
                "schema": {"type": "string", "title": "Generation Id"},
                "description": "The generation's id (a UUID); any other text answers 404.",
            }
        ]
    },
)
async def get_generation(request: Request) -> GenerationResponse:
    """The generation's state; completed ones carry presigned output URLs valid for one hour."""
    # What polling clients call most, so FastAPI's per-request machinery is left out (RequestRoute):
    # the key is checked here rather than as a dependency, and the id is read from the matched path
    # as is (any text; parse_uuid decides). Each of them cost more than the work it did.
    caller = await authenticate(request)
    svc = services(request)
    store, blobs = svc.store, svc.blobs
    canonical_id = parse_uuid(request.path_params["generation_id"])
    summary = None
    if canonical_id is not None:
        summary = await store.generations.summary_async(canonical_id, caller.account_id)
    if summary is None:
        raise ApiError(404, Detail.GENERATION_NOT_FOUND)
    return GenerationResponse(to_wire(summary, blobs, request))


__all__ = ["GenerationCreate", "router", "to_wire"]
