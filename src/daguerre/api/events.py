"""`GET /v1/generations/{id}/events`: a generation followed live, as Server-Sent Events (an
extension; sse-starlette).

    event: generation   the Generation, first (as it is when the client connects) and at every
                        change of state; the last one is the ended Generation, then the stream ends
    event: queue        {"position": n} while it waits for a worker (1: next)
    event: progress     {"step": n, "total": m} while an engine runs it, at most PROGRESS_EVERY_S
    event: preview      {"step": n, "total": m, "media_type": "image/jpeg", "data": base64} the
                        picture so far, small and rough, about every `preview_every_s` of a job
                        that runs longer than that (worker.previews); a client that connects
                        mid-run gets the latest one at once

Every event has an `id`; a client that reconnects (with `Last-Event-ID`, as browsers' EventSource
does) gets the generation as it is at once, like any new stream. Auth and tenancy as the GET.

The stream reads the generation's row every READ_EVERY_S while it runs (one indexed read by id; an
embedded worker records its progress on the row at most every quarter second, and each preview),
and in Temporal mode the running engine's last heartbeat from the workflow's description
(engine-only workers have no database). A preview's picture is read only when its step changes.
Comments keep idle connections open every PING_S.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from sse_starlette import EventSourceResponse, ServerSentEvent

from daguerre.api.deps import CallerDep, Services, services
from daguerre.api.generations import to_wire
from daguerre.api.openapi import AUTH_ERRORS, errors
from daguerre.errors import ApiError
from daguerre.store.generations import GenerationSummary
from daguerre.wire import Detail, State, parse_uuid

router = APIRouter(prefix="/v1/generations", tags=["generations"])

READ_EVERY_S = 0.1
PROGRESS_EVERY_S = 0.1
"""At most ten progress events a second."""
REMOTE_PROGRESS_EVERY_S = 0.5
"""How often the running engine's heartbeat is asked of Temporal (which receives one at most every
0.8 x the heartbeat timeout)."""
QUEUE_EVERY_S = 1.0
PING_S = 15
_ENDED = (State.COMPLETED, State.FAILED)


# One event of the stream (the shape schemathesis and OpenAPI 3.2's `itemSchema` describe): `data`
# is JSON, a Generation for `generation`, {"position"} for `queue`, {"step", "total"} for `progress`,
# {"step", "total", "media_type", "data"} for `preview` (`data` base64, as in an ImageRef).
_EVENT_SCHEMA = {
    "type": "object",
    "required": ["event", "data", "id"],
    "properties": {
        "event": {"type": "string", "enum": ["generation", "queue", "progress", "preview"]},
        "data": {"type": "string", "contentMediaType": "application/json"},
        "id": {"type": "string"},
    },
}


@router.get(
    "/{generation_id}/events",
    responses={
        200: {
            "content": {"text/event-stream": {"schema": _EVENT_SCHEMA}},
            "description": (
                "Server-Sent Events: generation, queue, progress, preview; ends after the generation ends"
            ),
        },
        **errors(*AUTH_ERRORS, 404, descriptions={404: Detail.GENERATION_NOT_FOUND}),
    },
    response_class=EventSourceResponse,
    summary="Follow a generation live (daguerre extension)",
)
async def generation_events(generation_id: str, request: Request, caller: CallerDep) -> EventSourceResponse:
    """The generation now, then its queue position, engine progress, previews of the picture and
    changes of state as they happen; the stream ends once it has completed or failed."""
    svc = services(request)
    canonical = parse_uuid(generation_id)
    summary = (
        None if canonical is None else await svc.store.generations.summary_async(canonical, caller.account_id)
    )
    if summary is None:
        raise ApiError(404, Detail.GENERATION_NOT_FOUND)
    return EventSourceResponse(
        _events(request, svc, summary, caller.account_id), ping=PING_S, headers={"Cache-Control": "no-store"}
    )


async def _events(
    request: Request, svc: Services, summary: GenerationSummary, account_id: str
) -> AsyncIterator[ServerSentEvent]:
    sequence = 0

    def event(name: str, data: Any) -> ServerSentEvent:
        nonlocal sequence
        sequence += 1
        return ServerSentEvent(data=json.dumps(data, separators=(",", ":")), event=name, id=str(sequence))

    def shown(current: GenerationSummary) -> ServerSentEvent:
        return event("generation", to_wire(current, svc.blobs, request).model_dump(mode="json"))

    yield shown(summary)
    state = summary.state
    last_position: int | None = None
    last_progress: tuple[int, int] | None = None
    last_preview: int | None = None
    loop = asyncio.get_running_loop()
    next_queue_check = next_progress = 0.0
    generations = svc.store.generations
    while state not in _ENDED:
        await asyncio.sleep(READ_EVERY_S)
        if await request.is_disconnected():
            return
        current = await generations.summary_async(summary.id, account_id)
        if current is None:  # deleted under us (it cannot be, today): nothing more to say
            return
        if current.state != state:
            state = current.state
            yield shown(current)
            continue
        now = loop.time()
        if state == State.QUEUED and now >= next_queue_check:
            next_queue_check = now + QUEUE_EVERY_S
            position = await asyncio.to_thread(generations.queue_position, current.id, current.created_at)
            if position != last_position:
                last_position = position
                yield event("queue", {"position": position})
        elif state == State.PROCESSING and now >= next_progress:
            next_progress = now + (REMOTE_PROGRESS_EVERY_S if svc.dispatcher.outbox else PROGRESS_EVERY_S)
            progress = await svc.dispatcher.progress(current.id) or await asyncio.to_thread(
                generations.progress, current.id
            )
            if progress is None:
                continue
            if last_progress is not None and progress.step < last_progress[0]:
                last_preview = None  # another attempt started over: its previews are new
            if (progress.step, progress.total) != last_progress:
                last_progress = progress.step, progress.total
                yield event("progress", {"step": progress.step, "total": progress.total})
            if progress.preview_step is None or progress.preview_step == last_preview:
                continue
            if progress.preview is not None:
                preview: tuple[int, bytes] | None = (progress.preview_step, progress.preview)
            else:  # read with its own step: a newer one may have come since
                preview = await asyncio.to_thread(generations.preview, current.id)
            if preview is not None:  # None: the job ended in between
                last_preview = preview[0]
                yield event(
                    "preview",
                    {
                        "step": preview[0],
                        "total": progress.total,
                        "media_type": "image/jpeg",
                        "data": base64.b64encode(preview[1]).decode("ascii"),
                    },
                )
