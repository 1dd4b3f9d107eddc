"""Writes from an event loop on SQLite: committed on the loop, together, and never waiting there for
the write lock (Database.run / LoopCommitter)."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
import uuid
from dataclasses import fields
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects.sqlite import dialect as sqlite_dialect

from daguerre.store import db as db_module
from daguerre.store import open_store
from daguerre.store.generations import _COUNT_ACTIVE, GenerationRecord, GenerationSummary, NewGeneration
from daguerre.store.schema import accounts
from daguerre.wire import GenerationCreate


def new(account_id: str) -> NewGeneration:
    return NewGeneration(str(uuid.uuid4()), account_id, GenerationCreate(prompt="x"), "1:1", (), 3)


def test_creates_from_one_loop_iteration_share_one_commit_on_the_loop(store, key):
    async def create_many() -> tuple[list, int, int]:
        creates = [store.generations.create_async(new(key.account_id)) for _ in range(20)]
        *records, writer = await asyncio.gather(*creates, store.db.run(lambda conn: threading.get_ident()))
        return records, writer, threading.get_ident()

    commits_before = store.db.changes.count
    records, writer, loop_thread = asyncio.run(create_many())
    assert writer == loop_thread  # not the committer thread
    assert store.db.changes.count == commits_before + 1
    assert all(isinstance(r, GenerationSummary) for r in records)
    assert all(store.generations.get(r.id) is not None for r in records)


def test_the_wal_is_checkpointed_by_the_checkpointer_thread_not_in_the_loop_commits(store, key):
    """The loop's connection never checkpoints (that stalled the loop for milliseconds); the
    Checkpointer's thread copies the log into the database file soon after the commits."""
    database = str(store.db.url.database)

    async def create_batches() -> int:
        for _ in range(5):
            await asyncio.gather(*(store.generations.create_async(new(key.account_id)) for _ in range(10)))
        return await store.db.run(lambda conn: conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar())

    assert asyncio.run(create_batches()) == 0  # the loop's connection leaves checkpoints to the thread

    def rows_in_the_database_file() -> int:
        # immutable=1 reads the database file alone: what is still only in the WAL is not seen. It
        # takes no lock either, so a read while the checkpointer is copying pages may find the file
        # half-written ("malformed"): that read does not count, the next one will.
        file = sqlite3.connect(f"file:{database}?immutable=1", uri=True)
        try:
            return int(file.execute("SELECT count(*) FROM generations").fetchone()[0])
        except sqlite3.DatabaseError:
            return -1
        finally:
            file.close()

    deadline = time.monotonic() + 10
    while (rows := rows_in_the_database_file()) != 50 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert rows == 50
    assert store.db._on_loop is not None and store.db._on_loop.checkpointer.checkpoints >= 1
    store.close()  # stops the thread
    assert not any(thread.name == "wal-checkpoint" for thread in threading.enumerate())


def test_a_held_write_lock_sends_the_batch_to_the_committer_thread_and_the_loop_runs_on(store, key):
    database = str(store.db.url.database)
    holder = sqlite3.connect(database, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")  # another writer (a worker, another process) holds the lock
    release = threading.Timer(0.5, lambda: holder.execute("COMMIT"))

    async def scenario() -> tuple[int, GenerationSummary]:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        ticking = asyncio.create_task(ticker())
        create = asyncio.create_task(store.generations.create_async(new(key.account_id)))
        await asyncio.sleep(0.3)
        assert not create.done()  # waiting for the lock, on the committer thread
        ticks_while_locked = ticks
        release.start()
        record = await asyncio.wait_for(create, 10)
        ticking.cancel()
        return ticks_while_locked, record

    try:
        ticks_while_locked, record = asyncio.run(scenario())
    finally:
        release.join()
        holder.close()
    assert ticks_while_locked >= 5  # the loop kept running while the lock was held
    assert isinstance(record, GenerationSummary)
    assert store.generations.get(record.id) is not None

    # The loop's own connection is still usable once the lock is free.
    async def again() -> object:
        return await store.generations.create_async(new(key.account_id))

    commits_before = store.db.changes.count
    assert isinstance(asyncio.run(again()), GenerationSummary)
    assert store.db.changes.count == commits_before + 1


def test_a_failing_operation_fails_alone(store, key):
    def failing(conn):
        for name in ("dup", "dup2"):
            row = {"id": "dup", "name": name, "status": "active", "created_at": sa.func.now()}
            conn.execute(accounts.insert().values(**row))

    async def scenario() -> list:
        return await asyncio.gather(
            store.generations.create_async(new(key.account_id)),
            store.db.run(failing),
            store.generations.create_async(new(key.account_id)),
            return_exceptions=True,
        )

    first, bad, last = asyncio.run(scenario())
    assert isinstance(bad, sa.exc.IntegrityError)
    for record in (first, last):
        assert isinstance(record, GenerationSummary)
        assert store.generations.get(record.id) is not None
    with store.db.read() as conn:  # the failing operation left nothing behind
        assert conn.execute(sa.select(accounts.c.id).where(accounts.c.id == "dup")).first() is None


def test_summary_is_what_get_says_and_only_for_the_owner(store, key):
    record = store.generations.create(new(key.account_id))
    assert isinstance(record, GenerationRecord)
    summary = store.generations.summary(record.id, key.account_id)
    assert summary is not None
    for field in fields(summary):
        assert getattr(summary, field.name) == getattr(record, field.name)
    assert store.generations.summary(record.id, str(uuid.uuid4())) is None
    assert store.generations.summary(str(uuid.uuid4()), key.account_id) is None


@pytest.mark.parametrize("count", [1, 3])
def test_concurrency_count_is_answered_from_the_index(store, key, count):
    for _ in range(count):
        store.generations.create(new(key.account_id))
    assert store.generations.count_active(key.account_id, up_to=10) == count
    assert store.generations.count_active(key.account_id, up_to=2) == min(count, 2)
    sql = _COUNT_ACTIVE.compile(dialect=sqlite_dialect(paramstyle="named"))
    params = {**sql.params, "account_id": key.account_id, "limit": 10}
    with store.db.read() as conn:
        plan = " ".join(str(row[-1]) for row in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}", params))
    assert "COVERING INDEX ix_generations_account_state_created" in plan  # no visit to the table


def test_the_log_file_is_cut_back_when_it_starts_over(settings, monkeypatch):
    """SQLite never shrinks the -wal file by itself; the journal size limit does, at the first
    commit after a fully checkpointed log starts over."""
    monkeypatch.setattr(db_module, "WAL_SIZE_LIMIT_BYTES", 64 * 1024)
    store = open_store(settings.resolved_database_url)
    wal = settings.data_dir / "daguerre.db-wal"
    try:
        with store.db.write() as conn:  # one transaction of about 400 pages, under autocheckpoint
            conn.execute(accounts.insert(), [_account(i) for i in range(4000)])
        assert wal.stat().st_size > 1024 * 1024
        checkpoint = sqlite3.connect(settings.data_dir / "daguerre.db")
        assert checkpoint.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[0] == 0
        checkpoint.close()
        with store.db.write() as conn:  # starts the log over
            conn.execute(accounts.insert(), [_account(4000)])
        assert wal.stat().st_size <= 64 * 1024
    finally:
        store.close()


def _account(i: int) -> dict[str, object]:
    return {"id": str(uuid.uuid4()), "name": f"account-{i}-" + "x" * 60, "created_at": datetime.now(UTC)}
