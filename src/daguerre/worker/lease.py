"""Keeping a claimed job's lease alive while the engine runs.

A thread renews the lease every lease_s/3. When a renewal changes no row, the job belongs to someone
else now (its lease lapsed and another worker claimed it, or the reaper failed it): `lost` is set and
the worker's step hook stops the engine, and no result of this worker is ever written.
"""

from __future__ import annotations

import logging
import threading
from types import TracebackType

from daguerre.store.generations import GenerationStore

log = logging.getLogger(__name__)


class Lease:
    def __init__(self, generations: GenerationStore, generation_id: str, token: str, lease_s: float) -> None:
        self.generation_id = generation_id
        self.token = token
        self.lost = threading.Event()
        self._generations = generations
        self._lease_s = lease_s
        self._done = threading.Event()
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
