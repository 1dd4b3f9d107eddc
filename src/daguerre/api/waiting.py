"""`Prefer: wait` on `POST /v1/generations` (an extension; RFC 7240, as Replicate uses it): the
answer comes when the generation has ended or the time is up, whichever is first.

    seconds = requested_wait(request)          # None without the preference
    await svc.waiter.wait(generation_id, seconds)

Requests do not poll the store each. One thread per API process (`TerminalWaiter`), running only
while some request waits, sleeps on the store's change watcher: this process's own commits wake it
at once, other processes' reach it through SQLite's `PRAGMA data_version` or, on PostgreSQL, the
notification every transaction that ends a generation sends (store.postgres.DONE_CHANNEL). Woken,
it reads the state of every awaited generation in one query (at most every MIN_READ_GAP_S) and
releases the requests whose generation has ended. With nothing changing it looks again every second
all the same.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import defaultdict

from starlette.requests import Request

from daguerre.store import Store
from daguerre.wire import State

log = logging.getLogger(__name__)

MAX_WAIT_S = 60
"""The longest `Prefer: wait=N` honoured; a bare `wait` means this."""
RECHECK_S = 1.0
POLL_S = 0.05
MIN_READ_GAP_S = 0.05
"""Reads are at most this often: a burst of commits (each also echoed by PostgreSQL's notification)
costs a read per gap, not one per commit."""
"""How often SQLite's data_version is read while requests wait (microseconds each)."""
_ENDED = (State.COMPLETED, State.FAILED)


def requested_wait(request: Request) -> int | None:
    """The seconds asked for with `Prefer: wait` / `Prefer: wait=N` (capped at MAX_WAIT_S), or
    None. Other preferences, and a `wait` value that is not a positive whole number, are ignored
    (RFC 7240: a server ignores what it does not understand)."""
    for header in request.headers.getlist("prefer"):
        for preference in header.split(","):
            name, _, value = preference.split(";")[0].strip().partition("=")
            if name.strip().lower() != "wait":
                continue
            value = value.strip().strip('"')
            if not value:
                return MAX_WAIT_S
            if value.isdigit() and int(value) > 0:
                return min(int(value), MAX_WAIT_S)
    return None


class TerminalWaiter:
    def __init__(self, store: Store) -> None:
        self._store = store
        self._waiting: dict[str, list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]]] = defaultdict(
            list
        )
        self._lock = threading.Lock()
        self._someone_waits = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    async def wait(self, generation_id: str, timeout_s: float) -> None:
        """Return once the generation has ended, or after `timeout_s`."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        with self._lock:
            self._waiting[generation_id].append((loop, done))
            if self._thread is None and not self._stopping.is_set():
                self._thread = threading.Thread(target=self._run, name="terminal-waiter", daemon=True)
                self._thread.start()
        self._someone_waits.set()
        try:
            # It may have ended before the thread knew it was awaited: look once.
            states = await asyncio.to_thread(self._store.generations.states, [generation_id])
            if states.get(generation_id) in _ENDED:
                return
            await asyncio.wait_for(asyncio.shield(done), timeout_s)
        except TimeoutError:
            pass
        finally:
            with self._lock:
                entries = self._waiting.get(generation_id, [])
                entries[:] = [entry for entry in entries if entry[1] is not done]
                if not entries:
                    self._waiting.pop(generation_id, None)

    def close(self) -> None:
        """Release every waiting request (each answers with the state it finds) and stop."""
        self._stopping.set()
        self._someone_waits.set()
        self._store.db.changes.wake()
        with self._lock:
            waiting = [entry for entries in self._waiting.values() for entry in entries]
        for loop, done in waiting:
            loop.call_soon_threadsafe(_release, done)
        if self._thread is not None:
            self._thread.join(5)

    def _run(self) -> None:
        watcher = self._store.db.watcher()
        try:
            while not self._stopping.is_set():
                with self._lock:
                    awaited = list(self._waiting)
                if not awaited:
                    self._someone_waits.clear()
                    self._someone_waits.wait(RECHECK_S)
                    continue
                try:
                    states = self._store.generations.states(awaited)
                except Exception:
                    log.exception("reading the awaited generations failed")
                    time.sleep(RECHECK_S)
                    continue
                ended = [generation_id for generation_id, state in states.items() if state in _ENDED]
                with self._lock:
                    released = [
                        entry for generation_id in ended for entry in self._waiting.get(generation_id, [])
                    ]
                for loop, done in released:
                    loop.call_soon_threadsafe(_release, done)
                read_at = time.monotonic()
                watcher.wait(RECHECK_S, POLL_S)
                time.sleep(max(0.0, read_at + MIN_READ_GAP_S - time.monotonic()))
        finally:
            watcher.close()


def _release(done: asyncio.Future[None]) -> None:
    if not done.done():
        done.set_result(None)
