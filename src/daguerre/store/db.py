"""The database handle: one SQLAlchemy engine, read and write transactions, change notification.

SQLite (the default) runs in WAL mode with a busy timeout; write transactions start with
`BEGIN IMMEDIATE`, which takes SQLite's single write lock up front, so a guarded UPDATE never has to
upgrade a read lock half way (the classic "database is locked" trap). PostgreSQL uses plain
transactions; the statements that need row locks ask for them (`FOR UPDATE SKIP LOCKED`).
"""

from __future__ import annotations

import asyncio
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects.sqlite import dialect as sqlite_dialect
from sqlalchemy.engine import Connection, Engine, RootTransaction

T = TypeVar("T")
Dml = sa.Insert | sa.Update | sa.Delete
log = logging.getLogger(__name__)
WAL_SIZE_LIMIT_BYTES = 64 * 1024 * 1024
"""What the write-ahead log file is cut back to when it starts over (SQLite never shrinks it
otherwise): under a sustained stream of creates it can grow past 100 MB before a pause in writes
lets it restart (see Checkpointer)."""

_IMMEDIATE = "daguerre_immediate"
_NO_BEGIN = "daguerre_no_begin"


class Database:
    """Engine plus transaction helpers. Thread-safe; share one per process."""

    def __init__(self, url: str) -> None:
        self.url = sa.make_url(url)
        self.is_sqlite = self.url.get_backend_name() == "sqlite"
        self.engine = _create_engine(self.url, self.is_sqlite)
        database = self.url.database
        self._fast = _FastSQLite(database) if self.is_sqlite and database and database != ":memory:" else None
        self._commits = 0
        self._changed = threading.Condition()
        self._group = GroupCommitter(self)
        self._on_loop = LoopCommitter(self, self._group) if self._fast is not None else None

    @property
    def fast_reads(self) -> bool:
        """True when a single-row read by key costs microseconds and never waits on the network or
        on a lock (SQLite in WAL mode on a local file). An async caller may then run such reads
        inline instead of paying for a thread hand-off."""
        return self._fast is not None

    def fetch_one(
        self, query: sa.Select[Any], params: dict[str, Any], conn: Connection | None = None
    ) -> Mapping[str, Any] | None:
        """The first row of `query` as a mapping, or None; read in `conn`'s transaction when given.
        On SQLite this skips SQLAlchemy's execution machinery (see _FastSQLite: for statements built
        once, on hot paths); elsewhere it is an ordinary read."""
        if self._fast is not None:
            return self._fast.fetch_one(query, params, conn)
        if conn is not None:
            found = conn.execute(query, params).mappings().first()
        else:
            with self.read() as own:
                found = own.execute(query, params).mappings().first()
        return None if found is None else dict(found)

    def scalar(self, query: sa.Select[Any], params: dict[str, Any], conn: Connection | None = None) -> Any:
        """The first column of the first row of `query` (see `fetch_one`), or None."""
        row = self.fetch_one(query, params, conn)
        return None if row is None else next(iter(row.values()))

    def execute(self, conn: Connection, statement: Dml, params: dict[str, Any]) -> int:
        """Run a write statement in `conn`'s transaction; the number of rows it changed (on SQLite
        without SQLAlchemy's execution machinery: for statements built once, on hot paths)."""
        if self._fast is not None:
            return self._fast.execute(conn, statement, params).rowcount
        return conn.execute(statement, params).rowcount

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A connection for one read. On SQLite no BEGIN is sent: a single SELECT is its own consistent
        snapshot, and readers never block writers in WAL mode."""
        with self.engine.connect().execution_options(**{_NO_BEGIN: True}) as conn, conn.begin():
            yield conn

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """A write transaction; on SQLite it holds the write lock from its first statement."""
        with self.engine.connect().execution_options(**{_IMMEDIATE: True}) as conn, conn.begin():
            yield conn
        self.committed()

    def committed(self) -> None:
        """Wake the watchers: a write transaction of this process has committed."""
        with self._changed:
            self._commits += 1
            self._changed.notify_all()

    def submit(self, operation: Callable[[Connection], T]) -> Future[T]:
        """Run `operation` in a write transaction shared with other submitted operations (group
        commit) on the committer thread; the future resolves once that transaction has committed."""
        return self._group.submit(operation)

    async def run(self, operation: Callable[[Connection], T]) -> T:
        """`submit` for async callers: the result once the transaction has committed. On SQLite the
        transaction runs on the caller's event loop when the write lock is free (see LoopCommitter)."""
        if self._on_loop is None:
            return await asyncio.wrap_future(self._group.submit(operation))
        return await self._on_loop.run(operation)

    def watcher(self) -> ChangeWatcher:
        """A per-thread object that waits until something may have changed (see ChangeWatcher)."""
        return ChangeWatcher(self)

    def dispose(self) -> None:
        if self._on_loop is not None:
            self._on_loop.close()
        self._group.close()
        self.engine.dispose()


