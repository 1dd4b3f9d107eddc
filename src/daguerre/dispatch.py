"""Handing a committed generation to whatever executes it: one interface, two implementations.

    dispatcher = open_dispatcher(settings)
    if await dispatcher.dispatch(Dispatch(generation_id, account_id, model)):
        ...  # started (or already started): the outbox row may be cleared
    await dispatcher.close()

`TableQueue` (execution = "embedded"): the generations table is the queue and daguerre's workers
claim its rows; there is nothing to hand over. `TemporalDispatcher` (execution = "temporal"): starts
the workflow `Generation` by name (so this module imports no worker code), with the generation id
as the workflow id: a second start of the same generation is refused by Temporal and counts as
started. The API calls `dispatch` after the create's commit and never before; the relay
(api.relay) calls it again for rows whose start was lost.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from daguerre.errors import DaguerreError
from daguerre.settings import Settings
from daguerre.wire import Progress

if TYPE_CHECKING:
    from temporalio.client import Client

log = logging.getLogger(__name__)

WORKFLOW = "Generation"
"""The workflow's registered name (worker.workflow.Generation)."""


@dataclass(frozen=True)
class Dispatch:
    generation_id: str
    account_id: str
    model: str


class Dispatcher(Protocol):
    outbox: bool
    """Whether creates write the outbox column and a relay re-dispatches what it still holds."""

    async def dispatch(self, job: Dispatch) -> bool:
        """Start the generation; True when it is started (now or before). Never raises."""
        ...

    async def cancel(self, generation_id: str) -> None:
        """Stop the run of a generation whose row was just cancelled. Never raises."""
        ...

    async def progress(self, generation_id: str) -> Progress | None:
        """The engine's progress (with its latest preview) where the executor knows it (None: read
        the row's). Never raises."""
        ...

    async def close(self) -> None: ...


def main_task_queue(settings: Settings) -> str:
    """Where workflows, prepare, finalize and fail run."""
    return settings.temporal_task_queue


def engine_task_queue(settings: Settings, model: str) -> str:
    """Where the generate activities of one model run: only workers that serve it poll there."""
    return f"{settings.temporal_task_queue}.engine.{model}"


def workflow_input(settings: Settings, job: Dispatch) -> dict[str, Any]:
    """The workflow's one argument, as plain data (worker.workflow.GenerationJob): the deployment's
    limits travel with the workflow, which cannot read settings."""
    return {
        "generation_id": job.generation_id,
        "model": job.model,
        "engine_task_queue": engine_task_queue(settings, job.model),
        "max_attempts": settings.max_attempts,
        "active_job_ttl_s": settings.active_job_ttl_s,
        "heartbeat_timeout_s": settings.temporal_heartbeat_timeout_s,
    }


class TableQueue:
    """Embedded execution: a committed row is already queued."""

    outbox = False

    async def dispatch(self, job: Dispatch) -> bool:
        return True

    async def cancel(self, generation_id: str) -> None:
        pass  # the worker running it sees its lease gone at the next engine step

    async def progress(self, generation_id: str) -> Progress | None:
        return None  # embedded workers write it on the row

    async def close(self) -> None:
        pass


class TemporalSettingsError(DaguerreError, RuntimeError):
    """A file the Temporal connection settings name cannot be read (now: the settings checked it
    when they loaded). A RuntimeError, as a failed connection is, for the callers that expect one."""


async def connect_temporal(settings: Settings) -> Client:
    """A client of the configured Temporal cluster: plain, over TLS (the system's CAs or
    `temporal_tls_ca`, a client certificate for mutual TLS), with an API key (Temporal Cloud)."""
    from temporalio.client import Client
    from temporalio.service import TLSConfig

    tls: TLSConfig | bool = False
    if settings.temporal_uses_tls:
        tls = TLSConfig(
            server_root_ca_cert=_read_pem(settings.temporal_tls_ca, "temporal_tls_ca"),
            client_cert=_read_pem(settings.temporal_tls_cert, "temporal_tls_cert"),
            client_private_key=_read_pem(settings.temporal_tls_key, "temporal_tls_key"),
            domain=settings.temporal_tls_server_name,
        )
    api_key = settings.temporal_api_key
    return await Client.connect(
        settings.temporal_address,
        namespace=settings.temporal_namespace,
        tls=tls,
        api_key=None if api_key is None else api_key.get_secret_value(),
    )


