"""Requests per minute per account: a sliding window in which each request ages out on its own.

Two backends behind one `RequestRateLimiter.hit`:

* `memory://` (the embedded default, one API process): `MemoryWindows`, a log of the last
  window's request times per account, kept in this process and touched only from its event loop.
* `redis://host:6379/0` (several API processes or hosts): the `limits` library's moving-window
  strategy, whose Lua scripts make each hit atomic in Redis. If Redis is unreachable the API fails
  open: the request is allowed, the rate-limit headers are left out, and the failure is logged (at
  most once a minute).

Why not `limits` for memory too: its in-process storages expire old entries by sweeping every key
every 10 ms, from a new timer thread (sync) or with a thread-pool hop per key (async). With a
thousand active accounts that sweep cost more than the rest of a create (measured: 43 us of a
~280 us create in-process; bench/api_bench.py). A per-account deque trimmed on each hit does the
same job in about 2 us.

The concurrency limit (generations not yet terminal) is counted in the database, not here. An
account without a per-minute limit (`UNLIMITED` in daguerre.store.accounts, the owner's account by
default) never reaches this module: the create path keeps no window for it and sends no headers.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from limits import RateLimitItemPerSecond
from limits.aio.storage import MovingWindowSupport
from limits.aio.strategies import MovingWindowRateLimiter
from limits.storage import storage_from_string

log = logging.getLogger(__name__)

_FAILURE_LOG_INTERVAL_S = 60.0


@dataclass(frozen=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    reset: int
    """Unix seconds when the oldest request in the window ages out (allowed: now + window)."""
    retry_after: int = 0

    def headers(self) -> dict[str, str]:
        """Luma's headers: X-RateLimit-* on 201 and on an RPM 429, plus Retry-After on the 429."""
        headers = {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(self.reset),
        }
        if not self.allowed:
            headers["Retry-After"] = str(self.retry_after)
        return headers


class MemoryWindows:
    """The times of each key's requests within the last `window_s` seconds (monotonic clock).

    A refused request is not recorded, so a client that keeps retrying is let in as soon as its
    oldest request ages out. Keys idle for a whole window are dropped once per window. Not
    thread-safe: one event loop owns it."""

    def __init__(self, window_s: float) -> None:
        self.window_s = window_s
        self._times: dict[str, deque[float]] = {}
        self._next_sweep = time.monotonic() + window_s

    def hit(self, key: str, limit: int) -> Decision:
        now = time.monotonic()
        if now >= self._next_sweep:
            self._sweep(now)
        times = self._times.get(key)
        if times is None:
            times = self._times[key] = deque()
        start = now - self.window_s
        while times and times[0] <= start:
            times.popleft()
        wall = time.time()
        if len(times) >= limit:
            # One more is allowed once all but limit - 1 of the requests in the window aged out.
            ages_out = times[len(times) - limit] + self.window_s - now
            return Decision(False, limit, 0, math.ceil(wall + ages_out), max(1, math.ceil(ages_out)))
        times.append(now)
        return Decision(True, limit, limit - len(times), int(wall + self.window_s))

    def __len__(self) -> int:
        return len(self._times)

    def _sweep(self, now: float) -> None:
        start = now - self.window_s
        for key in [key for key, times in self._times.items() if not times or times[-1] <= start]:
            del self._times[key]
        self._next_sweep = now + self.window_s


class RequestRateLimiter:
    def __init__(self, storage_uri: str, window_s: int = 60) -> None:
        scheme = storage_uri.split("://", 1)[0]
        self.window_s = window_s
        self._memory: MemoryWindows | None = None
        self._strategy: MovingWindowRateLimiter | None = None
        self._pool: Any = None
        self._last_failure_log = 0.0
        if scheme == "memory":
            self._memory = MemoryWindows(window_s)
            return
        options: dict[str, Any] = {}
        if scheme in ("redis", "rediss"):
            import redis.asyncio

            # Our own pool, so shutdown can close its connections; short timeouts, to fail open fast.
            self._pool = redis.asyncio.ConnectionPool.from_url(
                storage_uri, socket_timeout=0.5, socket_connect_timeout=0.5
            )
            options = {"implementation": "redispy", "connection_pool": self._pool}
        storage = storage_from_string(f"async+{storage_uri}", **options)
        if not isinstance(storage, MovingWindowSupport):
            raise ValueError(f"rate_limit_storage {storage_uri!r} does not support a sliding window")
        self._strategy = MovingWindowRateLimiter(storage)

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.aclose()

    async def hit(self, account_id: str, per_window: int) -> Decision | None:
        """Count one request against `per_window` (at least 1); None when the store is unreachable
        (fail open, no headers)."""
        if self._memory is not None:
            return self._memory.hit(account_id, per_window)
        assert self._strategy is not None
        item = RateLimitItemPerSecond(per_window, self.window_s)
        try:
            allowed = await self._strategy.hit(item, "creates", account_id)
            stats = await self._strategy.get_window_stats(item, "creates", account_id)
        except Exception as exc:
            now = time.monotonic()
            if now - self._last_failure_log > _FAILURE_LOG_INTERVAL_S:
                self._last_failure_log = now
                log.warning("rate limit store unreachable, allowing requests: %s", exc)
            return None
        now = time.time()
        if allowed:
            return Decision(True, per_window, max(0, int(stats.remaining)), int(now + self.window_s))
        retry_after = max(1, math.ceil(stats.reset_time - now))
        return Decision(False, per_window, 0, math.ceil(stats.reset_time), retry_after)
