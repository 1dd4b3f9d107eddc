"""The generations table as the queue: claims, leases, fencing, attempts, reaping (real SQLite)."""

from __future__ import annotations

import threading
import time
import uuid
from datetime import timedelta

import pytest
import sqlalchemy as sa

from daguerre.store.clock import utcnow
from daguerre.store.generations import NewGeneration
from daguerre.store.schema import generations
from daguerre.wire import FailureCode, GenerationCreate, Progress, State
from support.helpers import make_key
from support.plans import seeks_account_index

pytestmark = pytest.mark.both_databases


def new(store, account_id, prompt="a cat", max_attempts=3, **request):
    return store.generations.create(
        NewGeneration(
            id=str(uuid.uuid4()),
            account_id=account_id,
            request=GenerationCreate(prompt=prompt, **request),
            aspect_ratio="1:1",
            input_keys=(),
            max_attempts=max_attempts,
        )
    )


def shift(store, generation_id, **columns):
    """Move a row's timestamps into the past, as if time had passed."""
    with store.db.write() as conn:
        row = conn.execute(sa.select(generations).where(generations.c.id == generation_id)).mappings().one()
        values = {name: row[name] - delta for name, delta in columns.items()}
        conn.execute(generations.update().where(generations.c.id == generation_id).values(**values))


def test_claim_takes_the_oldest_job_and_sets_the_lease(store, key):
    first, second = new(store, key.account_id), new(store, key.account_id)
    claimed = store.generations.claim("w1", lease_s=30)
    assert claimed.id == first.id
    assert claimed.state == State.PROCESSING
    assert claimed.attempts == 1 and claimed.lease_owner == "w1"
    assert uuid.UUID(claimed.lease_token)
    assert claimed.started_at is not None and claimed.lease_expires_at > claimed.started_at
    assert store.generations.claim("w2", lease_s=30).id == second.id
    assert store.generations.claim("w3", lease_s=30) is None


def test_claim_prefers_the_account_with_fewer_running_jobs(store):
    busy = make_key(store, "busy")
    quiet = make_key(store, "quiet")
    new(store, busy.account_id)
    new(store, busy.account_id)
    late = new(store, quiet.account_id)
    assert store.generations.claim("w1", 30).account_id == busy.account_id
    assert store.generations.claim("w2", 30).id == late.id  # busy already has a running job


def test_completion_needs_the_current_lease_token(store, key):
    job = new(store, key.account_id)
    claimed = store.generations.claim("w1", 30)
    assert not store.generations.complete(job.id, str(uuid.uuid4()), ("outputs/x.png",))
    assert store.generations.complete(job.id, claimed.lease_token, ("outputs/x.png",))
    assert not store.generations.complete(job.id, claimed.lease_token, ("outputs/y.png",))  # already terminal
    assert not store.generations.fail(job.id, claimed.lease_token, FailureCode.GENERATION_FAILED, "late")
    done = store.generations.get(job.id)
    assert done.state == State.COMPLETED and done.output_keys == ("outputs/x.png",)
    assert done.lease_token is None and done.finished_at is not None


def test_a_lapsed_lease_makes_the_job_claimable_again_and_fences_the_old_worker(store, key):
    job = new(store, key.account_id)
    stale = store.generations.claim("w1", 30)
    assert store.generations.claim("w2", 30) is None
    shift(store, job.id, lease_expires_at=timedelta(seconds=31))
    fresh = store.generations.claim("w2", 30)
    assert fresh.id == job.id and fresh.attempts == 2 and fresh.lease_token != stale.lease_token
    assert fresh.started_at == stale.started_at  # the TTL counts from the first start
    assert not store.generations.renew(job.id, stale.lease_token, 30)
    assert not store.generations.complete(job.id, stale.lease_token, ("outputs/stale.png",))
    assert store.generations.renew(job.id, fresh.lease_token, 30)
    assert store.generations.complete(job.id, fresh.lease_token, ("outputs/fresh.png",))
    assert store.generations.get(job.id).output_keys == ("outputs/fresh.png",)


