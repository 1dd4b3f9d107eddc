"""GET /v1/usage: the caller's generations and spend, per model, end user or day (daguerre's design).

Luma names the endpoint (per-end-user breakdowns keyed by `user_id`) but publishes no shape; this
one is in the OpenAPI document. Counts are by state; spend is what was captured, in micro-dollars.
Not counted in the requests-per-minute limit.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Query, Request

from daguerre.api.deps import CallerDep, read, services
from daguerre.api.files import JSONModelResponse
from daguerre.errors import ApiError
from daguerre.store.accounts import month_start
from daguerre.validation import parse_timestamp
from daguerre.wire import USAGE_GROUPS, UsageCounts, UsageGroup, UsageReport, format_timestamp

router = APIRouter(prefix="/v1/usage", tags=["usage"])
MAX_RANGE = timedelta(days=366)
_DATE_OR_DATETIME = "an ISO-8601 date or datetime"


@router.get("", response_model=UsageReport, summary="Usage of the caller's account")
async def usage(
    request: Request,
    caller: CallerDep,
    start: Annotated[
        str | None, Query(alias="from", description="Inclusive; default: start of this month (UTC)")
    ] = None,
    end: Annotated[str | None, Query(alias="to", description="Exclusive; default: now")] = None,
    group_by: Annotated[str, Query(description="model, user_id or day")] = "model",
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
    rows = await read(store, store.generations.usage, caller.account_id, first, last, group_by)
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
