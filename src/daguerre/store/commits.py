"""Committers: what runs the write operations submitted to a Database (`submit`, `run`).

On SQLite, group commit: concurrent write operations share one transaction and one commit.
`run_batch` runs a batch of operations in one transaction and resolves their futures;
`GroupCommitter` feeds it from a thread of its own; the SQLite event-loop committer
(sqlite_commits) hands them what it cannot commit on the loop. On PostgreSQL, `TransactionPool`:
each operation in a transaction of its own, several at once. All of them only need a way to begin
a write transaction.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager
from typing import Any, TypeVar

from sqlalchemy.engine import Connection

T = TypeVar("T")
Batch = list[tuple[Callable[[Connection], Any], Future[Any]]]
log = logging.getLogger(__name__)


def run_batch(
    begin: Callable[[], AbstractContextManager[Connection]],
    batch: Batch,
    retry: Callable[[Batch], None] | None = None,
) -> None:
    """Run the operations of `batch` in one transaction from `begin` and resolve their futures.

    If any operation raises, that transaction is rolled back and the operations run again, each in
    a transaction of its own (by `retry` when given), so only the failing one fails."""
    # A future handed on by `retry` is already running; a cancelled one is dropped.
    batch = [(op, f) for op, f in batch if f.running() or f.set_running_or_notify_cancel()]
    if len(batch) > 1 or retry is not None:
        try:
            with begin() as conn:
                results = [operation(conn) for operation, _ in batch]
        except Exception:
            if retry is not None:
                retry(batch)
                return
            log.warning("a batched write failed; running its %d operations one by one", len(batch))
        else:
            for (_, future), result in zip(batch, results, strict=True):
                future.set_result(result)
            return
    for operation, future in batch:
        try:
            with begin() as conn:
                result = operation(conn)
        except Exception as exc:
            future.set_exception(exc)
        else:
            future.set_result(result)


class GroupCommitter:
    """Commits concurrent write operations together, in one transaction, from one thread.

    A commit is the expensive part of a small write (a WAL append, and on a networked database a
    round trip). Under load, API requests that each insert one row queue their operations here;
    the thread takes everything queued, runs the operations in one transaction from `begin`,
    commits once, then resolves every future (see `run_batch`). Operations therefore touch nothing
    but the database, and report expected refusals as return values, not exceptions. The caller
    never holds a connection or blocks an event loop on the write lock.
    """

    def __init__(self, begin: Callable[[], AbstractContextManager[Connection]], max_batch: int = 128) -> None:
        self._begin = begin
        self._max_batch = max_batch
        self._queue: queue.SimpleQueue[tuple[Callable[[Connection], Any], Future[Any]] | None] = (
            queue.SimpleQueue()
        )
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def submit(self, operation: Callable[[Connection], T]) -> Future[T]:
        future: Future[T] = Future()
        self.put([(operation, future)])
        return future

    def put(self, batch: Batch) -> None:
        """Queue operations whose futures were made elsewhere (see sqlite_commits.LoopCommitter)."""
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="group-commit", daemon=True)
                self._thread.start()
        for item in batch:
            self._queue.put(item)

    def close(self) -> None:
        with self._lock:
            if self._thread is not None:
                self._queue.put(None)
                self._thread.join()
                self._thread = None

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            batch = [item]
            while len(batch) < self._max_batch:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self._queue.put(None)  # finish this batch, then stop
                    break
                batch.append(item)
            run_batch(self._begin, batch)


class TransactionPool:
    """Runs each submitted operation in a write transaction of its own, on a pool of `threads`
    threads: for a server database with row locks (PostgreSQL).

    Group commit would be wrong there. A create locks its account's row until its transaction
    commits (money.lock_account), so a batch of several accounts' creates would take their locks
    in whatever order the batch had, and two API processes' batches could deadlock, each waiting on
    a row the other holds. Alone in its transaction a create holds one account's lock, taken first,
    and creates of different accounts run side by side on different connections; the server
    merges the WAL flushes of commits that arrive together on its own (PostgreSQL's group commit).
    """

    def __init__(self, begin: Callable[[], AbstractContextManager[Connection]], threads: int) -> None:
        self._begin = begin
        self._executor = ThreadPoolExecutor(threads, thread_name_prefix="db-write")

    def submit(self, operation: Callable[[Connection], T]) -> Future[T]:
        return self._executor.submit(self._run, operation)

    def _run(self, operation: Callable[[Connection], T]) -> T:
        with self._begin() as conn:
            return operation(conn)

    def close(self) -> None:
        self._executor.shutdown(wait=True)
