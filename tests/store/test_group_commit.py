"""The group committer: concurrent writes share a transaction; a failing one fails alone."""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
import sqlalchemy as sa

from daguerre.store.generations import NewGeneration
from daguerre.store.schema import accounts
from daguerre.wire import GenerationCreate

pytestmark = pytest.mark.both_databases


def new(account_id):
    return NewGeneration(str(uuid.uuid4()), account_id, GenerationCreate(prompt="x"), "1:1", (), 3)


def test_concurrent_creates_all_land(store, key):
    with ThreadPoolExecutor(16) as pool:
        records = list(pool.map(lambda _: store.generations.create(new(key.account_id)), range(200)))
    assert len({r.id for r in records}) == 200
    assert all(store.generations.get(r.id) is not None for r in records)


def test_a_failing_operation_does_not_take_its_batch_down(store, key):
    gate = threading.Event()

    def blocker(conn):
        gate.wait(5)  # hold the committer so the next operations queue into one batch
        return "first"

    def failing(conn):
        conn.execute(
            accounts.insert().values(id="dup", name="dup", status="active", created_at=sa.func.now())
        )
        conn.execute(
            accounts.insert().values(id="dup", name="dup2", status="active", created_at=sa.func.now())
        )

    first = store.db.submit(blocker)
    creates = [store.generations.submit_create(new(key.account_id)) for _ in range(5)]
    bad = store.db.submit(failing)
    more = [store.generations.submit_create(new(key.account_id)) for _ in range(5)]
    gate.set()
    assert first.result(5) == "first"
    with pytest.raises(sa.exc.IntegrityError):
        bad.result(5)
    for future in creates + more:
        assert store.generations.get(future.result(5).id) is not None
    with store.db.read() as conn:  # the failing operation left nothing behind
        assert conn.execute(sa.select(accounts.c.id).where(accounts.c.id == "dup")).first() is None
