"""Workers: threads that claim generations from the store and run them through an engine.

    pool = WorkerPool(settings, store, blobs, count=2)
    pool.start()
    ...
    pool.stop()   # stop claiming; finish the running jobs within the grace time or hand them back

`daguerre serve` runs a pool beside the API; `daguerre worker` runs a pool of one in its own process.
Each worker has its own ModelRegistry, so pipelines load once per worker and are never shared
between threads. A pool with workers also runs the sweeper (retention and orphaned blobs, see
worker.sweep) on a thread of its own, every `gc_interval_s`, so no worker's GPU waits for it.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time

from daguerre.blobs import BlobStore
from daguerre.engine import ModelRegistry, load_models_file
from daguerre.errors import JobFailure
from daguerre.moderation import Moderator
from daguerre.settings import Settings
from daguerre.store import Store
from daguerre.worker.loop import Outcome, Worker
from daguerre.worker.sweep import Sweeper, SweepReport
from daguerre.worker.threads import HostWorkers, ThreadBudget

log = logging.getLogger(__name__)


class WorkerPool:
    def __init__(self, settings: Settings, store: Store, blobs: BlobStore, count: int) -> None:
        specs = load_models_file(settings.models_file)  # fail fast on a bad models file
        moderator = Moderator.from_settings(settings)  # its models are loaded once per process
        prefix = settings.worker_id or f"{socket.gethostname()}:{os.getpid()}"
        self.stop_event = threading.Event()
        self.host = HostWorkers(settings.data_dir / "run" / "workers", count)
        budget = ThreadBudget(self.host, settings.engine_threads)
        self.workers = [
            Worker(
                settings,
                store,
                blobs,
                ModelRegistry(specs, allow_downloads=settings.allow_downloads),
                worker_id=f"{prefix}:{index}",
                moderator=moderator,
                threads=budget,
            )
            for index in range(count)
        ]
        self.sweeper = Sweeper(settings, store, blobs)
        self.default_model = next(iter(specs))
        """Loaded by every worker before it claims a job (the models file's first model)."""
        self._settings = settings
        self._store = store
        self._threads: list[threading.Thread] = []
        self._loaded = {"moderation": "loading", "models": "loading"}

    def start(self) -> None:
        """Load moderation and the default model on a side thread, then start the workers (what
        is created meanwhile waits in the queue); `readiness` says how far loading has come."""
        if self.workers:
            self.host.__enter__()  # counted by every worker process on this host until stop()
            loader = threading.Thread(target=self._load_then_run, name="worker-preload", daemon=True)
            loader.start()
            self._threads.append(loader)
        if self.workers and self._settings.gc_interval_s > 0:
            sweeper = threading.Thread(
                target=self.sweeper.run, args=(self.stop_event,), name="gc", daemon=True
            )
            sweeper.start()
            self._threads.append(sweeper)

    def readiness(self) -> dict[str, str]:
        """For /readyz: "moderation" and "models", each "ok", "loading" or what failed; nothing
        for a pool without workers."""
        return dict(self._loaded) if self.workers else {}

    def _load_then_run(self) -> None:
        started = time.perf_counter()
        try:
            self.workers[0].moderator.warm()  # shared by the pool's workers
            self._loaded["moderation"] = "ok"
        except Exception as error:  # the workers report it on each job; readiness says it here
            log.exception("loading the moderation models failed")
            self._loaded["moderation"] = f"failed to load: {error}"
        try:
            for worker in self.workers:
                worker.registry.engine(self.default_model)
            self._loaded["models"] = "ok"
        except JobFailure as failure:  # e.g. missing weights: each job fails with the same reason
            self._loaded["models"] = f"{self.default_model} failed to load: {failure.reason}"
        except Exception as error:
            log.exception("loading %s failed", self.default_model)
            self._loaded["models"] = f"{self.default_model} failed to load: {error}"
        log.info(
            "loaded moderation (%s) and %s (%s) for %d worker(s) in %.1f s",
            self._loaded["moderation"],
            self.default_model,
            self._loaded["models"],
            len(self.workers),
            time.perf_counter() - started,
        )
        if self.stop_event.is_set():
            return
        for worker in self.workers:
            thread = threading.Thread(
                target=worker.run, args=(self.stop_event,), name=f"worker-{worker.worker_id}", daemon=True
            )
            thread.start()
            self._threads.append(thread)
        log.info("started %d worker(s)", len(self.workers))

    def request_stop(self) -> None:
        """Stop claiming new jobs (running ones go on until the grace time is up)."""
        self.stop_event.set()

    def stop(self) -> None:
        """Stop claiming; wait up to the grace time (plus a little for the step hooks to react), then
        hand back any job still running so another worker takes it from the start."""
        self.request_stop()
        deadline = time.monotonic() + self._settings.shutdown_grace_s + 2.0
        for thread in self._threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
        for worker in self.workers:
            running = worker.running
            if running is not None:
                handed_back = self._store.generations.hand_back(
                    running.generation_id, running.token, count_attempt=False
                )
                log.warning(
                    "worker %s did not stop in time; %s %s",
                    worker.worker_id,
                    running.generation_id,
                    "handed back to the queue" if handed_back else "was already decided",
                )
        self.host.__exit__(None, None, None)


__all__ = ["Outcome", "SweepReport", "Sweeper", "Worker", "WorkerPool"]
