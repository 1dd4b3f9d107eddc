"""Scale-out execution: the stages as Temporal activities, and the worker process that runs them.

    runner = TemporalRunner(settings, store, blobs)              # main queue and every model's engine
    runner = TemporalRunner(settings, None, blobs, models=["uni-1"], engine_only=True)
    await runner.run(stop)                                        # until `stop` is set

Activities (names are what worker.workflow calls):

* `prepare(generation_id)`: takes the row with a new fencing token (GenerationStore.start) and runs
  the checks (stages.prepare); answers the EngineRequest as plain data, or None when the row is
  already decided or the checks failed it.
* `generate(request)`: the engine (stages.generate), on the model's own task queue; needs no
  database. It heartbeats while the model loads and after every step (the step and the total as
  details), and stops at the next step once Temporal cancels it.
* `finalize(request, output_key)`: the output check and the guarded completion (stages.finalize):
  a superseded token changes nothing and charges nothing.
* `fail(generation_id, token, code, reason)`: the guarded failure, when generate failed for good.

JobFailure in prepare and finalize fails the row there; in generate it becomes a non-retryable
ApplicationError carrying (code, reason) for the workflow (see worker.workflow.failure_of),
Transient a retryable one, anything else a retryable error up to `max_attempts`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import dataclasses
import logging
import os
import socket
import threading
import time
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from temporalio import activity
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.exceptions import ApplicationError, CancelledError
from temporalio.service import RPCError, RPCStatusCode
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from daguerre.blobs import BlobStore
from daguerre.dispatch import connect_temporal, engine_task_queue, main_task_queue
from daguerre.engine import ModelRegistry, load_models_file, set_engine_threads
from daguerre.errors import JobFailure, Transient
from daguerre.moderation import ModerationUnavailable, Moderator
from daguerre.settings import Settings
from daguerre.store import Store
from daguerre.store.clock import utcnow
from daguerre.wire import FailureCode
from daguerre.worker.stages import EngineRequest, Generated, Prepared, StageContext
from daguerre.worker.stages import finalize as finalize_stage
from daguerre.worker.stages import generate as generate_stage
from daguerre.worker.stages import prepare as prepare_stage
from daguerre.worker.sweep import Sweeper
from daguerre.worker.threads import HostWorkers, ThreadBudget
from daguerre.worker.workflow import JOB_FAILURE, TRANSIENT, Generation

log = logging.getLogger(__name__)


def request_data(request: EngineRequest) -> dict[str, Any]:
    return dataclasses.asdict(request)


def request_from(data: dict[str, Any]) -> EngineRequest:
    return EngineRequest(**{**data, "input_keys": tuple(data["input_keys"])})


class Activities:
    """The activities of one worker process, over its StageContext (store None on engine-only
    workers: they run `generate` alone)."""

    def __init__(self, ctx: StageContext, owner: str, threads: ThreadBudget | None = None) -> None:
        self.ctx = ctx
        self.owner = owner
        self.threads = threads
        """Sizes the engine's CPU threads before each generate (None: torch's own default)."""

    @property
    def store(self) -> Store:
        assert self.ctx.store is not None, "this activity needs the database"
        return self.ctx.store

    @activity.defn(name="prepare")
    def prepare(self, generation_id: str) -> dict[str, Any] | None:
        settings = self.ctx.settings
        # The lease outlives the run: Temporal, not the lease, detects dead workers; the reaper
        # still fails a row that stays active past the TTL.
        record = self.store.generations.start(generation_id, self.owner, settings.active_job_ttl_s)
        if record is None:
            log.info("%s is already decided", generation_id)
            return None
        assert record.lease_token is not None
        token = record.lease_token
        log.info("%s started %s (attempt %d)", self.owner, generation_id, record.attempts)
        try:
            prepared = prepare_stage(self.ctx, record, token)
        except JobFailure as failure:
            self._fail(generation_id, token, failure.code, failure.reason)
            return None
        return request_data(prepared.request)

    @activity.defn(name="generate")
    def generate(self, data: dict[str, Any]) -> str:
        request = request_from(data)
        registry = self.ctx.registry
        assert registry is not None, "generate needs an engine"
        try:
            with _Heartbeats(self.ctx.settings.temporal_heartbeat_timeout_s / 4) as beats:
                registry.engine(request.model)  # loaded once per process, heartbeating meanwhile
                if self.threads is not None:
                    set_engine_threads(self.threads.threads())

                def on_step(step: int, total: int, preview: bytes | None) -> None:
                    beats.step(step, total, preview)
                    activity.heartbeat(*beats.details)
                    if activity.is_cancelled():  # the workflow was cancelled, or this worker stops
                        raise CancelledError(f"{request.generation_id} cancelled")

                generated = generate_stage(self.ctx, Prepared(request), on_step)
        except JobFailure as failure:
            raise ApplicationError(
                failure.reason,
                failure.code.value,
                failure.reason,
                type=TRANSIENT if isinstance(failure, Transient) else JOB_FAILURE,
                non_retryable=not isinstance(failure, Transient),
            ) from None
        return generated.output_key

    @activity.defn(name="finalize")
    def finalize(self, data: dict[str, Any], output_key: str) -> str:
        request = request_from(data)
        try:
            completed = finalize_stage(self.ctx, request, Generated(output_key))
        except JobFailure as failure:
            return (
                "failed"
                if self._fail(request.generation_id, request.token, failure.code, failure.reason)
                else "superseded"
            )
        if not completed:
            log.warning(
                "%s: the attempt %s was superseded; result dropped", request.generation_id, request.token
            )
            return "superseded"
        log.info("%s completed %s", self.owner, request.generation_id)
        return "completed"

    @activity.defn(name="fail")
    def fail(self, generation_id: str, token: str, code: str, reason: str) -> bool:
        return self._fail(generation_id, token, FailureCode(code), reason)

    def _fail(self, generation_id: str, token: str, code: FailureCode, reason: str) -> bool:
        failed = self.store.generations.fail(generation_id, token, code, reason)
        if failed:
            log.info("%s failed %s: %s (%s)", self.owner, generation_id, code.value, reason)
        return failed


def _engine_only_moderation(settings: Settings) -> tuple[Settings, Moderator]:
    """An engine-only worker checks only its previews (where outputs are checked). Without the
    moderation packages it shows no previews rather than unchecked ones."""
    if settings.preview_every_s <= 0:
        return settings, Moderator(None, None, ())
    try:
        return settings, Moderator.from_settings(settings).of_previews()
    except ModerationUnavailable as missing:
        log.warning("previews are off on this worker: %s", missing)
        return settings.model_copy(update={"preview_every_s": 0.0}), Moderator(None, None, ())


class _Heartbeats:
    """Heartbeats from a side thread every `interval_s` while the block runs (a model loading, a
    long step): a live process is never timed out; a dead one stops beating with it.

    The details are the engine's progress, (step, total) then, once there is one, the step of the
    latest preview and its JPEG: the events stream reads them from the workflow's description
    (dispatch.TemporalDispatcher.progress), as engine-only workers have no database to write to."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self.details: tuple[int | bytes, ...] = (0, 0)
        self._stop = threading.Event()
        self._context = contextvars.copy_context()  # the activity's context, for activity.heartbeat
        self._thread = threading.Thread(target=self._run, name="heartbeats", daemon=True)

    def __enter__(self) -> _Heartbeats:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def step(self, step: int, total: int, preview: bytes | None) -> None:
        """Take the engine's progress after a step, and its preview when it drew one."""
        if preview is not None:
            self.details = (step, total, step, preview)
        else:
            self.details = (step, total, *self.details[2:])

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._context.run(activity.heartbeat, *self.details)


