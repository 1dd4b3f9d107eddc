"""Liveness and readiness: /healthz answers while the process runs; /readyz is 503 with a list of
what is not ready while `daguerre serve` loads its models and when the store cannot be reached,
200 otherwise."""

from __future__ import annotations

import signal
import time

import httpx
import pytest
import sqlalchemy as sa

from support.helpers import scripted_models, start_server
from support.postgres import _admin


def test_readyz_waits_for_the_models_and_jobs_wait_for_the_workers(tmp_path):
    models = scripted_models(tmp_path / "models.toml", load_s=3.0)
    live = start_server(tmp_path / "data", models)
    try:
        assert httpx.get(live.base_url + "/healthz").json() == {"status": "ok"}
        early = httpx.get(live.base_url + "/readyz")
        assert early.status_code == 503
        assert early.json()["not_ready"] == ["models: loading"]
        assert early.json()["checks"] == {
            "store": "ok",
            "blobs": "ok",
            "moderation": "ok",
            "models": "loading",
        }
        # a job created meanwhile waits in the queue and runs once the workers start
        auth = {"Authorization": f"Bearer {live.key}"}
        created = httpx.post(live.api_url + "/generations", json={"prompt": "a cat"}, headers=auth)
        assert created.status_code == 201
        deadline = time.monotonic() + 30
        while (ready := httpx.get(live.base_url + "/readyz")).status_code != 200:
            assert time.monotonic() < deadline, live.log()
            time.sleep(0.1)
        assert ready.json() == {
            "status": "ready",
            "checks": {"store": "ok", "blobs": "ok", "moderation": "ok", "models": "ok"},
        }
        generation_id = created.json()["id"]
        while (
            state := httpx.get(f"{live.api_url}/generations/{generation_id}", headers=auth).json()["state"]
        ) != "completed":
            assert time.monotonic() < deadline and state in ("queued", "processing"), state
            time.sleep(0.1)
        assert "loaded moderation (ok) and uni-1 (ok) for 1 worker(s)" in live.log()
    finally:
        assert live.stop() in (0, -signal.SIGTERM), live.log()


def test_a_model_that_cannot_load_keeps_the_process_unready_with_the_reason(tmp_path):
    models = scripted_models(tmp_path / "models.toml", load_s="not a number")
    live = start_server(tmp_path / "data", models)
    try:
        deadline = time.monotonic() + 30
        while (answer := httpx.get(live.base_url + "/readyz")).json()["checks"]["models"] == "loading":
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert answer.status_code == 503
        (problem,) = answer.json()["not_ready"]
        assert problem.startswith("models: uni-1 failed to load:")
    finally:
        assert live.stop() in (0, -signal.SIGTERM), live.log()


@pytest.mark.parametrize("database", ["postgresql"], indirect=True)
def test_readyz_is_503_while_the_store_cannot_be_reached(client, store_url, postgres_url):
    assert client.get("/readyz").json() == {"status": "ready", "checks": {"store": "ok", "blobs": "ok"}}
    name = sa.make_url(store_url).database
    _admin(
        postgres_url,
        f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false',
        f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'",  # noqa: S608
    )
    try:
        answer = client.get("/readyz")
        assert answer.status_code == 503
        (problem,) = answer.json()["not_ready"]
        assert problem.startswith("store: ") and "not currently accepting connections" in problem
        assert client.get("/healthz").status_code == 200  # alive, not ready
    finally:
        _admin(postgres_url, f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
    assert client.get("/readyz").status_code == 200
