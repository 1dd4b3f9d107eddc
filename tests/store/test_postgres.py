"""PostgreSQL's own code paths, under concurrency: creates racing for money and concurrency slots,
claims skipping each other's rows, workers of several processes, the queue's notifications, and
migrations started by several processes at once. Each store here has its own engine, pool and
listener, as separate processes would."""

from __future__ import annotations

import random
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from daguerre.store import Store, open_store
from daguerre.store.generations import NewGeneration, Refusal
from daguerre.store.schema import accounts, ledger, metadata
from daguerre.store.schema import generations as g
from daguerre.wire import FailureCode, GenerationCreate, State
from support.helpers import make_key, make_worker
from support.postgres import drop_database, fresh_database

PRICE = 40_400


@pytest.fixture
def database() -> str:
    return "postgresql"


@pytest.fixture
def other_stores(settings) -> Iterator[Callable[[int], list[Store]]]:
    """More stores on the test's database, each with its own connections: other processes."""
    opened: list[Store] = []

    def open_more(n: int) -> list[Store]:
        more = [open_store(settings.resolved_database_url, migrate=False) for _ in range(n)]
        opened.extend(more)
        return more

    yield open_more
    for store in opened:
        store.close()


def new(account_id: str, *, price: int = 0, limit: int | None = None, max_attempts: int = 3) -> NewGeneration:
    return NewGeneration(
        id=str(uuid.uuid4()),
        account_id=account_id,
        request=GenerationCreate(prompt="a cat"),
        aspect_ratio="1:1",
        input_keys=(),
        max_attempts=max_attempts,
        price=price,
        metered=price > 0,
        concurrency_limit=limit,
    )


def at_once(calls: list[Callable[[], Any]]) -> list[Any]:
    """Run the calls on threads of their own, released together."""
    barrier = threading.Barrier(len(calls))

    def run(call: Callable[[], Any]) -> Any:
        barrier.wait()
        return call()

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(run, calls))


def test_forty_concurrent_creates_against_a_balance_for_ten_accept_exactly_ten(store, other_stores):
    account = store.accounts.create("metered", balance=10 * PRICE)
    stores = [store, *other_stores(3)]
    calls = [(lambda s=stores[i % 4]: s.generations.create(new(account.id, price=PRICE))) for i in range(40)]
    results = at_once(calls)
    assert sum(result == Refusal.BALANCE for result in results) == 30
    created = [result for result in results if not isinstance(result, Refusal)]
    assert len(created) == 10
    assert (store.accounts.get(account.id).balance, store.accounts.get(account.id).reserved) == (
        10 * PRICE,
        10 * PRICE,
    )
    with store.db.read() as conn:
        reserves = conn.execute(sa.select(ledger.c.generation_id).where(ledger.c.kind == "reserve")).all()
    assert sorted(row.generation_id for row in reserves) == sorted(record.id for record in created)


def test_forty_concurrent_creates_never_pass_the_concurrency_limit(store, other_stores):
    """The count of active generations and the insert are one step per account: the account's
    row lock (without it, creates counted 9 side by side and 11-14 got through)."""
    key = make_key(store)
    stores = [store, *other_stores(3)]
    calls = [(lambda s=stores[i % 4]: s.generations.create(new(key.account_id, limit=10))) for i in range(40)]
    results = at_once(calls)
    assert sum(result == Refusal.CONCURRENCY for result in results) == 30
    assert store.generations.count_active(key.account_id, up_to=100) == 10


def test_a_claim_skips_a_row_that_another_claim_has_locked(store):
    key = make_key(store)
    first = store.generations.create(new(key.account_id))
    second = store.generations.create(new(key.account_id))
    claimed: list[Any] = []
    claim = threading.Thread(target=lambda: claimed.append(store.generations.claim("w2", 30)))
    with store.db.engine.connect() as other, other.begin():
        # Another worker's claim, half way: it has locked the oldest job and not yet updated it.
        other.execute(sa.select(g.c.id).where(g.c.id == first.id).with_for_update())
        claim.start()
        claim.join(5)
        waited = claim.is_alive()
    claim.join()
    assert not waited  # a claim never waits for a row that another claim holds
    assert claimed[0].id == second.id
    assert store.generations.claim("w3", 30).id == first.id


