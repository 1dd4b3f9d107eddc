"""The database handle: one SQLAlchemy engine, read and write transactions, and what runs them.

SQLite (the default) runs in WAL mode with a busy timeout; write transactions start with
`BEGIN IMMEDIATE`, which takes SQLite's single write lock up front, so a guarded UPDATE never has to
upgrade a read lock half way (the classic "database is locked" trap). For a SQLite file the handle
also runs the fast path (sqlite_fast), commits the event loop's writes on the loop with a
checkpoint thread beside it (sqlite_commits), and group-commits the writes submitted to it
(commits.GroupCommitter). PostgreSQL runs each submitted write in a transaction of its own, several
at once (commits.TransactionPool), and tells idle workers of other processes' new jobs through
LISTEN/NOTIFY (postgres.QueueListener). Every database has the change signal that its watchers wait
on (changes).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine

from daguerre.store.changes import ChangeSignal, ChangeWatcher
from daguerre.store.commits import GroupCommitter, TransactionPool
from daguerre.store.postgres import QueueListener
from daguerre.store.sqlite_commits import LoopCommitter
from daguerre.store.sqlite_fast import Dml, FastSQLite

T = TypeVar("T")
WAL_SIZE_LIMIT_BYTES = 64 * 1024 * 1024
"""What the write-ahead log file is cut back to when it starts over (SQLite never shrinks it
otherwise): under a sustained stream of creates it can grow past 100 MB before a pause in writes
lets it restart (see sqlite_commits.Checkpointer)."""

WRITE_THREADS = 8
"""Write transactions a process runs at once on a server database (TransactionPool); its
connection pool keeps POOL_SIZE connections and opens up to POOL_OVERFLOW more under load."""
POOL_SIZE = 10
POOL_OVERFLOW = 20

_IMMEDIATE = "daguerre_immediate"
_NO_BEGIN = "daguerre_no_begin"


class Database:
    """Engine plus transaction helpers. Thread-safe; share one per process."""

    def __init__(self, url: str) -> None:
        self.url = sa.make_url(url)
        self.is_sqlite = self.url.get_backend_name() == "sqlite"
        self.engine = _create_engine(self.url, self.is_sqlite)
        database = self.url.database
        self.sqlite_file = database if self.is_sqlite and database and database != ":memory:" else None
        """The SQLite database's path; None on another database or an in-memory one."""
        self.changes = ChangeSignal()
        """Counts this process's commits (see `watcher`)."""
        self._fast = FastSQLite(self.sqlite_file) if self.sqlite_file is not None else None
        self.reads_inline = self._fast is not None
        """True when a read costs microseconds and never waits on the network or on a lock (SQLite in
        WAL mode on a local file): the stores' async read methods (`summary_async`...) then run it
        on the caller's event loop, since a thread hand-off costs more than the query under load;
        elsewhere they run it in a thread."""
        self._group: GroupCommitter | TransactionPool = (
            GroupCommitter(self.write) if self.is_sqlite else TransactionPool(self.write, WRITE_THREADS)
        )
        self._on_loop = (
            LoopCommitter(self._loop_connection, self._group, self.changes, self.sqlite_file)
            if self.sqlite_file is not None and isinstance(self._group, GroupCommitter)
            else None
        )
        self._listener: QueueListener | None = None
        self._listener_lock = threading.Lock()

    def fetch_one(
        self, query: sa.Select[Any], params: dict[str, Any], conn: Connection | None = None
    ) -> Mapping[str, Any] | None:
        """The first row of `query` as a mapping, or None; read in `conn`'s transaction when given.
        On a SQLite file this skips SQLAlchemy's execution machinery (see FastSQLite: for statements
        built once, on hot paths); elsewhere it is an ordinary read."""
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
        """Run a write statement in `conn`'s transaction; the number of rows it changed (on a SQLite
        file without SQLAlchemy's execution machinery: for statements built once, on hot paths)."""
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
        self.changes.notify()

    def submit(self, operation: Callable[[Connection], T]) -> Future[T]:
        """Run `operation` in a write transaction, on another thread; the future resolves once that
        transaction has committed. On SQLite the transaction is shared with other submitted
        operations (group commit); on PostgreSQL it is the operation's own (TransactionPool)."""
        return self._group.submit(operation)

    async def run(self, operation: Callable[[Connection], T]) -> T:
        """`submit` for async callers: the result once the transaction has committed. On a SQLite
        file the transaction runs on the caller's event loop when the write lock is free (see
        sqlite_commits.LoopCommitter)."""
        if self._on_loop is None:
            return await asyncio.wrap_future(self._group.submit(operation))
        return await self._on_loop.run(operation)

    def watcher(self) -> ChangeWatcher:
        """A per-thread object that waits until something may have changed (see ChangeWatcher).
        On PostgreSQL the first one starts the process's QueueListener."""
        if not self.is_sqlite:
            with self._listener_lock:
                if self._listener is None:
                    self._listener = QueueListener(self._listen_connection, self.changes)
        return ChangeWatcher(self.changes, self.sqlite_file)

    def dispose(self) -> None:
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        if self._on_loop is not None:
            self._on_loop.close()
        self._group.close()
        self.engine.dispose()

    def _listen_connection(self) -> Any:
        """A driver connection of its own, outside the pool, for the QueueListener (which closes it)."""
        raw = self.engine.raw_connection()
        driver = raw.driver_connection
        raw.detach()
        assert driver is not None
        driver.rollback()  # the pool's ping may have begun a transaction
        return driver

    def _loop_connection(self) -> Connection:
        """A connection of its own, outside the pool, whose transactions take the write lock (for
        sqlite_commits.LoopCommitter, which sets its busy timeout)."""
        conn = self.engine.connect()
        conn.detach()
        return conn.execution_options(**{_IMMEDIATE: True})


def _create_engine(url: sa.URL, is_sqlite: bool) -> Engine:
    if not is_sqlite:
        return sa.create_engine(url, pool_pre_ping=True, pool_size=POOL_SIZE, max_overflow=POOL_OVERFLOW)

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
