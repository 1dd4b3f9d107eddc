"""Requests per minute per account: a sliding window in which each request ages out on its own.

Backed by the `limits` library's moving-window strategy: in memory for a single API process (the
embedded default), in Redis for several processes or hosts (`rate_limit_storage =
"redis://host:6379/0"`). If the store is unreachable the API fails open: the request is allowed,
the rate-limit headers are left out, and the failure is logged (at most once a minute).

The concurrency limit (generations not yet terminal) is counted in the database, not here.
"""

from __future__ import annotations

import logging
import math
import time
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


class RequestRateLimiter:
    def __init__(self, storage_uri: str, window_s: int = 60) -> None:
        scheme = storage_uri.split("://", 1)[0]
        options: dict[str, Any] = {}
        self._pool: Any = None
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
        self.storage = storage
        self.window_s = window_s
        self._strategy = MovingWindowRateLimiter(storage)
        self._last_failure_log = 0.0

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.aclose()

    async def hit(self, account_id: str, per_window: int) -> Decision | None:
        """Count one request; None when the store is unreachable (fail open, no headers)."""
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