def test_workers_of_several_processes_run_every_job_exactly_once(settings, store, blobs, other_stores):
    """Idle workers with stores of their own are woken by creates made elsewhere (NOTIFY), claim
    side by side, and each job is claimed once and completed once."""
    key = make_key(store)
    workers = [
        make_worker(settings, worker_store, blobs, worker_id=f"host{i}:0")
        for i, worker_store in enumerate(other_stores(3))
    ]
    stop = threading.Event()
    threads = [threading.Thread(target=worker.run, args=(stop,)) for worker in workers]
    for thread in threads:
        thread.start()
    try:
        ids: list[str] = []
        for _ in range(6):  # bursts, each into idle workers
            ids += [store.generations.create(new(key.account_id)).id for _ in range(5)]
            time.sleep(0.05)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            records = [store.generations.get(generation_id) for generation_id in ids]
            if all(record.state == State.COMPLETED for record in records):
                break
            time.sleep(0.05)
    finally:
        stop.set()
        for thread in threads:
            thread.join(10)
    assert [record.state for record in records] == [State.COMPLETED] * 30
    assert {record.attempts for record in records} == {1}  # claimed once each
    assert len({record.lease_owner for record in records}) >= 2  # side by side
    assert all(len(record.output_keys) == 1 for record in records)


def test_a_create_in_another_process_wakes_an_idle_watcher_at_once(store, other_stores):
    key = make_key(store)
    (other,) = other_stores(1)
    watcher = store.db.watcher()
    try:
        assert not watcher.wait(timeout=0.1, poll_s=10)
        delays = []
        for _ in range(5):
            started = time.monotonic()
            other.generations.create(new(key.account_id))
            assert watcher.wait(timeout=5, poll_s=10)  # nothing is polled: a notification woke it
            delays.append(time.monotonic() - started)
        assert sorted(delays)[2] < 0.1, delays
    finally:
        watcher.close()


def test_a_hand_back_in_another_process_wakes_an_idle_watcher(store, other_stores):
    key = make_key(store)
    (other,) = other_stores(1)
    job = other.generations.create(new(key.account_id))
    claimed = other.generations.claim("w", 30)
    watcher = store.db.watcher()
    try:
        assert not watcher.wait(timeout=0.1, poll_s=10)
        other.generations.renew(job.id, claimed.lease_token, 30)
        assert not watcher.wait(timeout=0.2, poll_s=10)  # a renewal does not wake anyone
        assert other.generations.hand_back(job.id, claimed.lease_token, count_attempt=False)
        assert watcher.wait(timeout=5, poll_s=10)
    finally:
        watcher.close()
    assert store.generations.claim("w2", 30).id == job.id


def test_the_listener_listens_again_after_its_session_is_cut(store, other_stores):
    key = make_key(store)
    (other,) = other_stores(1)
    watcher = store.db.watcher()
    try:
        with other.db.engine.connect() as conn, conn.begin():
            ended = conn.execute(
                sa.text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND query LIKE 'LISTEN%'"
                )
            ).all()
        assert len(ended) == 1
        assert watcher.wait(timeout=5, poll_s=10)  # listening again: jobs may have come meanwhile
        other.generations.create(new(key.account_id))
        assert watcher.wait(timeout=5, poll_s=10)
    finally:
        watcher.close()