Batch = list[tuple[Callable[[Connection], Any], Future[Any]]]


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

    A commit is the expensive part of a small write (a WAL append and, on PostgreSQL, a round trip
    and an fsync). Under load, API requests that each insert one row queue their operations here;
    the thread takes everything queued, runs the operations in one transaction, commits once, then
    resolves every future (see `run_batch`). Operations therefore touch nothing but the database,
    and report expected refusals as return values, not exceptions. The caller never holds a
    connection or blocks an event loop on the write lock.
    """

    def __init__(self, db: Database, max_batch: int = 128) -> None:
        self._db = db
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
        """Queue operations whose futures were made elsewhere (see LoopCommitter)."""
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
            run_batch(self._db.write, batch)


class LoopCommitter:
    """SQLite only: commits the writes an event loop submits on that loop, once per loop iteration.

    Handing a write to the committer thread costs more than the write: the two threads take turns
    on the GIL for every statement (sqlite3 releases it around each step), and every result is
    sent back through the loop's wake-up socket. On a local SQLite file the write itself is tens of
    microseconds, so the operations a loop submits while it runs its ready callbacks are gathered
    and run together, on the loop, in one transaction, right after them.

    The loop must never wait for SQLite's write lock, so this transaction starts with a busy
    timeout of zero: when another connection (a worker, another process) holds the lock, the batch
    goes to the committer thread, which waits for it as usual.
    """

    def __init__(self, db: Database, fallback: GroupCommitter) -> None:
        self._db = db
        self._fallback = fallback
        self._pending: dict[asyncio.AbstractEventLoop, _Pending] = {}
        self._local = threading.local()
        self._connections: list[Connection] = []
        self._lock = threading.Lock()
        self.checkpointer = Checkpointer(db)
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
        self._db.committed()

    def _connection(self) -> Connection:
        """This thread's connection for loop commits, kept out of the pool (its busy timeout is 0)."""
        conn: Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._db.engine.connect()
            conn.detach()
            driver = _driver(conn)
            driver.execute("PRAGMA busy_timeout=0")  # before anything can wait for a lock
            self.checkpointer.start()
            driver.execute("PRAGMA wal_autocheckpoint=0")  # the Checkpointer's thread does it
            conn = conn.execution_options(**{_IMMEDIATE: True})
            self._local.conn = conn
            with self._lock:
                self._connections.append(conn)
        return conn


class Checkpointer:
    """SQLite only: copies the write-ahead log back into the database file from its own thread.

    SQLite checkpoints inside the commit that takes the log past 1,000 pages. For the commits the
    event loop makes (LoopCommitter) that meant stalling the loop for 5-10 ms, several times a
    second under a stream of creates (about 4 MB copied and two fsyncs each time; measured: half of
    all commit time). The loop's connection turns automatic checkpoints off, and this thread runs a
    PASSIVE checkpoint, which never waits for or blocks readers and writers, at most every
    `interval_s` while commits keep coming; sqlite3 releases the GIL for the copy and the fsyncs.
    Other connections (workers, other processes) keep checkpointing as usual.

    A writer starts the log over only when it begins while every frame is checkpointed, which under
    a sustained stream of commits does not happen: the log then grows (about 10,000 pages a second
    under the create benchmark) until writes pause, and WAL_SIZE_LIMIT_BYTES cuts the file back.
    RESTART checkpoints would start it over but hold the write lock while they copy, sending the
    loop's commits to the committer thread; measured, creates were no faster with them.
    """

    def __init__(self, db: Database, interval_s: float = 0.1) -> None:
        self._db = db
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
            with self._db._changed:
                self._db._changed.notify_all()
            thread.join()

    def _run(self) -> None:
        conn = sqlite3.connect(str(self._db.url.database), isolation_level=None, check_same_thread=False)
        changed = self._db._changed
        seen = -1
        try:
            while not self._stopping.is_set():
                with changed:  # sleep until something was committed since the last checkpoint
                    while self._db._commits == seen and not self._stopping.is_set():
                        changed.wait()
                seen = self._db._commits
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


class ChangeWatcher:
    """Lets an idle worker sleep until the database may hold new work, without slow polling.

    Commits made through the same `Database` wake it at once (a condition variable). Commits by
    other processes are seen through SQLite's `PRAGMA data_version`, a counter in shared memory
    that costs microseconds to read, checked every `poll_s`. On other databases only local commits
    wake it early (PostgreSQL LISTEN/NOTIFY can be added here without touching the worker).
    """

    def __init__(self, db: Database) -> None:
        self._db = db
        self._seen_commits = db._commits
        self._sqlite: sqlite3.Connection | None = None
        self._data_version = -1
        if db.is_sqlite and db.url.database not in (None, "", ":memory:"):
            self._sqlite = sqlite3.connect(str(db.url.database), check_same_thread=False)
            self._data_version = self._read_data_version()

    def _read_data_version(self) -> int:
        assert self._sqlite is not None
        row = self._sqlite.execute("PRAGMA data_version").fetchone()
        return int(row[0])

    def _external_change(self) -> bool:
        if self._sqlite is None:
            return False
        version = self._read_data_version()
        changed = version != self._data_version
        self._data_version = version
        return changed

    def wait(self, timeout: float, poll_s: float) -> bool:
        """Block up to `timeout` seconds; True as soon as a change may have happened."""
        deadline = time.monotonic() + timeout
        cond = self._db._changed
        while True:
            with cond:
                if self._db._commits != self._seen_commits:
                    self._seen_commits = self._db._commits
                    return True
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                cond.wait(min(poll_s, remaining))
                if self._db._commits != self._seen_commits:
                    self._seen_commits = self._db._commits
                    return True
            if self._external_change():
                return True

    def close(self) -> None:
        if self._sqlite is not None:
            self._sqlite.close()
            self._sqlite = None