def _read_pem(path: Path | None, setting: str) -> bytes | None:
    if path is None:
        return None
    try:
        return path.read_bytes()
    except OSError as exc:
        raise TemporalSettingsError(f"{setting}: cannot read {path}: {exc.strerror}") from None


class TemporalDispatcher:
    """Starts one workflow per generation on the user's Temporal cluster; connects on first use
    (and again after a failed connect)."""

    outbox = True
    START_TIMEOUT_S = 5.0

    def __init__(self, settings: Settings, client: Client | None = None) -> None:
        self.settings = settings
        self._client = client

    async def client(self) -> Client:
        if self._client is None:  # two racing first uses connect twice, harmlessly
            self._client = await connect_temporal(self.settings)
        return self._client

    async def dispatch(self, job: Dispatch) -> bool:
        from temporalio.common import Priority, WorkflowIDReusePolicy
        from temporalio.exceptions import WorkflowAlreadyStartedError

        try:
            client = await asyncio.wait_for(self.client(), self.START_TIMEOUT_S)
            await client.start_workflow(
                WORKFLOW,
                workflow_input(self.settings, job),
                id=job.generation_id,
                task_queue=main_task_queue(self.settings),
                # Never a second run, even after the first one closed.
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                # Activities inherit it: each account's jobs are one fairness key (server setting
                # matching.enableFairness; without it the key is ignored).
                priority=Priority(fairness_key=job.account_id[:64]),
                rpc_timeout=timedelta(seconds=self.START_TIMEOUT_S),
            )
        except WorkflowAlreadyStartedError:
            return True
        except Exception as exc:  # the relay tries again
            log.warning(
                "starting the workflow of %s failed: %s", job.generation_id, exc or type(exc).__name__
            )
            return False
        return True

    async def cancel(self, generation_id: str) -> None:
        """Cancel the workflow: Temporal cancels its running `generate`, which stops at its next
        heartbeat (worker.temporal). The row is already failed, so nothing it might still finish
        is written."""
        from temporalio.service import RPCError

        try:
            client = await asyncio.wait_for(self.client(), self.START_TIMEOUT_S)
            await client.get_workflow_handle(generation_id).cancel(
                rpc_timeout=timedelta(seconds=self.START_TIMEOUT_S)
            )
        except (RPCError, TimeoutError, RuntimeError) as exc:  # not found, already closed, unreachable
            log.info("cancelling the workflow of %s: %s", generation_id, exc or type(exc).__name__)

    async def progress(self, generation_id: str) -> Progress | None:
        """The last heartbeat of the running `generate` (worker.temporal beats (step, total) and
        then (preview step, preview JPEG)), from the workflow's description: engine-only workers
        have no database to write it to."""
        from temporalio.service import RPCError

        try:
            client = await asyncio.wait_for(self.client(), self.START_TIMEOUT_S)
            described = await client.get_workflow_handle(generation_id).describe(
                rpc_timeout=timedelta(seconds=self.START_TIMEOUT_S)
            )
            for pending in described.raw_description.pending_activities:
                if pending.activity_type.name == "generate" and pending.heartbeat_details.payloads:
                    details = await client.data_converter.decode(pending.heartbeat_details.payloads)
                    step, total, *preview = details
                    if len(preview) == 2 and isinstance(preview[1], bytes):
                        return Progress(int(step), int(total), int(preview[0]), preview[1])
                    return Progress(int(step), int(total))
        except (RPCError, TimeoutError, RuntimeError, ValueError, TypeError) as exc:
            log.debug("the progress of %s: %s", generation_id, exc or type(exc).__name__)
        return None

    async def close(self) -> None:
        self._client = None  # the client holds no resources that need closing


def open_dispatcher(settings: Settings) -> Dispatcher:
    if settings.execution == "temporal":
        return TemporalDispatcher(settings)
    return TableQueue()
