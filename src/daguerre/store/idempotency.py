"""Idempotency keys: a create that carries an `Idempotency-Key` is made at most once per account,
endpoint and key within KEEP.

    claim(conn, account_id, key, resource_id, status_code)   # in the create's transaction: True if
                                                              # this create may go on, False if the
                                                              # key is taken (nothing was written)
    unclaim(conn, account_id, key)                            # the create was refused after all
    store.idempotency.find(account_id, "generations", "k")    # the earlier create, or None
    store.idempotency.purge(before)                           # the sweeper: keys older than KEEP

The claim is one INSERT ... ON CONFLICT in the create's own transaction, before the resource's row:
two concurrent creates with one key cannot both succeed (the unique key makes the second wait for
the first's commit on PostgreSQL; SQLite writes one transaction at a time), and a key whose create
was refused (limits, balance) is released in the same transaction, so a retry may succeed later. A
key older than KEEP is taken over by the next create that carries it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection

from daguerre.store.clock import utcnow
from daguerre.store.db import Database
from daguerre.store.schema import idempotency_keys as k

KEEP = timedelta(hours=24)

_FIND = sa.select(k.c.request_hash, k.c.resource_id, k.c.status_code, k.c.created_at).where(
    k.c.account_id == sa.bindparam("account_id"),
    k.c.scope == sa.bindparam("scope"),
    k.c.key == sa.bindparam("key"),
    k.c.created_at >= sa.bindparam("since"),
)


@dataclass(frozen=True)
class IdempotencyKey:
    """What a request's Idempotency-Key asks: its text, the endpoint, and a hash of the request."""

    scope: str
    key: str
    request_hash: str


@dataclass(frozen=True)
class KeyRecord:
    request_hash: str
    resource_id: str
    status_code: int
    created_at: datetime


def claim(conn: Connection, account_id: str, key: IdempotencyKey, resource_id: str, status_code: int) -> bool:
    """Record `key` for the resource being created in this transaction; False when the account
    already used it within KEEP (then nothing was written)."""
    now = utcnow()
    values = {
        "account_id": account_id,
        "scope": key.scope,
        "key": key.key,
        "request_hash": key.request_hash,
        "resource_id": resource_id,
        "status_code": status_code,
        "created_at": now,
    }
    insert = sqlite_insert(k) if conn.dialect.name == "sqlite" else postgresql_insert(k)
    statement = insert.values(values).on_conflict_do_update(
        index_elements=[k.c.account_id, k.c.scope, k.c.key],
        set_={name: insert.excluded[name] for name in values if name not in ("account_id", "scope", "key")},
        where=k.c.created_at < now - KEEP,  # only an expired key is taken over
    )
    # RETURNING rather than rowcount: psycopg does not count an INSERT ... ON CONFLICT DO UPDATE.
    return conn.execute(statement.returning(k.c.key)).first() is not None


def unclaim(conn: Connection, account_id: str, key: IdempotencyKey) -> None:
    conn.execute(k.delete().where(k.c.account_id == account_id, k.c.scope == key.scope, k.c.key == key.key))


class IdempotencyStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    def find(self, account_id: str, key: IdempotencyKey) -> KeyRecord | None:
        """The create that used `key` within KEEP, or None."""
        params = {"account_id": account_id, "scope": key.scope, "key": key.key, "since": utcnow() - KEEP}
        row = self._db.fetch_one(_FIND, params)
        return None if row is None else KeyRecord(**row)

    def purge(self, before: datetime | None = None) -> int:
        """Delete the keys recorded before `before` (default: KEEP ago); how many."""
        cutoff = before or utcnow() - KEEP
        with self._db.write() as conn:
            return int(conn.execute(k.delete().where(k.c.created_at < cutoff)).rowcount)