class _FastSQLite:
    """Hot statements on SQLite without SQLAlchemy's per-execution overhead.

    Each statement is compiled by SQLAlchemy once (statements on the hot paths are module
    constants); parameters and rows go through SQLAlchemy's own bind and result processors, so
    callers send and get exactly the values a normal execution would. Reads use a per-thread
    read-only sqlite3 connection; writes run on the driver connection of the caller's transaction.
    Measured: a single-row read costs about 15 us instead of 90-150 us, and an INSERT about 20 us
    instead of 40 us.
    """

    _dialect = sqlite_dialect(paramstyle="named")

    def __init__(self, path: str) -> None:
        self._uri = f"{Path(path).absolute().as_uri()}?mode=ro"
        self._local = threading.local()
        self._compiled: dict[tuple[int, tuple[str, ...]], _Compiled] = {}

    def _connection(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self._uri, uri=True, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA busy_timeout=30000")
            self._local.conn = conn
        return conn

    def _compile(self, statement: sa.Select[Any] | Dml, params: dict[str, Any]) -> _Compiled:
        # An INSERT without values() names its columns after the parameters it is given.
        names = tuple(params) if isinstance(statement, sa.Insert) else ()
        compiled = self._compiled.get((id(statement), names))
        if compiled is None or compiled.statement is not statement:
            sql = statement.compile(dialect=self._dialect, column_keys=list(names) or None)
            columns: Any = statement.selected_columns if isinstance(statement, sa.Select) else ()
            dialect = self._dialect
            compiled = _Compiled(
                statement=statement,
                sql=str(sql),
                constants={k: v for k, v in sql.params.items() if v is not None},
                binds={
                    name: process
                    for name, bind in sql.binds.items()
                    if (process := bind.type.dialect_impl(dialect).bind_processor(dialect))
                },
                keys=[str(column.key) for column in columns],
                results={
                    str(column.key): process
                    for column in columns
                    if (process := column.type.dialect_impl(dialect).result_processor(dialect, None))
                },
            )
            self._compiled[(id(statement), names)] = compiled
        return compiled

    def fetch_one(
        self, query: sa.Select[Any], params: dict[str, Any], conn: Connection | None = None
    ) -> dict[str, Any] | None:
        """The first row of `query`, read in `conn`'s transaction or on its own."""
        compiled = self._compile(query, params)
        driver = self._connection() if conn is None else _driver(conn)
        row = driver.execute(compiled.sql, compiled.parameters(params)).fetchone()
        return None if row is None else compiled.row(row)

    def execute(self, conn: Connection, statement: Dml, params: dict[str, Any]) -> sqlite3.Cursor:
        """Run `statement` in `conn`'s transaction."""
        compiled = self._compile(statement, params)
        return _driver(conn).execute(compiled.sql, compiled.parameters(params))


def _driver(conn: Connection) -> sqlite3.Connection:
    driver = conn.connection.dbapi_connection  # pysqlite's own connection (also once detached)
    assert isinstance(driver, sqlite3.Connection)
    return driver


@dataclass(frozen=True)
class _Compiled:
    statement: sa.Select[Any] | Dml
    sql: str
    constants: dict[str, Any]
    """Values of the literals in the statement (the caller's parameters fill the rest)."""
    binds: dict[str, Callable[[Any], Any]]
    keys: list[str]
    results: dict[str, Callable[[Any], Any]]

    def parameters(self, params: dict[str, Any]) -> dict[str, Any]:
        values = {**self.constants, **params}
        for name, process in self.binds.items():
            if name in values:
                values[name] = process(values[name])
        return values

    def row(self, row: tuple[Any, ...]) -> dict[str, Any]:
        values = dict(zip(self.keys, row, strict=True))
        for key, process in self.results.items():
            values[key] = process(values[key])
        return values


def _create_engine(url: sa.URL, is_sqlite: bool) -> Engine:
    if not is_sqlite:
        return sa.create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)

    database = url.database
    if database and database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(
        url, connect_args={"check_same_thread": False, "timeout": 30}, pool_size=20, pool_reset_on_return=None
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event emit BEGIN itself (pysqlite's own is deferred and late).
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA cache_size=-65536")  # 64 MiB of page cache instead of 2 MiB
        cursor.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT_BYTES}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        options = conn.get_execution_options()
        if options.get(_NO_BEGIN, False):
            return
        conn.exec_driver_sql("BEGIN IMMEDIATE" if options.get(_IMMEDIATE, False) else "BEGIN")

    return engine
