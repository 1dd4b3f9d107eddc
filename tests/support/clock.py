"""A clock the tests move by hand, in place of the store's and the sweeper's `utcnow`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest


class Clock:
    def __init__(self, now: datetime | None = None) -> None:
        self.now = now or datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now

    def install(self, monkeypatch: pytest.MonkeyPatch) -> Clock:
        """Generations (created_at, claims, leases, finished_at) and the sweeper read this clock."""
        monkeypatch.setattr("daguerre.store.generations.utcnow", self)
        monkeypatch.setattr("daguerre.worker.sweep.utcnow", self)
        return self
