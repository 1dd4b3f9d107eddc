"""Crash safety with real processes: a worker SIGKILLed mid-job, and a worker paused past its lease.

In both cases the job completes exactly once, on another worker; the first worker's result never
lands.
"""

from __future__ import annotations

import signal
import time

import httpx
import pytest

from daguerre.store import open_store
from daguerre.wire import State
from support.helpers import scripted_models, start_server, start_worker

LEASE = {"DAGUERRE_LEASE_S": "1.5"}


@pytest.fixture
def setup(tmp_path):
    runs = tmp_path / "runs"
    models = scripted_models(tmp_path / "models.toml", steps=30, step_s=0.1, runs_dir=str(runs))
    server = start_server(tmp_path / "data", models, workers=0, **LEASE)
    yield server, models, runs
    server.stop()


def create(server):
    response = httpx.post(
        server.api_url + "/generations",
        json={"prompt": "a slow one"},
        headers={"Authorization": f"Bearer {server.key}"},
    )
    assert response.status_code == 201
    return response.json()["id"]


def state(server, generation_id):
    return httpx.get(
        f"{server.api_url}/generations/{generation_id}", headers={"Authorization": f"Bearer {server.key}"}
    ).json()


def wait_for(predicate, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("condition not reached")


def record(server, generation_id):
    store = open_store(f"sqlite:///{server.data_dir / 'daguerre.db'}", migrate=False)
    try:
        return store.generations.get(generation_id)
    finally:
        store.close()


def output_files(server):
    outputs = server.data_dir / "blobs" / "outputs"
    return sorted(p for p in outputs.rglob("*") if p.is_file()) if outputs.exists() else []


def test_a_killed_worker_s_job_completes_once_on_another_worker(setup):
    server, models, runs = setup
    first = start_worker(server.data_dir, models, **LEASE)
    generation_id = create(server)
    wait_for(lambda: state(server, generation_id)["state"] == "processing")
    wait_for(lambda: list(runs.glob(f"{generation_id}.*")))
    first.send_signal(signal.SIGKILL)
    first.wait()

    second = start_worker(server.data_dir, models, **LEASE)
    try:
        done = wait_for(lambda: (s := state(server, generation_id))["state"] in ("completed", "failed") and s)
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(30)
    assert done["state"] == "completed" and len(done["output"]) == 1
    assert httpx.get(done["output"][0]["url"]).status_code == 200
    row = record(server, generation_id)
    assert row.attempts == 2
    assert row.lease_owner.endswith(f":{second.pid}:0")
    assert (
        len({path.name.split(".")[1] for path in runs.glob(f"{generation_id}.*")}) == 2
    )  # two processes ran it
    assert len(output_files(server)) == 1


def test_a_paused_worker_cannot_complete_a_job_another_worker_took_over(setup):
    server, models, runs = setup
    paused = start_worker(server.data_dir, models, **LEASE)
    generation_id = create(server)
    wait_for(lambda: list(runs.glob(f"{generation_id}.*")))
    paused.send_signal(signal.SIGSTOP)  # a zombie: alive, but its lease lapses
    taker = start_worker(server.data_dir, models, **LEASE)
    try:
        done = wait_for(lambda: (s := state(server, generation_id))["state"] == "completed" and s)
        owner = record(server, generation_id).lease_owner
        paused.send_signal(signal.SIGCONT)  # it wakes up and finds its lease gone
        time.sleep(4.0)  # longer than the rest of its run would take
    finally:
        for process in (paused, taker):
            process.send_signal(signal.SIGCONT)
            process.send_signal(signal.SIGTERM)
            process.wait(30)
    assert owner.endswith(f":{taker.pid}:0")
    after = state(server, generation_id)
    assert after["state"] == "completed"
    assert record(server, generation_id).state == State.COMPLETED
    assert record(server, generation_id).lease_owner == owner  # the paused worker changed nothing
    assert len(output_files(server)) == 1
    assert httpx.get(after["output"][0]["url"]).status_code == 200
    assert done["id"] == generation_id


def test_sigterm_hands_the_running_job_back(tmp_path):
    runs = tmp_path / "runs"
    models = scripted_models(tmp_path / "models.toml", steps=600, step_s=0.05, runs_dir=str(runs))
    server = start_server(tmp_path / "data", models, workers=0, DAGUERRE_SHUTDOWN_GRACE_S="0.5")
    try:
        worker = start_worker(server.data_dir, models, DAGUERRE_SHUTDOWN_GRACE_S="0.5")
        generation_id = create(server)
        wait_for(lambda: list(runs.glob(f"{generation_id}.*")))
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(30) == 0
        row = record(server, generation_id)
        assert (row.state, row.attempts, row.lease_token) == (State.QUEUED, 0, None)
    finally:
        server.stop()


def test_with_the_default_lease_a_killed_worker_s_job_runs_again_within_ten_seconds(tmp_path):
    runs = tmp_path / "runs"
    models = scripted_models(tmp_path / "models.toml", steps=300, step_s=0.1, runs_dir=str(runs))
    server = start_server(tmp_path / "data", models, workers=0)  # no lease setting: the default
    first = start_worker(server.data_dir, models)
    spare = None
    try:
        generation_id = create(server)
        wait_for(lambda: list(runs.glob(f"{generation_id}.{first.pid}.*")))
        spare = start_worker(server.data_dir, models)  # idle, waiting for work
        time.sleep(3.0)  # the spare is up; the first worker has renewed its lease meanwhile
        first.send_signal(signal.SIGKILL)
        first.wait()
        killed_at = time.monotonic()
        wait_for(lambda: list(runs.glob(f"{generation_id}.{spare.pid}.*")), timeout=30)
        rerun_after = time.monotonic() - killed_at
        assert rerun_after <= 10.0, f"the job ran again {rerun_after:.1f} s after the kill"
        assert record(server, generation_id).attempts == 2
    finally:
        for process in (first, spare):
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGKILL)
                process.wait()
        server.stop()


