"""Job control beyond Luma (spec §20), none of it ever called by the official SDK.

`GET /v1/generations`: the caller's generations page by page, newest first, with an opaque keyset
cursor (api.cursors): a page never repeats or skips a generation however many are created while a
client pages through. Completed items carry freshly presigned output URLs, as a GET does;
generations whose outputs the retention policy deleted are left out (a GET answers 404 for them).

`POST /v1/generations/{id}/cancel`: a queued or processing generation fails at once with
`generation_failed` "Cancelled by request" and its hold is released (one guarded UPDATE); its run
stops at the next engine step (embedded: the worker's lease check; Temporal: the workflow is
cancelled, and the generate activity with it at its next heartbeat). A finished one is answered as
it is. Unknown and other accounts' ids are 404.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from starlette.concurrency import run_in_threadpool

from daguerre.api.cursors import decode_cursor, encode_cursor
from daguerre.api.deps import CallerDep, services
from daguerre.api.files import JSONModelResponse
from daguerre.api.generations import GenerationResponse, to_wire
from daguerre.api.openapi import AUTH_ERRORS, errors
from daguerre.errors import ApiError
from daguerre.wire import (
    GENERATION_LIST_DEFAULT,
    GENERATION_LIST_MAX,
    MODELS,
    USER_ID_MAX_CHARS,
    Detail,
    Generation,
    GenerationList,
    GenerationType,
    Reason,
    State,
    parse_uuid,
)

router = APIRouter(prefix="/v1/generations", tags=["generations"])


def _one_of(name: str, value: str | None, allowed: list[str]) -> str | None:
    if value is not None and value not in allowed:
        raise ApiError(400, f"{name}: must be one of {', '.join(allowed)}")
    return value


@router.get(
    "",
    response_model=GenerationList,
    responses=errors(400, *AUTH_ERRORS),
    summary="List generations (daguerre extension)",
)
def list_generations(
    request: Request,
    caller: CallerDep,
    # Documented only: the route checks the values itself, with its own detail strings.
    limit: Annotated[
        int | None,
        Query(
            description=f"Page size; default {GENERATION_LIST_DEFAULT}",
            json_schema_extra={"minimum": 1, "maximum": GENERATION_LIST_MAX},
        ),
    ] = None,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
    state: Annotated[str | None, Query(json_schema_extra={"enum": [s.value for s in State]})] = None,
    model: Annotated[str | None, Query(json_schema_extra={"enum": list(MODELS)})] = None,
    kind: Annotated[
        str | None, Query(alias="type", json_schema_extra={"enum": [t.value for t in GenerationType]})
    ] = None,
    user_id: Annotated[
        str | None,
        Query(
            description="Only this end user's generations",
            json_schema_extra={"minLength": 1, "maxLength": USER_ID_MAX_CHARS},
        ),
    ] = None,
) -> JSONModelResponse:
    """The caller's generations, newest first; completed ones with fresh presigned output URLs."""
    size = GENERATION_LIST_DEFAULT if limit is None else limit
    if not 1 <= size <= GENERATION_LIST_MAX:
        raise ApiError(400, f"limit: must be between 1 and {GENERATION_LIST_MAX}")
    _one_of("state", state, [s.value for s in State])
    _one_of("model", model, list(MODELS))
    _one_of("type", kind, [t.value for t in GenerationType])
    if user_id is not None and not 1 <= len(user_id) <= USER_ID_MAX_CHARS:
        raise ApiError(400, f"user_id: must be 1 to {USER_ID_MAX_CHARS} characters")
    svc = services(request)
    page = svc.store.generations.page(
        caller.account_id,
        size,
        decode_cursor(cursor) if cursor else None,
        state=State(state) if state else None,
        model=model,
        type=GenerationType(kind) if kind else None,
        user_id=user_id,
    )
    last = page.generations[-1] if page.has_more and page.generations else None
    return JSONModelResponse(
        GenerationList(
            data=[to_wire(summary, svc.blobs, request) for summary in page.generations],
            has_more=page.has_more,
            next_cursor=encode_cursor(last.created_at, last.id) if last is not None else None,
        )
    )


@router.post(
    "/{generation_id}/cancel",
    response_model=Generation,
    responses=errors(*AUTH_ERRORS, 404, descriptions={404: "Generation not found"}),
    summary="Cancel a generation (daguerre extension)",
)
async def cancel_generation(generation_id: str, request: Request, caller: CallerDep) -> GenerationResponse:
    """Stop a queued or processing generation: it fails with `generation_failed`, "Cancelled by
    request", and is not charged. A finished generation is answered unchanged."""
    svc = services(request)
    generations = svc.store.generations
    canonical = parse_uuid(generation_id)
    if canonical is not None and await run_in_threadpool(
        generations.cancel, canonical, caller.account_id, Reason.CANCELLED
    ):
        await svc.dispatcher.cancel(canonical)
    summary = None if canonical is None else await generations.summary_async(canonical, caller.account_id)
    if summary is None:
        raise ApiError(404, Detail.GENERATION_NOT_FOUND)
    return GenerationResponse(to_wire(summary, svc.blobs, request))