class TemporalRunner:
    """Temporal workers in one process: the main queue (the workflow, prepare, finalize, fail),
    unless `engine_only`, and the engine queue of each model, one generate at a time per model.
    Models are loaded on their first job and kept for the life of the process.

    A process with the main queue also warms the moderation models before it polls, and runs the
    reaper and the retention sweeper (every `gc_interval_s`, on a thread of its own). Each engine
    queue counts as one engine worker in the host's registry, so the engine threads are shared out
    as in the embedded pool (worker.threads)."""

    def __init__(
        self,
        settings: Settings,
        store: Store | None,
        blobs: BlobStore,
        *,
        models: Sequence[str] | None = None,
        engine_only: bool = False,
        client: Client | None = None,
    ) -> None:
        specs = load_models_file(settings.models_file)  # fail fast on a bad models file
        unknown = [name for name in models or () if name not in specs]
        if unknown:
            raise ValueError(f"no such model in the models file: {', '.join(unknown)}")
        if store is None and not engine_only:
            raise ValueError("only an engine-only worker runs without the database")
        if engine_only:
            settings, moderator = _engine_only_moderation(settings)
        else:
            moderator = Moderator.from_settings(settings)
        self.settings = settings
        self.models = list(specs if models is None else models)
        self.engine_only = engine_only
        registry = ModelRegistry(specs, allow_downloads=settings.allow_downloads)
        ctx = StageContext(settings, blobs, moderator, None if engine_only else store, registry)
        prefix = settings.worker_id or f"{socket.gethostname()}:{os.getpid()}"
        self.host = HostWorkers(settings.data_dir / "run" / "workers", len(self.models))
        self.activities = Activities(ctx, prefix, ThreadBudget(self.host, settings.engine_threads))
        self.sweeper = None if store is None or engine_only else Sweeper(settings, store, blobs)
        self._client = client
        self.ready = threading.Event()
        """Set once every worker polls its task queue (cleared when they stop)."""

    async def connect(self) -> Client:
        if self._client is None:
            self._client = await connect_temporal(self.settings)
        return self._client

    async def run(self, stop: asyncio.Event) -> None:
        client = await self.connect()
        acts = self.activities
        if not self.engine_only:
            await asyncio.to_thread(acts.ctx.moderator.warm)  # before the first job, as embedded
        executors: list[concurrent.futures.ThreadPoolExecutor] = []
        workers: list[Worker] = []
        if not self.engine_only:
            main = concurrent.futures.ThreadPoolExecutor(16, thread_name_prefix="activity")
            executors.append(main)
            workers.append(
                Worker(
                    client,
                    task_queue=main_task_queue(self.settings),
                    workflows=[Generation],
                    activities=[acts.prepare, acts.finalize, acts.fail],
                    activity_executor=main,
                    max_concurrent_activities=16,
                    # The workflow runs outside Temporal's sandbox: worker.workflow does no I/O and
                    # has no side effects. The sandbox re-imports the workflow's modules for every
                    # run and proxies its calls: about 10 ms of CPU per workflow task (measured by
                    # bench/cluster_bench.py), most of a job's cost on the main queue.
                    workflow_runner=UnsandboxedWorkflowRunner(),
                )
            )
        for model in self.models:
            engine = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=f"engine-{model}")
            executors.append(engine)
            workers.append(
                Worker(
                    client,
                    task_queue=engine_task_queue(self.settings, model),
                    activities=[acts.generate],
                    activity_executor=engine,
                    max_concurrent_activities=1,
                    graceful_shutdown_timeout=timedelta(seconds=self.settings.shutdown_grace_s),
                )
            )
        tasks = [asyncio.create_task(worker.run()) for worker in workers]
        reaper = None if self.engine_only else asyncio.create_task(self._reap(stop))
        halt = threading.Event()  # the sweeper's stop
        if self.sweeper is not None and self.settings.gc_interval_s > 0:
            threading.Thread(target=self.sweeper.run, args=(halt,), name="gc", daemon=True).start()
        if self.models:
            self.host.__enter__()
        log.info(
            "temporal worker: %s%s",
            "" if self.engine_only else f"queue {main_task_queue(self.settings)}, ",
            ", ".join(engine_task_queue(self.settings, model) for model in self.models),
        )
        self.ready.set()
        try:
            stopped = asyncio.create_task(stop.wait())
            done, _ = await asyncio.wait([stopped, *tasks], return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task is not stopped and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
        finally:
            self.ready.clear()
            halt.set()
            if self.models:
                self.host.__exit__(None, None, None)
            if reaper is not None:
                reaper.cancel()
            await asyncio.gather(*(worker.shutdown() for worker in workers), return_exceptions=True)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for executor in executors:
                executor.shutdown(wait=False, cancel_futures=True)

    async def _reap(self, stop: asyncio.Event) -> None:
        """The embedded reaper's TTL rule still holds: a row active past the active-job TTL (its
        workflow lost, say) fails with generation_failed; and so does a row still queued whose
        workflow ended without starting it (`reap_unstarted`)."""
        store = self.activities.store
        while not stop.is_set():
            try:
                for reaped in await asyncio.to_thread(store.generations.reap, self.settings.active_job_ttl_s):
                    log.warning("reaped %s: %s", reaped.id, reaped.reason)
                    await self._cancel_workflow(reaped.id)  # its run stops at its next heartbeat
                await self.reap_unstarted(utcnow() - timedelta(seconds=self.settings.active_job_ttl_s))
            except Exception:
                log.exception("reaping failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.settings.reap_interval_s)

    async def _cancel_workflow(self, workflow_id: str) -> None:
        try:
            client = await self.connect()
            await client.get_workflow_handle(workflow_id).cancel()
        except RPCError as error:  # already closed, or gone
            log.info("cancelling the workflow of %s: %s", workflow_id, error)

    async def reap_unstarted(self, created_before: datetime) -> list[str]:
        """Fail the rows created before `created_before` that are still queued although their
        workflow has ended (its prepare timed out while the database or every main-queue worker
        was down for longer than the active-job TTL, or someone terminated it): nothing would
        ever run or release them. A row whose workflow still runs is left alone. Returns the ids."""
        store = self.activities.store
        client = await self.connect()
        failed = []
        for generation_id in await asyncio.to_thread(store.generations.unstarted, created_before):
            if not await _workflow_ended(client, generation_id):
                continue
            if await asyncio.to_thread(
                store.generations.fail_unstarted, generation_id, FailureCode.GENERATION_FAILED, UNSTARTED
            ):
                log.warning("reaped %s: %s", generation_id, UNSTARTED)
                failed.append(generation_id)
        return failed


UNSTARTED = "Generation failed: it could not be started within the active-job limit"


async def _workflow_ended(client: Client, workflow_id: str) -> bool:
    try:
        description = await client.get_workflow_handle(workflow_id).describe()
    except RPCError as error:
        if error.status == RPCStatusCode.NOT_FOUND:  # ended, and past the namespace's retention
            return True
        raise
    return description.status != WorkflowExecutionStatus.RUNNING


RESTART_S = 5.0
"""How long `daguerre serve`'s in-process Temporal worker waits before it starts again after it
stopped on an error (Temporal unreachable at start, say)."""


class RunnerThread:
    """A TemporalRunner on a thread of its own, with its own event loop (`daguerre serve`); it
    starts again after an error, so the API never goes on without its worker."""

    def __init__(self, runner: TemporalRunner) -> None:
        self.runner = runner
        self._loop = asyncio.new_event_loop()
        self._stop = asyncio.Event()
        self._thread = threading.Thread(target=self._main, name="temporal-worker", daemon=True)
        self.error: BaseException | None = None

    def _main(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            while not self._stop.is_set():
                try:
                    self._loop.run_until_complete(self.runner.run(self._stop))
                except Exception as exc:  # Temporal unreachable, say: the API goes on; try again
                    self.error = exc
                    log.exception("the temporal worker stopped; starting it again in %g s", RESTART_S)
                    with contextlib.suppress(TimeoutError):
                        self._loop.run_until_complete(asyncio.wait_for(self._stop.wait(), RESTART_S))
        finally:
            self._loop.close()

    def start(self, timeout: float = 30.0) -> None:
        """Start the thread; wait until the worker polls, or its first start failed (`error`)."""
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.runner.ready.wait(0.05) and self.error is None and time.monotonic() < deadline:
            pass

    def stop(self, timeout: float | None = None) -> None:
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout if timeout is not None else self.runner.settings.shutdown_grace_s + 5)
