"""`Cancel-After` on POST /v1/generations (daguerre extension): a generation not ended by its
deadline fails with generation_failed "Deadline exceeded" and is refunded, whether it was running
(the worker stops at its next step), queued (the reaper), or claimed late (before any engine work)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from daguerre.store.schema import generations
from daguerre.wire import Reason, State
from support.helpers import make_worker, scripted_models

pytestmark = pytest.mark.both_databases

BALANCE = 1_000_000


@pytest.fixture
def metered(store):
    account = store.accounts.create("metered", balance=BALANCE)
    _, token = store.accounts.create_key(account.id)
    return account.id, {"Authorization": f"Bearer {token}"}


def create(client, auth, cancel_after="5s"):
    response = client.post(
        "/v1/generations", json={"prompt": "a cat"}, headers={**auth, "Cancel-After": cancel_after}
    )
    assert response.status_code == 201, response.text
    return response.json()["id"]


def move_deadline(store, generation_id, seconds_from_now):
    with store.db.engine.begin() as conn:
        conn.execute(
            generations.update()
            .where(generations.c.id == generation_id)
            .values(deadline_at=datetime.now(UTC) + timedelta(seconds=seconds_from_now))
        )


def deadline_of(store, generation_id):
    with store.db.engine.connect() as conn:
        return conn.execute(
            sa.select(generations.c.deadline_at).where(generations.c.id == generation_id)
        ).scalar()


def assert_expired(store, account_id, generation_id):
    record = store.generations.get(generation_id)
    assert (record.state, record.failure_reason) == (State.FAILED, Reason.DEADLINE_EXCEEDED)
    assert record.failure_code.value == "generation_failed"
    account = store.accounts.get(account_id)
    assert (account.balance, account.reserved) == (BALANCE, 0)


def test_the_header_sets_the_deadline(client, store, metered):
    _, auth = metered
    before = datetime.now(UTC)
    generation_id = create(client, auth, "5m")
    deadline = deadline_of(store, generation_id)
    assert before + timedelta(minutes=5) <= deadline <= datetime.now(UTC) + timedelta(minutes=5)
    assert deadline_of(store, create(client, auth, "90")) - before < timedelta(seconds=95)
    no_header = client.post("/v1/generations", json={"prompt": "x"}, headers=auth).json()["id"]
    assert deadline_of(store, no_header) is None


def test_a_running_generation_stops_at_its_deadline(client, store, settings, blobs, metered, tmp_path):
    account_id, auth = metered
    runs = tmp_path / "runs"
    models = scripted_models(tmp_path / "slow.toml", steps=100, step_s=0.05, runs_dir=str(runs))
    worker = make_worker(settings.model_copy(update={"models_file": models}), store, blobs)
    generation_id = create(client, auth)
    move_deadline(store, generation_id, 0.5)  # the header's minimum is 5 s: the test needs less
    outcome = []
    thread = threading.Thread(target=lambda: outcome.append(worker.run_once()))
    thread.start()
    thread.join(10)
    assert not thread.is_alive() and outcome[0].state == State.FAILED
    (run,) = runs.iterdir()
    assert 3 <= run.stat().st_size < 100  # it ran until the deadline, then stopped
    assert_expired(store, account_id, generation_id)
    assert not list(blobs.list_blobs("outputs/"))


def test_a_queued_generation_fails_when_the_reaper_passes(client, store, settings, metered):
    account_id, auth = metered
    generation_id = create(client, auth)
    assert store.generations.reap(settings.active_job_ttl_s) == []  # not yet
    move_deadline(store, generation_id, -1)
    (reaped,) = store.generations.reap(settings.active_job_ttl_s)
    assert (reaped.id, reaped.reason) == (generation_id, Reason.DEADLINE_EXCEEDED)
    assert_expired(store, account_id, generation_id)


def test_one_claimed_after_its_deadline_fails_before_any_engine_work(client, store, metered, worker):
    account_id, auth = metered
    generation_id = create(client, auth)
    move_deadline(store, generation_id, -1)
    outcome = worker.run_once()
    assert (outcome.generation_id, outcome.state) == (generation_id, State.FAILED)
    assert_expired(store, account_id, generation_id)


def test_one_that_ends_in_time_is_not_touched(client, store, metered, worker):
    _, auth = metered
    generation_id = create(client, auth, "1h")
    assert worker.run_once().state == State.COMPLETED
    assert store.generations.get(generation_id).state == State.COMPLETED


@pytest.mark.parametrize("value", ["4s", "0", "abc", "1d", "2h", "-5", "5 m", ""])
def test_a_bad_duration_is_400(client, auth, value):
    response = client.post("/v1/generations", json={"prompt": "x"}, headers={**auth, "Cancel-After": value})
    assert (response.status_code, response.json()) == (
        400,
        {"detail": "Cancel-After: must be a duration from 5 s to 3600 s (e.g. 30s, 5m, 1h, or seconds)"},
    )