def test_creates_claims_settlements_and_reaping_at_once_keep_the_ledger_exact(store, other_stores):
    """Writers that lock rows of both tables, in several processes at once: creates (account row,
    then new rows), completions and failures (the generation, then its account), reaping (many
    generations, then their accounts). No deadlock, no error, and every account's balance and hold
    match its ledger."""
    names = ["a", "b", "c"]
    metered = {name: store.accounts.create(name, balance=1000 * PRICE) for name in names}
    stores = [store, *other_stores(3)]
    errors: list[BaseException] = []
    stop = threading.Event()

    def guarded(loop: Callable[[random.Random], None], seed: int) -> Callable[[], None]:
        def run() -> None:
            rng = random.Random(seed)
            try:
                while not stop.is_set():
                    loop(rng)
            except BaseException as exc:
                errors.append(exc)

        return run

    def create(s: Store) -> Callable[[random.Random], None]:
        def loop(rng: random.Random) -> None:
            account = metered[rng.choice(names)]
            s.generations.create(new(account.id, price=PRICE, limit=rng.choice([None, 5, 50])))

        return loop

    def work(s: Store, name: str) -> Callable[[random.Random], None]:
        def loop(rng: random.Random) -> None:
            record = s.generations.claim(name, lease_s=rng.choice([0.05, 30]))
            if record is None:
                return
            token = record.lease_token
            roll = rng.random()
            if roll < 0.5:
                s.generations.complete(record.id, token, (f"outputs/{record.id}/{token}/0.png",))
            elif roll < 0.7:
                s.generations.fail(record.id, token, FailureCode.GENERATION_FAILED, "no")
            elif roll < 0.8:
                s.generations.fail(record.id, token, FailureCode.BUDGET_EXHAUSTED, "no")
            elif roll < 0.9:
                s.generations.hand_back(record.id, token, count_attempt=True)
            # else: the worker "dies" and its lease lapses

        return loop

    def reap(s: Store) -> Callable[[random.Random], None]:
        def loop(rng: random.Random) -> None:
            s.generations.reap(active_job_ttl_s=rng.choice([0.2, 3600]))
            time.sleep(0.01)

        return loop

    loops = [create(s) for s in stores] * 2 + [work(s, f"w{i}") for i, s in enumerate(stores)]
    loops += [reap(stores[1]), reap(stores[2])]
    threads = [threading.Thread(target=guarded(loop, seed)) for seed, loop in enumerate(loops)]
    for thread in threads:
        thread.start()
    time.sleep(2.0)
    stop.set()
    for thread in threads:
        thread.join(30)
    assert errors == []
    with store.db.read() as conn:
        settled = {
            row.generation_id: row.kind
            for row in conn.execute(sa.select(ledger).where(ledger.c.kind != "reserve"))
        }
        reserves = conn.execute(sa.select(ledger).where(ledger.c.kind == "reserve")).all()
        captures = conn.execute(sa.select(ledger).where(ledger.c.kind == "capture")).all()
        rows = conn.execute(sa.select(accounts.c.id, accounts.c.balance, accounts.c.reserved)).all()
        states = dict(conn.execute(sa.select(g.c.id, g.c.state)).all())
    assert len(reserves) > 50 and len(settled) > 20  # the run did something
    for row in rows:
        held = sum(r.amount for r in reserves if r.account_id == row.id and r.generation_id not in settled)
        captured = sum(r.amount for r in captures if r.account_id == row.id)
        assert (row.balance, row.reserved) == (1000 * PRICE - captured, held)
    for generation_id, kind in settled.items():  # settled exactly when it ended
        assert states[generation_id] in (State.COMPLETED, State.FAILED), kind
    for r in reserves:
        assert (states[r.generation_id] in (State.COMPLETED, State.FAILED)) == (r.generation_id in settled)


MIGRATE = """
import sys
from daguerre.store.migrate import upgrade
print("ready", flush=True)
sys.stdin.readline()
upgrade(sys.argv[1])
"""


def test_processes_migrating_at_once_take_turns(postgres_url):
    """Each process's migration waits for the advisory lock, then finds the work done (without
    the lock they collided: duplicate tables and types, or a second alembic_version row)."""
    url = fresh_database(postgres_url)
    try:
        processes = [
            subprocess.Popen(
                [sys.executable, "-c", MIGRATE, url],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            for _ in range(4)
        ]
        for process in processes:  # every one has imported everything: now they start together
            assert process.stdout is not None and process.stdout.readline() == "ready\n"
        for process in processes:
            assert process.stdin is not None
            process.stdin.write("go\n")
            process.stdin.flush()
        outputs = [process.communicate(timeout=60)[0] for process in processes]
        assert [process.returncode for process in processes] == [0] * 4, outputs
        engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
        with engine.connect() as conn:
            assert compare_metadata(MigrationContext.configure(conn), metadata) == []
            assert len(conn.exec_driver_sql("SELECT version_num FROM alembic_version").all()) == 1
        engine.dispose()
    finally:
        drop_database(url)
