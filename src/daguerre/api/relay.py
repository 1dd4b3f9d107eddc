"""The hand-off of committed generations to the executor (execution = "temporal").

The create transaction writes the row, the hold and the outbox mark (`outbox_at`) together; after
the commit the API starts the workflow in the background (`Starts.start_soon`: the 201 does not
wait for Temporal, it is correct once the row is committed) and clears the mark. An API process
that dies between the commit and the start, or a Temporal that is briefly unreachable, leaves the
mark: the relay, a task in every API process, starts every row still marked a few seconds after its
create. Starting twice is harmless (the workflow id is the generation id), so API processes need
not agree on who relays what. Nothing is started for a row that was not committed.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from typing import TYPE_CHECKING

from daguerre.dispatch import Dispatch
from daguerre.store.clock import utcnow

if TYPE_CHECKING:
    from daguerre.api.deps import Services

log = logging.getLogger(__name__)

RELAY_AFTER_S = 5.0
"""A row still in the outbox this long after its create is started by the relay."""
RELAY_INTERVAL_S = 2.0
RELAY_BATCH = 100
MAX_STARTING = 256
"""Workflow starts in flight per API process: past it a create leaves its start to the relay, so a
slow Temporal never piles up tasks in memory."""


class Starts:
    """The workflow starts of committed creates, run as tasks of the API's event loop."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()

    def start_soon(self, svc: Services, job: Dispatch) -> None:
        if len(self._tasks) >= MAX_STARTING:
            return  # the row stays in the outbox: the relay starts it
        task = asyncio.get_running_loop().create_task(dispatch_committed(svc, job))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self, timeout_s: float) -> None:
        """Wait up to `timeout_s` for the starts in flight (shutdown; tests)."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout_s)


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
