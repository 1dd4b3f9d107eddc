"""/metrics in the Prometheus text format, parsed with prometheus_client's own parser after a few
jobs: generations created and finished by model and failure code, the queue per model, time queued
and processing, engine seconds per step, HTTP requests by route and status, process metrics; the
optional bearer token; a worker process's own metrics port."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from daguerre.api import create_app
from support.helpers import free_port, scripted_models_each, subprocess_env


@pytest.fixture
def models_file(tmp_path):
    return scripted_models_each(
        tmp_path / "models.toml",
        {"uni-1": {"steps": 3}, "uni-1-max": {"mode": "job_failure", "code": "content_moderated"}},
    )


def samples(client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    found = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(found, name: str, **labels: str) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.mark.both_databases
def test_counters_match_the_jobs_run(client, auth, worker):
    before = samples(client)
    for model in ("uni-1", "uni-1", "uni-1-max"):
        response = client.post("/v1/generations", json={"prompt": "a cat", "model": model}, headers=auth)
        assert response.status_code == 201
    while worker.run_once() is not None:
        pass
    queued = client.post("/v1/generations", json={"prompt": "later"}, headers=auth)
    assert queued.status_code == 201
    time.sleep(0.05)
    after = samples(client)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("daguerre_generations_created_total", model="uni-1", type="image") == 3
    assert delta("daguerre_generations_created_total", model="uni-1-max", type="image") == 1
    assert (
        delta("daguerre_generations_finished_total", model="uni-1", state="completed", failure_code="") == 2
    )
    assert (
        delta(
            "daguerre_generations_finished_total",
            model="uni-1-max",
            state="failed",
            failure_code="content_moderated",
        )
        == 1
    )
    assert delta("daguerre_generation_queued_seconds_count", model="uni-1") == 2
    assert delta("daguerre_generation_processing_seconds_count", model="uni-1-max") == 1
    assert delta("daguerre_engine_step_seconds_count", model="uni-1") == 6  # 3 steps, 2 jobs
    # the queue, read from the store at the scrape
    assert value(after, "daguerre_queue_depth", model="uni-1") == 1
    assert 0 < value(after, "daguerre_queue_oldest_age_seconds", model="uni-1") < 60
    assert value(after, "daguerre_queue_depth", model="uni-1-max") == 0
    # HTTP requests by route template (never the raw path) and status
    assert delta("daguerre_http_requests_total", route="/v1/generations", method="POST", status="201") == 4
    assert delta("daguerre_http_request_seconds_count", route="/v1/generations", method="POST") == 4
    generation_id = queued.json()["id"]
    client.get(f"/v1/generations/{generation_id}", headers=auth)
    client.get("/nowhere")
    last = samples(client)
    route = "/v1/generations/{generation_id}"
    assert value(last, "daguerre_http_requests_total", route=route, method="GET", status="200") >= 1
    assert value(last, "daguerre_http_requests_total", route="unmatched", method="GET", status="404") >= 1
    assert not any(generation_id in labels_value for (_, labels) in last for _, labels_value in labels)
    assert value(last, "process_cpu_seconds_total") > 0


@pytest.mark.both_databases
def test_a_metrics_token_protects_the_endpoint(settings, store, blobs):
    guarded = settings.model_copy(update={"metrics_token": "s3cret"})
    with TestClient(create_app(guarded, store, blobs)) as client:
        assert client.get("/metrics").status_code == 401
        assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
        answer = client.get("/metrics", headers={"Authorization": "Bearer s3cret"})
        assert answer.status_code == 200 and "daguerre_queue_depth" in answer.text


def test_a_worker_process_serves_its_own_metrics(tmp_path, models_file):
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "daguerre.cli",
            "worker",
            "--data-dir",
            str(tmp_path / "w"),
            "--models",
            str(models_file),
            "--metrics-port",
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=subprocess_env(),
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                text = httpx.get(f"http://127.0.0.1:{port}/metrics").text
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline and process.poll() is None
                time.sleep(0.1)
        names = {family.name for family in text_string_to_metric_families(text)}
        assert {
            "daguerre_generations_finished",
            "daguerre_engine_step_seconds",
            "process_cpu_seconds",
        } <= names
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(30)
