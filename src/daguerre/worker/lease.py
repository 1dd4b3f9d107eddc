"""Keeping a claimed job's lease alive while the engine runs.

A thread renews the lease every lease_s/3. When a renewal changes no row, the job belongs to someone
else now (its lease lapsed and another worker claimed it, the reaper failed it, or it was cancelled):
`lost` is set and the worker's step hook stops the engine, and no result of this worker is ever
written. The step hook also calls `check`, which records the engine's progress on the row at most
every CHECK_EVERY_S, and each preview as it comes (for the events stream), with an UPDATE guarded by
the lease, so that a cancelled job stops at its next engine step rather than at the next renewal.
"""

from __future__ import annotations

import logging
import threading
import time
from types import TracebackType

from daguerre.store.generations import GenerationStore

log = logging.getLogger(__name__)

CHECK_EVERY_S = 0.25
"""How often `check` reads the row: steps of real models take 0.05-2 s."""


class Lease:
    def __init__(self, generations: GenerationStore, generation_id: str, token: str, lease_s: float) -> None:
        self.generation_id = generation_id
        self.token = token
        self.lost = threading.Event()
        self._generations = generations
        self._lease_s = lease_s
        self._done = threading.Event()
        self._checked = time.monotonic()
        self._thread = threading.Thread(
            target=self._renew_loop, name=f"lease-{generation_id[:8]}", daemon=True
        )

    def __enter__(self) -> Lease:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._done.set()
        self._thread.join()

    def check(self, step: int, total: int, preview: bytes | None = None) -> None:
        """Record the engine's progress (and `preview`, a JPEG of the picture at `step`) on the row
        and set `lost` if the lease is no longer ours (called from the step hook; one guarded
        UPDATE at most every CHECK_EVERY_S, and one for each preview)."""
        now = time.monotonic()
        if self.lost.is_set() or (preview is None and now - self._checked < CHECK_EVERY_S):
            return
        self._checked = now
        try:
            if not self._generations.report_progress(self.generation_id, self.token, step, total, preview):
                log.info("%s is no longer ours (cancelled, or reaped): stopping", self.generation_id)
                self.lost.set()
        except Exception:  # the renewal thread decides when the database is unreachable
            log.exception("checking the lease of %s failed", self.generation_id)

    def _renew_loop(self) -> None:
        while not self._done.wait(self._lease_s / 3):
            try:
                still_ours = self._generations.renew(self.generation_id, self.token, self._lease_s)
            except Exception:  # the database may be briefly unavailable: keep trying until the lease lapses
                log.exception("renewing the lease of %s failed", self.generation_id)
                continue
            if not still_ours:
                log.warning(
                    "lease of %s lost: another worker owns it now, or it was reaped", self.generation_id
                )
                self.lost.set()
                return
