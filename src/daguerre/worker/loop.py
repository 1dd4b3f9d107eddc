"""The worker: claim a job, run it, record the outcome. The one place exceptions become failure codes.

    worker = Worker(settings, store, blobs, registry, worker_id="host:123:0")
    worker.run_once()          # one job, or None when the queue is empty (tests call this)
    worker.run(stop_event)     # loop until stop_event is set

Delivery is at-least-once (a crashed worker's job is claimed again when its lease lapses); completion
is exactly-once, because every write is guarded by the lease token (see store.generations).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from daguerre.blobs import BlobStore
from daguerre.engine import ModelRegistry, set_engine_threads
from daguerre.errors import Cancelled, JobFailure, LeaseLost, Transient
from daguerre.moderation import Moderator
from daguerre.settings import Settings
from daguerre.store import Store
from daguerre.store.generations import GenerationRecord
from daguerre.wire import FailureCode, State
from daguerre.worker.lease import Lease
from daguerre.worker.stages import ProgressHook, StageContext, finalize, generate, prepare
from daguerre.worker.threads import ThreadBudget

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outcome:
    """What became of one claimed job, as far as this worker is concerned."""

    generation_id: str
    state: State | None
    """COMPLETED or FAILED when this worker decided; QUEUED when handed back; None when the lease
    was lost and another worker or the reaper decides."""
    failure_code: FailureCode | None = None


@dataclass(frozen=True)
class Running:
    generation_id: str
    token: str


class Worker:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        blobs: BlobStore,
        registry: ModelRegistry,
        worker_id: str,
        moderator: Moderator | None = None,
        threads: ThreadBudget | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.blobs = blobs
        self.registry = registry
        self.worker_id = worker_id
        self.moderator = moderator or Moderator.from_settings(settings)
        self.threads = threads
        """Sizes the engine's CPU threads before each job (None: torch's own default)."""
        self.running: Running | None = None
        """The job in hand, so a supervisor can hand it back if the worker does not stop in time."""
        self._stop_at: float | None = None

    # The loop ----------------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Claim and run jobs until `stop` is set; an idle worker wakes within milliseconds of a new job."""
        self.moderator.warm()
        watcher = self.store.db.watcher()
        next_reap = 0.0
        try:
            while not stop.is_set():
                if time.monotonic() >= next_reap:
                    self.reap()
                    next_reap = time.monotonic() + self.settings.reap_interval_s
                try:
                    outcome = self.run_once(stop)
                except Exception:  # the database may be briefly unavailable; never let the loop die
                    log.exception("worker %s: claiming a job failed", self.worker_id)
                    stop.wait(1.0)
                    continue
                if outcome is None:
                    watcher.wait(
                        timeout=min(1.0, self.settings.reap_interval_s), poll_s=self.settings.idle_poll_s
                    )
        finally:
            watcher.close()

    def reap(self) -> None:
        try:
            for reaped in self.store.generations.reap(self.settings.active_job_ttl_s):
                log.warning("reaped %s: %s", reaped.id, reaped.reason)
        except Exception:
            log.exception("reaping failed")

    def run_once(self, stop: threading.Event | None = None) -> Outcome | None:
        """Claim one job and take it to an outcome; None when there was nothing to claim."""
        record = self.store.generations.claim(self.worker_id, self.settings.lease_s)
        if record is None:
            return None
        assert record.lease_token is not None
        token = record.lease_token
        log.info(
            "%s claimed %s (attempt %d/%d)", self.worker_id, record.id, record.attempts, record.max_attempts
        )
        self.running = Running(record.id, token)
        self._stop_at = None
        generations = self.store.generations
        lease = Lease(generations, record.id, token, self.settings.lease_s)
        stages = StageContext(self.settings, self.blobs, self.moderator, self.store, self.registry)
        try:
            with lease:
                prepared = prepare(stages, record, token)
                if self.threads is not None:
                    set_engine_threads(self.threads.threads())
                generated = generate(stages, prepared, self._step_hook(record.id, lease, stop))
                if lease.lost.is_set():
                    raise LeaseLost(record.id)
            completed = finalize(stages, prepared.request, generated)
        except (LeaseLost, Cancelled) as exc:
            if lease.lost.is_set() or isinstance(exc, LeaseLost):
                log.warning("%s: dropped %s, its lease is lost", self.worker_id, record.id)
                return Outcome(record.id, None)
            handed_back = generations.hand_back(record.id, token, count_attempt=False)
            log.info("%s: handed %s back to the queue (shutting down)", self.worker_id, record.id)
            return Outcome(record.id, State.QUEUED if handed_back else None)
        except Transient as failure:
            if record.attempts < record.max_attempts:
                generations.hand_back(record.id, token, count_attempt=True)
                log.warning("%s: %s will be retried: %s", self.worker_id, record.id, failure.reason)
                return Outcome(record.id, State.QUEUED)
            return self._fail(record, token, failure)
        except JobFailure as failure:
            return self._fail(record, token, failure)
        except Exception:
            log.exception("%s: generation %s raised", self.worker_id, record.id)
            return self._fail(record, token, JobFailure(FailureCode.GENERATION_FAILED))
        finally:
            self.running = None
        if not completed:
            log.warning("%s: %s finished after its lease was lost; result dropped", self.worker_id, record.id)
            return Outcome(record.id, None)
        log.info("%s completed %s", self.worker_id, record.id)
        return Outcome(record.id, State.COMPLETED)

    def _fail(self, record: GenerationRecord, token: str, failure: JobFailure) -> Outcome:
        if self.store.generations.fail(record.id, token, failure.code, failure.reason):
            log.info("%s failed %s: %s (%s)", self.worker_id, record.id, failure.code.value, failure.reason)
            return Outcome(record.id, State.FAILED, failure.code)
        return Outcome(record.id, None)

    # One job -----------------------------------------------------------------------------------

    def _step_hook(self, generation_id: str, lease: Lease, stop: threading.Event | None) -> ProgressHook:
        """Records progress and previews on the row, and stops the engine at its next step when the
        lease is lost (the job was cancelled or reaped, or taken by another worker), or when the
        worker is shutting down and the grace time has run out."""

        def on_step(step: int, total: int, preview: bytes | None) -> None:
            lease.check(step, total, preview)
            if lease.lost.is_set():
                raise LeaseLost(generation_id)
            if stop is not None and stop.is_set():
                if self._stop_at is None:
                    self._stop_at = time.monotonic() + self.settings.shutdown_grace_s
                if time.monotonic() >= self._stop_at:
                    raise Cancelled(generation_id)
            log.debug("%s: step %d/%d", generation_id, step, total)

        return on_step