def test_pending_webhooks_survive_a_killed_server_and_are_delivered_after_restart(tmp_path):
    import json

    from support.receiver import webhook_receiver

    hooks = {
        "DAGUERRE_URL_ALLOW_HTTP": "true",
        "DAGUERRE_URL_ALLOWED_NETWORKS": json.dumps(["127.0.0.1/32"]),
        "DAGUERRE_WEBHOOK_RETRY_BASE_S": "0.3",
    }
    models = scripted_models(tmp_path / "models.toml")
    with webhook_receiver() as receiver:
        receiver.statuses = [503] * 1000  # down, for now
        server = start_server(tmp_path / "data", models, workers=1, **hooks)
        try:
            auth = {"Authorization": f"Bearer {server.key}"}
            created = httpx.post(
                server.api_url + "/generations",
                json={"prompt": "x", "callback_url": receiver.url},
                headers=auth,
            )
            generation_id = created.json()["id"]
            first = receiver.wait_for(1)[0]
            deadline = time.monotonic() + 10
            while not httpx.get(
                f"{server.api_url}/generations/{generation_id}/webhooks", headers=auth
            ).json()["data"][0]["attempts"]:  # one failed attempt recorded: the delivery is pending
                assert time.monotonic() < deadline
                time.sleep(0.05)
        finally:
            server.stop(signal.SIGKILL)
        receiver.statuses = []  # the receiver is back
        seen = len(receiver.received)
        restarted = start_server(tmp_path / "data", models, workers=1, **hooks)
        try:
            delivered = receiver.wait_for(seen + 1, timeout_s=20)[-1]
            assert delivered.headers["webhook-id"] == first.headers["webhook-id"]  # the same message
            assert json.loads(delivered.body)["id"] == generation_id
            response = httpx.get(f"{restarted.api_url}/generations/{generation_id}/webhooks", headers=auth)
            (delivery,) = response.json()["data"]
            assert delivery["state"] == "delivered" and delivery["attempts"][-1]["status"] == 200
            assert {attempt["status"] for attempt in delivery["attempts"][:-1]} == {503}
        finally:
            restarted.stop()
