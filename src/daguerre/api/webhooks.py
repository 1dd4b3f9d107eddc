"""Signed webhooks (an extension): when a generation with a callback URL ends, the Generation JSON is
POSTed there, signed per the Standard Webhooks specification.

    webhook-id: <the delivery's id, the same on every attempt>
    webhook-timestamp: <seconds since the epoch, of this attempt>
    webhook-signature: v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}", keyed by the account's
                       secret: the base64 after `whsec_`, decoded>

The notifications wait in the store's outbox (store.webhooks), written in the transaction that ended
the generation. Every API process runs `deliver`, which claims due deliveries, POSTs them under the
URL rules of image fetching (https unless `url_allow_http`; no private addresses unless allowed; the
connection goes to the address that was checked) and records each attempt. A 2xx answer delivers
it; anything else (another status, a timeout, a refused address) is retried after
`webhook_retry_base_s` × 2^(attempt-1), capped at an hour, with ±20 % jitter, until
`webhook_give_up_s` (24 h) after the generation ended; then it is failed. Nothing here runs in a
worker: a slow receiver never holds up an engine. `GET /v1/generations/{id}/webhooks` shows the
account its deliveries and their attempts.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import random
import time
from datetime import datetime, timedelta
from typing import Any

from fastapi import APIRouter, Request

from daguerre import metrics
from daguerre.api.deps import CallerDep, Services, services
from daguerre.api.files import JSONModelResponse
from daguerre.api.generations import to_wire
from daguerre.api.openapi import AUTH_ERRORS, errors
from daguerre.errors import ApiError
from daguerre.fetch import post_json
from daguerre.store.clock import utcnow
from daguerre.store.webhooks import SECRET_PREFIX, Delivery
from daguerre.wire import Detail, WebhookDeliveries, WebhookDelivery, format_timestamp, parse_uuid

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/generations", tags=["generations"])

LEASE_MARGIN_S = 5.0
"""A claimed delivery comes due again `webhook_timeout_s` + this after its claim if its deliverer
vanished mid-attempt (a killed API process, say)."""
IDLE_S = 1.0
"""How often an idle deliverer looks for due deliveries."""
MAX_DELAY_S = 3600.0
USER_AGENT = "daguerre-webhooks/1"


def sign(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` header value (Standard Webhooks, v1)."""
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    content = f"{message_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, content, hashlib.sha256).digest()).decode()


def retry_delay_s(base_s: float, attempts: int) -> float:
    """After the `attempts`-th failed attempt: base × 2^(attempts-1), at most an hour, ±20 %."""
    delay = min(base_s * 2.0 ** (attempts - 1), MAX_DELAY_S)
    return float(delay * random.uniform(0.8, 1.2))


async def deliver(svc: Services) -> None:
    """Deliver what is due, for the life of the API process."""
    while True:
        pause = IDLE_S
        try:
            if await deliver_due(svc) == 0:
                soonest = await asyncio.to_thread(svc.store.webhooks.next_due)
                if soonest is not None:  # sleep until it is due, but look again within IDLE_S
                    pause = min(IDLE_S, max(0.01, (soonest - utcnow()).total_seconds()))
            else:
                pause = 0.0
        except Exception:
            log.exception("delivering webhooks failed")
        await asyncio.sleep(pause)


async def deliver_due(svc: Services) -> int:
    """One pass: claim the due deliveries and make one attempt of each; how many."""
    lease_s = svc.settings.webhook_timeout_s + LEASE_MARGIN_S
    due = await asyncio.to_thread(svc.store.webhooks.claim_due, lease_s)
    await asyncio.gather(*(_attempt(svc, delivery) for delivery in due))
    return len(due)


async def _attempt(svc: Services, delivery: Delivery) -> None:
    settings, store = svc.settings, svc.store
    summary = await store.generations.summary_async(delivery.generation_id, delivery.account_id)
    if summary is None:  # cannot happen (rows are never deleted); give it up rather than retry
        await asyncio.to_thread(
            store.webhooks.record, delivery, _entry(None, "generation gone"), give_up=True
        )
        return
    public = settings.public_url or delivery.base_url or f"http://{settings.host}:{settings.port}"
    body = to_wire(summary, svc.blobs, public.rstrip("/")).model_dump_json().encode()
    secret = await asyncio.to_thread(store.webhooks.secret, delivery.account_id)
    timestamp = int(time.time())
    headers = {
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        "webhook-id": delivery.id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secret, delivery.id, timestamp, body),
    }
    posted = await post_json(delivery.url, body, headers, svc.url_policy, settings.webhook_timeout_s)
    entry = _entry(posted.status, posted.error)
    if posted.status is not None and 200 <= posted.status < 300:
        await asyncio.to_thread(store.webhooks.record, delivery, entry, delivered=True)
        metrics.WEBHOOK_ATTEMPTS.labels("delivered").inc()
        log.info("webhook %s of %s delivered (%d)", delivery.id, delivery.generation_id, posted.status)
        return
    delay = retry_delay_s(settings.webhook_retry_base_s, delivery.attempts + 1)
    next_at = utcnow() + timedelta(seconds=delay)
    give_up = next_at - delivery.created_at > timedelta(seconds=settings.webhook_give_up_s)
    await asyncio.to_thread(
        store.webhooks.record, delivery, entry, next_attempt_at=None if give_up else next_at, give_up=give_up
    )
    metrics.WEBHOOK_ATTEMPTS.labels("given_up" if give_up else "failed").inc()
    log.warning(
        "webhook %s of %s: attempt %d failed (%s)%s",
        delivery.id,
        delivery.generation_id,
        delivery.attempts + 1,
        posted.error or f"HTTP {posted.status}",
        "; given up" if give_up else f"; again in {delay:.1f} s",
    )


def _entry(status: int | None, error: str | None) -> dict[str, Any]:
    return {"at": format_timestamp(utcnow()), "status": status, "error": error}


@router.get(
    "/{generation_id}/webhooks",
    response_model=WebhookDeliveries,
    responses=errors(*AUTH_ERRORS, 404, descriptions={404: Detail.GENERATION_NOT_FOUND}),
    summary="A generation's webhook deliveries (daguerre extension)",
)
async def generation_webhooks(generation_id: str, request: Request, caller: CallerDep) -> JSONModelResponse:
    """Each notification owed for the generation: its state, attempts and their outcomes."""
    svc = services(request)
    canonical = parse_uuid(generation_id)
    summary = (
        None if canonical is None else await svc.store.generations.summary_async(canonical, caller.account_id)
    )
    if summary is None or canonical is None:
        raise ApiError(404, Detail.GENERATION_NOT_FOUND)
    deliveries = await asyncio.to_thread(svc.store.webhooks.for_generation, canonical, caller.account_id)
    return JSONModelResponse(
        WebhookDeliveries(
            data=[
                WebhookDelivery.model_validate(
                    {
                        "id": delivery.id,
                        "url": delivery.url,
                        "state": delivery.state,
                        "attempts": delivery.attempt_log,
                        "next_attempt_at": _stamp(delivery.next_attempt_at),
                        "delivered_at": _stamp(delivery.delivered_at),
                        "created_at": format_timestamp(delivery.created_at),
                    }
                )
                for delivery in deliveries
            ]
        )
    )


def _stamp(moment: datetime | None) -> str | None:
    return format_timestamp(moment) if moment is not None else None
