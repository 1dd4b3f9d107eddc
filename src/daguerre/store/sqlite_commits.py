"""SQLite only: writes committed on the event loop that submits them, and the checkpoint thread.

`Database` starts these for a SQLite file. They see the database through what they are given: a
way to open the loop's connection, the group committer to fall back on, the ChangeSignal to bump
after each commit, and the file's path. docs/operations.md ("Writes and reads on SQLite") tells
why they exist and what they measured.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection, RootTransaction

from daguerre.store.changes import ChangeSignal
from daguerre.store.commits import Batch, GroupCommitter, run_batch
from daguerre.store.sqlite_fast import sqlite_driver

T = TypeVar("T")
log = logging.getLogger(__name__)


class LoopCommitter:
    """Commits the writes an event loop submits on that loop, once per loop iteration.

    Handing a write to the committer thread costs more than the write: the two threads take turns
    on the GIL for every statement (sqlite3 releases it around each step), and every result is
    sent back through the loop's wake-up socket. On a local SQLite file the write itself is tens of
    microseconds, so the operations a loop submits while it runs its ready callbacks are gathered
    and run together, on the loop, in one transaction, right after them.

    The loop must never wait for SQLite's write lock, so this transaction starts with a busy
    timeout of zero: when another connection (a worker, another process) holds the lock, the batch
    goes to the committer thread, which waits for it as usual.
    """

    def __init__(
        self,
        connect: Callable[[], Connection],
        fallback: GroupCommitter,
        changes: ChangeSignal,
        path: str,
    ) -> None:
        """`connect` opens a connection outside the pool whose transactions take the write lock."""
        self._connect = connect
        self._fallback = fallback
        self._changes = changes
        self._pending: dict[asyncio.AbstractEventLoop, _Pending] = {}
        self._local = threading.local()
        self._connections: list[Connection] = []
        self._lock = threading.Lock()
        self.checkpointer = Checkpointer(changes, path)
        """Checkpoints for the loop's connections, which leave them to it (started with the first)."""

    async def run(self, operation: Callable[[Connection], T]) -> T:
        """Queue `operation` for this loop's next commit and answer its result once committed (a
        caller cancelled meanwhile does not withdraw it: the operation still runs)."""
        loop = asyncio.get_running_loop()
        future: Future[T] = Future()
        flushed = loop.create_future()
        pending = self._pending.get(loop)
        if pending is None:
            pending = self._pending[loop] = _Pending([], [])
            loop.call_soon(self._flush, loop)
        pending.batch.append((operation, future))
        pending.waiters.append(flushed)
        await flushed
        if not future.done():  # handed to the committer thread
            return await asyncio.wrap_future(future)
        return future.result()

    def close(self) -> None:
        self.checkpointer.close()
        with self._lock:
            for conn in self._connections:
                conn.close()
            self._connections.clear()

    def _flush(self, loop: asyncio.AbstractEventLoop) -> None:
        pending = self._pending.pop(loop)
        try:
            self._commit(pending.batch)
        finally:
            for waiter in pending.waiters:
                if not waiter.done():  # its request may have been cancelled meanwhile
                    waiter.set_result(None)

    def _commit(self, batch: Batch) -> None:
        try:
            conn = self._connection()
            transaction = conn.begin()  # BEGIN IMMEDIATE with a zero busy timeout
        except sa.exc.OperationalError:  # the write lock is taken: never wait for it here
            self._fallback.put(batch)
            return
        except Exception:
            log.exception("cannot write on the event loop; using the committer thread")
            self._fallback.put(batch)
            return
        run_batch(lambda: self._finish(conn, transaction), batch, retry=self._fallback.put)

    @contextmanager
    def _finish(self, conn: Connection, transaction: RootTransaction) -> Iterator[Connection]:
        with transaction:
            yield conn
        self._changes.notify()

    def _connection(self) -> Connection:
        """This thread's connection for loop commits, kept out of the pool (its busy timeout is 0)."""
        conn: Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            driver = sqlite_driver(conn)
            driver.execute("PRAGMA busy_timeout=0")  # before anything can wait for a lock
            self.checkpointer.start()
            driver.execute("PRAGMA wal_autocheckpoint=0")  # the Checkpointer's thread does it
            self._local.conn = conn
            with self._lock:
                self._connections.append(conn)
        return conn


class Checkpointer:
    """Copies the write-ahead log back into the database file from its own thread.

    SQLite checkpoints inside the commit that takes the log past 1,000 pages. For the commits the
    event loop makes (LoopCommitter) that meant stalling the loop for 5-10 ms, several times a
    second under a stream of creates (about 4 MB copied and two fsyncs each time; measured: half of
    all commit time). The loop's connection turns automatic checkpoints off, and this thread runs a
    PASSIVE checkpoint, which never waits for or blocks readers and writers, at most every
    `interval_s` while commits keep coming; sqlite3 releases the GIL for the copy and the fsyncs.
    Other connections (workers, other processes) keep checkpointing as usual.

    A writer starts the log over only when it begins while every frame is checkpointed, which under
    a sustained stream of commits does not happen: the log then grows (about 10,000 pages a second
    under the create benchmark) until writes pause, and db.WAL_SIZE_LIMIT_BYTES cuts the file back.
    RESTART checkpoints would start it over but hold the write lock while they copy, sending the
    loop's commits to the committer thread; measured, creates were no faster with them.
    """

    def __init__(self, changes: ChangeSignal, path: str, interval_s: float = 0.1) -> None:
        self._changes = changes
        self._path = path
        self._interval_s = interval_s
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self.checkpoints = 0

    def start(self) -> None:
        with self._lock:
            if self._thread is None:
                self._stopping.clear()
                self._thread = threading.Thread(target=self._run, name="wal-checkpoint", daemon=True)
                self._thread.start()

    def close(self) -> None:
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            self._stopping.set()
            self._changes.wake()
            thread.join()

    def _run(self) -> None:
        conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        seen = -1
        try:
            while not self._stopping.is_set():
                # Sleep until something was committed since the last checkpoint.
                seen = self._changes.wait(seen, stop=self._stopping)
                self._checkpoint(conn)
                self._stopping.wait(self._interval_s)  # let the next pages gather
            self._checkpoint(conn)  # leave a short log behind
        finally:
            conn.close()

    def _checkpoint(self, conn: sqlite3.Connection) -> None:
        try:
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            self.checkpoints += 1
        except sqlite3.Error:
            log.exception("WAL checkpoint failed; retrying after the next commits")


@dataclass
class _Pending:
    """The operations a loop submitted in its current iteration, and their callers' wake-ups."""

    batch: Batch
    waiters: list[asyncio.Future[None]]