def test_attempts_run_out_and_the_reaper_fails_the_job(store, key):
    job = new(store, key.account_id, max_attempts=2)
    for _ in range(2):
        assert store.generations.claim("w", 30).id == job.id
        shift(store, job.id, lease_expires_at=timedelta(seconds=31))
    assert store.generations.claim("w", 30) is None  # no attempt left
    reaped = store.generations.reap(active_job_ttl_s=3600)
    assert [r.id for r in reaped] == [job.id]
    failed = store.generations.get(job.id)
    assert (failed.state, failed.failure_code) == (State.FAILED, FailureCode.GENERATION_FAILED)
    assert "no attempt is left" in failed.failure_reason
    assert store.generations.reap(active_job_ttl_s=3600) == []


def test_the_active_job_ttl_counts_from_the_first_start(store, key):
    waiting = new(store, key.account_id)
    running = new(store, key.account_id)
    claimed = store.generations.claim("w", 30)
    assert claimed.id == waiting.id
    shift(store, waiting.id, started_at=timedelta(seconds=3601))
    shift(store, running.id, created_at=timedelta(days=2))  # old but never started: not reaped
    reaped = store.generations.reap(active_job_ttl_s=3600)
    assert [r.id for r in reaped] == [waiting.id]
    assert store.generations.get(waiting.id).failure_code == FailureCode.GENERATION_FAILED
    assert "active-job limit of 3600 s" in store.generations.get(waiting.id).failure_reason
    assert not store.generations.renew(waiting.id, claimed.lease_token, 30)  # the worker learns it is over
    assert store.generations.get(running.id).state == State.QUEUED


def test_hand_back_returns_the_job_with_or_without_using_an_attempt(store, key):
    job = new(store, key.account_id)
    claimed = store.generations.claim("w", 30)
    assert store.generations.hand_back(job.id, claimed.lease_token, count_attempt=False)
    back = store.generations.get(job.id)
    assert (back.state, back.attempts, back.lease_token) == (State.QUEUED, 0, None)
    claimed = store.generations.claim("w", 30)
    assert store.generations.hand_back(job.id, claimed.lease_token, count_attempt=True)
    assert store.generations.get(job.id).attempts == 1
    assert not store.generations.hand_back(job.id, claimed.lease_token, count_attempt=True)


