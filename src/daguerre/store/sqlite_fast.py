"""The SQLite fast path: hot statements compiled once, run on the driver's own connections.

`Database` uses it for a SQLite file (see `Database.fetch_one` and `Database.execute`): single-row
reads on a per-thread read-only connection, and the hot writes (the insert of a create) in the
caller's transaction.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.sqlite import dialect as sqlite_dialect
from sqlalchemy.engine import Connection

Dml = sa.Insert | sa.Update | sa.Delete


class FastSQLite:
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
        driver = self._connection() if conn is None else sqlite_driver(conn)
        row = driver.execute(compiled.sql, compiled.parameters(params)).fetchone()
        return None if row is None else compiled.row(row)

    def execute(self, conn: Connection, statement: Dml, params: dict[str, Any]) -> sqlite3.Cursor:
        """Run `statement` in `conn`'s transaction."""
        compiled = self._compile(statement, params)
        return sqlite_driver(conn).execute(compiled.sql, compiled.parameters(params))


def sqlite_driver(conn: Connection) -> sqlite3.Connection:
    """pysqlite's own connection under `conn` (also once `conn` is detached from the pool)."""
    driver = conn.connection.dbapi_connection
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
