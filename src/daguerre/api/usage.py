"""GET /v1/usage: the caller's generations and spend, per model, end user or day (daguerre's design).

Luma names the endpoint (per-end-user breakdowns keyed by `user_id`) but publishes no shape; this
one is in the OpenAPI document. Counts are by state; spend is what was captured, in micro-dollars.
Not counted in the requests-per-minute limit.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from daguerre.api.deps import CallerDep, services
from daguerre.api.files import JSONModelResponse
from daguerre.api.openapi import AUTH_ERRORS, errors
from daguerre.errors import ApiError
from daguerre.store.accounts import month_start
from daguerre.validation import parse_timestamp
from daguerre.wire import USAGE_GROUPS, UsageCounts, UsageGroup, UsageReport, format_timestamp

router = APIRouter(prefix="/v1/usage", tags=["usage"])
MAX_RANGE = timedelta(days=366)
_DATE_OR_DATETIME = "an ISO-8601 date or datetime"
# Replaces the parameter's `anyOf` (string or null): documented only, the route parses the text
# itself. An empty value (`?from=&to=`, as api.md §17 writes it) means the default.
_DATE_OR_DATETIME_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {"type": "string", "format": "date"},
        {"type": "string", "format": "date-time"},
        {"type": "string", "maxLength": 0},
    ]
}


@router.get(
    "",
    response_model=UsageReport,
    responses=errors(400, *AUTH_ERRORS),
    summary="Usage of the caller's account",
)
async def usage(
    request: Request,
    caller: CallerDep,
    start: Annotated[
        str | None,
        Query(
            alias="from",
            description="Inclusive; a date (its start, UTC) or a datetime; default (also when empty): "
            "the start of this month (UTC)",
            json_schema_extra=_DATE_OR_DATETIME_SCHEMA,
        ),
    ] = None,
    end: Annotated[
        str | None,
        Query(
            alias="to",
            description="Exclusive; a date (its start, UTC) or a datetime; default (also when empty): now",
            json_schema_extra=_DATE_OR_DATETIME_SCHEMA,
        ),
    ] = None,
    group_by: Annotated[str, Query(json_schema_extra={"enum": list(USAGE_GROUPS)})] = "model",
) -> JSONModelResponse:
    """Generations created in [from, to), counted by state, and the money captured for them."""
    if group_by not in USAGE_GROUPS:
        raise ApiError(400, f"group_by: must be one of {', '.join(USAGE_GROUPS)}")
    first = parse_timestamp(start, "from", _DATE_OR_DATETIME) if start else month_start()
    last = parse_timestamp(end, "to", _DATE_OR_DATETIME) if end else datetime.now(UTC) + timedelta(seconds=1)
    if last <= first:
        raise ApiError(400, "to: must be after from")
    if last - first > MAX_RANGE:
        raise ApiError(400, "to: the range may span at most 366 days")
    store = services(request).store
    rows = await store.generations.usage_async(caller.account_id, first, last, group_by)
    groups: dict[str | None, UsageGroup] = {}
    total = UsageGroup(group=None, generations=UsageCounts(), spend_micro_usd=0)
    for key, state, count, spend in rows:
        group = groups.setdefault(key, UsageGroup(group=key, generations=UsageCounts(), spend_micro_usd=0))
        for target in (group, total):
            setattr(target.generations, state, getattr(target.generations, state) + count)
            target.generations.total += count
            target.spend_micro_usd += spend
    report = UsageReport.model_validate(
        {
            "from": format_timestamp(first),
            "to": format_timestamp(last),
            "group_by": group_by,
            "data": list(groups.values()),
            "total": total,
        }
    )
    return JSONModelResponse(report)
