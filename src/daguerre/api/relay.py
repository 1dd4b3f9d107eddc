"""The hand-off of committed generations to the executor (execution = "temporal").

The create transaction writes the row, the hold and the outbox mark (`outbox_at`) together; after
the commit the API starts the workflow (`dispatch_committed`) and clears the mark. An API process
that dies between the commit and the start, or a Temporal that is briefly unreachable, leaves the
mark: the relay, a task in every API process, starts every row still marked a few seconds after its
create. Starting twice is harmless (the workflow id is the generation id), so API processes need
not agree on who relays what. Nothing is started for a row that was not committed.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from daguerre.api.deps import Services
from daguerre.dispatch import Dispatch
from daguerre.store.clock import utcnow

log = logging.getLogger(__name__)

RELAY_AFTER_S = 5.0
"""A row still in the outbox this long after its create is started by the relay."""
RELAY_INTERVAL_S = 2.0
RELAY_BATCH = 100


async def dispatch_committed(svc: Services, job: Dispatch) -> None:
    """Start a just-committed generation; never raises (the relay retries whatever this missed)."""
    try:
        if await svc.dispatcher.dispatch(job):
            await asyncio.to_thread(svc.store.generations.mark_dispatched, [job.generation_id])
    except Exception:
        log.exception("dispatching %s failed; the relay will retry", job.generation_id)


async def relay_once(svc: Services, after_s: float = RELAY_AFTER_S) -> int:
    """Start the rows still in the outbox `after_s` after their create; how many were started."""
    before = utcnow() - timedelta(seconds=after_s)
    rows = await asyncio.to_thread(svc.store.generations.undispatched, before, RELAY_BATCH)
    started: list[str] = []
    for generation_id, account_id, model in rows:
        if await svc.dispatcher.dispatch(Dispatch(generation_id, account_id, model)):
            started.append(generation_id)
    if started:
        await asyncio.to_thread(svc.store.generations.mark_dispatched, started)
        log.info("relay: started %d generation(s) whose start was lost", len(started))
    return len(started)


async def relay(svc: Services) -> None:
    """`relay_once` every RELAY_INTERVAL_S seconds, for the life of the API process."""
    while True:
        try:
            await relay_once(svc)
        except Exception:
            log.exception("the outbox relay failed")
        await asyncio.sleep(RELAY_INTERVAL_S)