def test_concurrent_claims_never_take_a_job_twice(settings, key):
    from daguerre.store import open_store

    stores = [open_store(settings.resolved_database_url) for _ in range(4)]
    jobs = {new(stores[0], key.account_id, prompt=f"job {i}").id for i in range(60)}
    claimed: list[str] = []
    lock = threading.Lock()

    def claim_all(store, name):
        while (record := store.generations.claim(name, 30)) is not None:
            with lock:
                claimed.append(record.id)
            assert store.generations.complete(record.id, record.lease_token, ())

    threads = [threading.Thread(target=claim_all, args=(s, f"w{i}")) for i, s in enumerate(stores * 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(claimed) == sorted(jobs)
    for store in stores:
        store.close()


def test_concurrent_claims_each_get_a_job_while_jobs_remain(settings, key):
    """8 workers claim 5 jobs each, all at once, from 60 waiting: none is ever answered None
    (on PostgreSQL a claim skips the rows other claims hold, rather than lose the race for one)."""
    from daguerre.store import open_store

    stores = [open_store(settings.resolved_database_url, migrate=False) for _ in range(4)]
    for i in range(60):
        new(stores[0], key.account_id, prompt=f"job {i}")
    barrier = threading.Barrier(8)
    claims: list[object] = []

    def claim_five(store, name):
        barrier.wait()
        for _ in range(5):
            claims.append(store.generations.claim(name, 30))

    threads = [threading.Thread(target=claim_five, args=(s, f"w{i}")) for i, s in enumerate(stores * 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for store in stores:
        store.close()
    assert None not in claims
    assert len({record.id for record in claims}) == 40


def test_watcher_wakes_on_a_commit_from_another_connection(settings, store, key):
    from daguerre.store import open_store

    other = open_store(settings.resolved_database_url, migrate=False)
    watcher = store.db.watcher()
    assert not watcher.wait(timeout=0.05, poll_s=0.005)
    threading.Timer(0.1, lambda: new(other, key.account_id)).start()
    started = time.monotonic()
    assert watcher.wait(timeout=5, poll_s=0.005)
    assert time.monotonic() - started < 1.0
    watcher.close()
    other.close()


def test_watcher_wakes_at_once_on_a_commit_in_the_same_process(store, key):
    watcher = store.db.watcher()
    threading.Timer(0.05, lambda: new(store, key.account_id)).start()
    started = time.monotonic()
    assert watcher.wait(timeout=5, poll_s=10)  # the slow poll cannot be what woke it
    assert time.monotonic() - started < 1.0
    watcher.close()


def test_active_jobs_are_counted_up_to_the_limit_and_finished_ones_not_at_all(store, key):
    """The concurrency check costs the same however many jobs an account has waiting or had."""
    made = [new(store, key.account_id) for _ in range(5)]
    assert store.generations.count_active(key.account_id, up_to=3) == 3
    assert store.generations.count_active(key.account_id, up_to=10) == 5
    claimed = store.generations.claim("w1", lease_s=30)
    assert claimed.id == made[0].id
    assert store.generations.count_active(key.account_id, up_to=10) == 5  # processing counts
    assert store.generations.complete(claimed.id, claimed.lease_token, ("out/key.png",))
    assert store.generations.count_active(key.account_id, up_to=10) == 4
    indexes = {ix.name: [c.name for c in ix.columns] for ix in generations.indexes}
    assert indexes["ix_generations_account_state_created"] == ["account_id", "state", "created_at"]


def test_the_usage_report_seeks_the_account_index_by_state_and_time(store, key):
    """The one account index serves the usage report too: every state is listed, so the database
    seeks (account, state, created_at range) instead of reading all of the account's rows."""
    for _ in range(3):
        new(store, key.account_id)
    statements = []

    def capture(conn, cursor, statement, parameters, context, executemany):
        statements.append((statement, parameters))

    now = utcnow()
    sa.event.listen(store.db.engine, "before_cursor_execute", capture)
    try:
        hour = timedelta(hours=1)
        rows = store.generations.usage(key.account_id, now - hour, now + hour, "model")
    finally:
        sa.event.remove(store.db.engine, "before_cursor_execute", capture)
    assert rows == [("uni-1", "queued", 3, 0)]
    (statement, parameters), *_ = [(s, p) for s, p in statements if "FROM generations" in s]
    seeks, plan = seeks_account_index(store, statement, parameters)
    assert seeks, plan


def test_progress_and_previews_belong_to_the_running_attempt(store, key):
    job = new(store, key.account_id)
    first = store.generations.claim("w1", lease_s=30)
    assert store.generations.report_progress(job.id, first.lease_token, 3, 8) is True
    assert store.generations.progress(job.id) == Progress(3, 8, None)
    assert store.generations.preview(job.id) is None
    assert store.generations.report_progress(job.id, first.lease_token, 4, 8, b"\xff\xd8jpeg") is True
    assert store.generations.report_progress(job.id, first.lease_token, 5, 8) is True  # the preview stays
    assert store.generations.progress(job.id) == Progress(5, 8, 4)
    assert store.generations.preview(job.id) == (4, b"\xff\xd8jpeg")
    assert store.generations.report_progress(job.id, "not-the-lease", 6, 8, b"other") is False  # fenced
    assert store.generations.preview(job.id) == (4, b"\xff\xd8jpeg")
    # a new attempt starts with nothing shown
    store.generations.hand_back(job.id, first.lease_token, count_attempt=False)
    second = store.generations.claim("w2", lease_s=30)
    assert store.generations.progress(job.id) is None and store.generations.preview(job.id) is None
    # and an ended generation keeps no preview, however it ended
    store.generations.report_progress(job.id, second.lease_token, 1, 8, b"\xff\xd8second")
    assert store.generations.complete(job.id, second.lease_token, ("outputs/x.png",))
    assert store.generations.preview(job.id) is None
    cancelled = new(store, key.account_id)
    third = store.generations.claim("w3", lease_s=30)
    store.generations.report_progress(cancelled.id, third.lease_token, 1, 8, b"\xff\xd8third")
    assert store.generations.cancel(cancelled.id, key.account_id, "Cancelled by request")
    assert store.generations.preview(cancelled.id) is None
