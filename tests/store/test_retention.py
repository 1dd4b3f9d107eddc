"""The store's side of retention: finding expired generations through the account index, page by
page, and marking them purged exactly once (on SQLite and PostgreSQL)."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
import sqlalchemy as sa

from daguerre.store.generations import NewGeneration
from daguerre.wire import FailureCode, GenerationCreate, State
from support.clock import Clock
from support.helpers import make_key
from support.plans import seeks_account_index

pytestmark = pytest.mark.both_databases


def finished(store, account_id, clock, state=State.COMPLETED):
    """A generation created and finished now (by the clock), with one output key when completed."""
    record = store.generations.create(
        NewGeneration(
            id=str(uuid.uuid4()),
            account_id=account_id,
            request=GenerationCreate(prompt="a cat"),
            aspect_ratio="1:1",
            input_keys=(),
            max_attempts=3,
        )
    )
    claimed = store.generations.claim("w", lease_s=30)
    assert claimed.id == record.id
    if state == State.COMPLETED:
        assert store.generations.complete(record.id, claimed.lease_token, (f"outputs/{record.id}/t/0.png",))
    else:
        assert store.generations.fail(record.id, claimed.lease_token, FailureCode.GENERATION_FAILED, "x")
    return record.id


def test_expired_pages_through_every_account_and_terminal_state(store, monkeypatch):
    clock = Clock().install(monkeypatch)
    one, two = make_key(store, "one"), make_key(store, "two")
    old = [
        finished(store, key.account_id, clock, state)
        for key in (one, two)
        for state in State
        if state in (State.COMPLETED, State.FAILED)
        for _ in range(3)
    ]
    clock.advance(days=10)
    recent = finished(store, one.account_id, clock)
    cutoff = clock.now - timedelta(days=5)
    batches = list(store.generations.expired(cutoff, batch=2))
    assert all(1 <= len(batch) <= 2 for batch in batches)
    found = [expired.id for batch in batches for expired in batch]
    assert sorted(found) == sorted(old) and recent not in found
    # From a creation time on only: nothing of the old ones.
    assert list(store.generations.expired(cutoff, created_from=clock.now - timedelta(days=1))) == []


def test_mark_purged_answers_only_the_rows_it_marked(store, monkeypatch):
    clock = Clock().install(monkeypatch)
    key = make_key(store)
    done = finished(store, key.account_id, clock)
    waiting = store.generations.create(
        NewGeneration(
            id=str(uuid.uuid4()),
            account_id=key.account_id,
            request=GenerationCreate(prompt="a dog"),
            aspect_ratio="1:1",
            input_keys=(),
            max_attempts=3,
        )
    ).id
    assert store.generations.mark_purged([done, waiting], clock.now) == {done}  # never a live one
    assert store.generations.mark_purged([done], clock.now) == set()  # another process was first
    row = store.generations.get(done)
    assert (row.state, row.output_keys, row.purged_at) == (State.COMPLETED, (), clock.now)
    assert store.generations.summary(done, key.account_id).output_keys == ()
    assert store.generations.get(waiting).purged_at is None
    assert list(store.generations.expired(clock.now + timedelta(days=1))) == []


def test_expired_seeks_the_account_index(store, monkeypatch):
    clock = Clock().install(monkeypatch)
    key = make_key(store)
    for _ in range(3):
        finished(store, key.account_id, clock)
    statements = []

    def capture(conn, cursor, statement, parameters, context, executemany):
        statements.append((statement, parameters))

    sa.event.listen(store.db.engine, "before_cursor_execute", capture)
    try:
        pages = list(
            store.generations.expired(
                clock.now + timedelta(seconds=1), created_from=clock.now - timedelta(days=2), batch=2
            )
        )
    finally:
        sa.event.remove(store.db.engine, "before_cursor_execute", capture)
    assert sum(len(page) for page in pages) == 3
    queries = [(s, p) for s, p in statements if "FROM generations" in s]
    assert len(queries) >= 3  # a first page, a next page, and the pages of the failed state
    for statement, parameters in queries:
        seeks, plan = seeks_account_index(store, statement, parameters)
        assert seeks, plan
