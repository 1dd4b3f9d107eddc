"""POST /v1/generations/{id}/cancel (daguerre extension), with the embedded worker: a queued job ends
at once, a running one stops at its next engine step with no output, neither is charged; a finished
one is answered unchanged; unknown and foreign ids are 404."""

from __future__ import annotations

import threading
import time

import pytest

from daguerre.wire import Reason, State
from support.helpers import make_key, make_worker, scripted_models

pytestmark = pytest.mark.both_databases

BALANCE = 1_000_000
CANCELLED = {"state": "failed", "failure_code": "generation_failed", "failure_reason": Reason.CANCELLED}


@pytest.fixture
def metered(store):
    account = store.accounts.create("metered", balance=BALANCE)
    _, token = store.accounts.create_key(account.id)
    return account.id, {"Authorization": f"Bearer {token}"}


def create(client, auth, **body):
    response = client.post("/v1/generations", json={"prompt": "a cat", **body}, headers=auth)
    assert response.status_code == 201, response.text
    return response.json()["id"]


def cancel(client, auth, generation_id):
    return client.post(f"/v1/generations/{generation_id}/cancel", headers=auth)


def shown(body):
    return {key: body[key] for key in CANCELLED}


def test_a_queued_job_ends_at_once_and_its_hold_is_released(client, store, metered, worker):
    account_id, auth = metered
    generation_id = create(client, auth)
    assert store.accounts.get(account_id).reserved > 0
    response = cancel(client, auth, generation_id)
    assert response.status_code == 200
    assert shown(response.json()) == CANCELLED and response.json()["output"] == []
    assert shown(client.get(f"/v1/generations/{generation_id}", headers=auth).json()) == CANCELLED
    account = store.accounts.get(account_id)
    assert (account.balance, account.reserved) == (BALANCE, 0)
    assert worker.run_once() is None  # nothing left to claim


def test_a_running_job_stops_at_its_next_step_without_output_or_charge(
    client, store, settings, blobs, metered, tmp_path
):
    account_id, auth = metered
    runs = tmp_path / "runs"
    models = scripted_models(tmp_path / "slow.toml", steps=100, step_s=0.05, runs_dir=str(runs))
    slow = settings.model_copy(update={"models_file": models})
    worker = make_worker(slow, store, blobs)
    generation_id = create(client, auth)
    outcome = []
    thread = threading.Thread(target=lambda: outcome.append(worker.run_once()))
    thread.start()
    deadline = time.monotonic() + 20
    while not runs.exists() or not any(path.stat().st_size >= 3 for path in runs.iterdir()):
        assert time.monotonic() < deadline, "the engine never started"
        time.sleep(0.02)
    response = cancel(client, auth, generation_id)
    cancelled_at = time.monotonic()
    assert response.status_code == 200 and shown(response.json()) == CANCELLED
    thread.join(10)
    stopped_after = time.monotonic() - cancelled_at
    assert not thread.is_alive() and outcome[0].state is None  # dropped: nothing written
    (run,) = runs.iterdir()
    assert run.stat().st_size < 100  # it did not run to the end
    assert stopped_after < 1.0  # the next step or so (a lease check every 0.25 s), not a lease renewal
    assert not [key for key in blobs.list_blobs("outputs/")], "no output was stored"
    record = store.generations.get(generation_id)
    assert (record.state, record.failure_reason) == (State.FAILED, Reason.CANCELLED)
    account = store.accounts.get(account_id)
    assert (account.balance, account.reserved) == (BALANCE, 0)


def test_a_finished_job_is_answered_unchanged(client, store, metered, worker):
    account_id, auth = metered
    generation_id = create(client, auth)
    assert worker.run_once().state == State.COMPLETED
    balance = store.accounts.get(account_id).balance
    for _ in range(2):
        response = cancel(client, auth, generation_id)
        assert response.status_code == 200
        body = response.json()
        assert (body["state"], body["failure_code"]) == ("completed", None) and len(body["output"]) == 1
    assert store.accounts.get(account_id).balance == balance < BALANCE  # charged once, never refunded


def test_cancelling_twice_changes_nothing_the_second_time(client, metered):
    _, auth = metered
    generation_id = create(client, auth)
    first = cancel(client, auth, generation_id).json()
    second = cancel(client, auth, generation_id).json()
    assert first == second


@pytest.mark.parametrize("generation_id", ["d290f1ee-6c54-4b01-90e6-d701748f0851", "not-a-uuid"])
def test_unknown_ids_are_404(client, auth, generation_id):
    response = cancel(client, auth, generation_id)
    assert (response.status_code, response.json()) == (404, {"detail": "Generation not found"})


def test_another_account_s_job_is_404_and_untouched(client, store, auth):
    generation_id = create(client, auth)
    stranger = make_key(store, "stranger")
    response = cancel(client, stranger.headers, generation_id)
    assert (response.status_code, response.json()) == (404, {"detail": "Generation not found"})
    assert store.generations.get(generation_id).state == State.QUEUED
    assert cancel(client, {}, generation_id).status_code == 401
