"""The worker loop: outcomes, failure codes, lease loss, shutdown hand-back, dispatch latency."""

from __future__ import annotations

import base64
import io
import threading
import time

import httpx
import pytest
from PIL import Image

from daguerre.settings import Settings
from daguerre.wire import FailureCode, State
from support.engines import prompt_colour
from support.helpers import make_worker, scripted_models

pytestmark = pytest.mark.both_databases


def create(client, auth, **body):
    response = client.post("/v1/generations", json={"prompt": "a red circle", **body}, headers=auth)
    assert response.status_code == 201, response.text
    return response.json()["id"]


def fetch(client, auth, generation_id):
    return client.get(f"/v1/generations/{generation_id}", headers=auth).json()


def worker_with(tmp_path, store, blobs, **options):
    settings = Settings(
        data_dir=tmp_path / "data", models_file=scripted_models(tmp_path / "m.toml", **options)
    )
    return make_worker(settings, store, blobs)


def test_run_once_completes_a_job_and_the_url_serves_the_image(client, auth, worker):
    generation_id = create(client, auth, aspect_ratio="16:9", output_format="png")
    outcome = worker.run_once()
    assert (outcome.generation_id, outcome.state) == (generation_id, State.COMPLETED)
    body = fetch(client, auth, generation_id)
    assert body["state"] == "completed" and body["failure_code"] is None
    [output] = body["output"]
    assert output["type"] == "image"
    image = Image.open(io.BytesIO(client.get(output["url"]).content))
    assert image.format == "PNG" and image.size == (88, 48)  # 16:9 at 64² pixels, multiple 8
    assert image.getpixel((0, 0)) == prompt_colour("a red circle")
    assert worker.run_once() is None


def test_jpeg_output(client, auth, worker):
    generation_id = create(client, auth, output_format="jpeg", aspect_ratio="1:3")
    worker.run_once()
    url = fetch(client, auth, generation_id)["output"][0]["url"]
    assert ".jpg?" in url
    response = client.get(url)
    assert response.headers["content-type"] == "image/jpeg"
    image = Image.open(io.BytesIO(response.content))
    assert image.format == "JPEG" and image.size == (40, 120)


def test_an_engine_exception_fails_with_generation_failed(client, auth, tmp_path, store, blobs):
    worker = worker_with(tmp_path, store, blobs, mode="raise")
    generation_id = create(client, auth)
    assert worker.run_once().failure_code == FailureCode.GENERATION_FAILED
    body = fetch(client, auth, generation_id)
    assert body["state"] == "failed" and body["output"] == []
    assert (body["failure_code"], body["failure_reason"]) == ("generation_failed", "Generation failed")


def test_a_job_failure_keeps_its_code_and_reason(client, auth, tmp_path, store, blobs):
    worker = worker_with(tmp_path, store, blobs, mode="job_failure", code="corrupt_input")
    generation_id = create(client, auth)
    worker.run_once()
    body = fetch(client, auth, generation_id)
    assert (body["failure_code"], body["failure_reason"]) == ("corrupt_input", "scripted corrupt_input")


def test_a_transient_failure_is_retried_until_attempts_run_out(client, auth, tmp_path, store, blobs):
    worker = worker_with(tmp_path, store, blobs, mode="transient")
    generation_id = create(client, auth)
    assert worker.run_once().state == State.QUEUED
    assert worker.run_once().state == State.QUEUED
    assert worker.run_once().state == State.FAILED
    assert store.generations.get(generation_id).attempts == 3
    assert fetch(client, auth, generation_id)["failure_code"] == "generation_failed"


def test_a_missing_python_engine_fails_clearly(client, auth, tmp_path, store, blobs):
    from support.helpers import write_models_file

    models = write_models_file(
        tmp_path / "m.toml", {"*": {"engine": "python", "entrypoint": "nowhere.engines:Nope"}}
    )
    worker = make_worker(Settings(data_dir=tmp_path / "data", models_file=models), store, blobs)
    generation_id = create(client, auth)
    worker.run_once()
    body = fetch(client, auth, generation_id)
    assert body["failure_code"] == "generation_failed"
    assert "nowhere.engines:Nope" in body["failure_reason"]


def test_an_edit_chains_from_an_earlier_generation(client, auth, worker):
    first = create(client, auth, aspect_ratio="2:1", prompt="a blue sky")
    worker.run_once()
    edit = create(client, auth, type="image_edit", prompt="make it green", source={"generation_id": first})
    worker.run_once()
    body = fetch(client, auth, edit)
    assert body["state"] == "completed", body
    image = Image.open(io.BytesIO(client.get(body["output"][0]["url"]).content))
    assert image.size == (80, 40)  # the source's 2:1 kept, under the model's 64² pixels


def test_an_edit_from_base64_data(client, auth, worker):
    buffer = io.BytesIO()
    Image.new("RGB", (30, 60), "red").save(buffer, format="PNG")
    data = base64.b64encode(buffer.getvalue()).decode()
    edit = create(
        client, auth, type="image_edit", prompt="x", source={"data": data, "media_type": "image/png"}
    )
    worker.run_once()
    body = fetch(client, auth, edit)
    image = Image.open(io.BytesIO(client.get(body["output"][0]["url"]).content))
    assert image.size == (32, 64)  # 30x60 rounded to the model's multiple of 8


def test_a_generation_id_reference_must_be_completed_and_owned(client, auth, store):
    from support.helpers import make_key

    pending = create(client, auth)
    response = client.post(
        "/v1/generations",
        headers=auth,
        json={"prompt": "x", "type": "image_edit", "source": {"generation_id": pending}},
    )
    assert (response.status_code, response.json()) == (400, {"detail": "source: generation is not completed"})
    other = make_key(store, "globex")
    response = client.post(
        "/v1/generations",
        headers=other.headers,
        json={"prompt": "x", "image_ref": [{"generation_id": pending}]},
    )
    assert (response.status_code, response.json()) == (400, {"detail": "image_ref[0]: generation not found"})


def test_corrupt_stored_input_fails_with_corrupt_input(client, auth, worker):
    data = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10).decode()
    edit = create(
        client, auth, type="image_edit", prompt="x", source={"data": data, "media_type": "image/png"}
    )
    worker.run_once()
    assert fetch(client, auth, edit)["failure_code"] == "corrupt_input"


def run_in_thread(worker):
    result = {}
    thread = threading.Thread(target=lambda: result.setdefault("outcome", worker.run_once()))
    thread.start()
    while worker.running is None and thread.is_alive():
        time.sleep(0.005)
    return thread, result


def output_files(blobs):
    return list((blobs.root / "outputs").rglob("*.*")) if (blobs.root / "outputs").exists() else []


def test_a_result_finished_after_the_job_was_reaped_is_dropped(client, auth, tmp_path, store, blobs):
    worker = worker_with(tmp_path, store, blobs, steps=10, step_s=0.05)
    generation_id = create(client, auth)
    thread, result = run_in_thread(worker)
    assert [r.id for r in store.generations.reap(active_job_ttl_s=0.001)] == [generation_id]
    thread.join(10)
    assert result["outcome"].state is None
    body = fetch(client, auth, generation_id)
    assert (body["state"], body["output"]) == ("failed", [])
    assert output_files(blobs) == []


def test_a_worker_that_loses_its_lease_stops_mid_run(client, auth, tmp_path, store, blobs):
    settings = Settings(
        data_dir=tmp_path / "data",
        lease_s=0.3,
        models_file=scripted_models(tmp_path / "m.toml", steps=200, step_s=0.05),
    )
    slow = make_worker(settings, store, blobs, "slow")
    generation_id = create(client, auth)
    thread, result = run_in_thread(slow)
    # The slow worker is paused (as if SIGSTOPped): its lease lapses and another worker claims the job.
    with store.db.write() as conn:
        from daguerre.store.schema import generations as g

        conn.execute(g.update().where(g.c.id == generation_id).values(lease_expires_at=g.c.created_at))
    thief = store.generations.claim("thief", 30)
    assert thief.id == generation_id and thief.attempts == 2
    started = time.monotonic()
    thread.join(10)
    assert time.monotonic() - started < 2  # stopped at the next step after a failed renewal, not after 10 s
    assert result["outcome"].state is None
    assert store.generations.get(generation_id).lease_owner == "thief"
    assert output_files(blobs) == []


def test_shutdown_hands_the_running_job_back_after_the_grace_time(client, auth, tmp_path, store, blobs):
    settings = Settings(
        data_dir=tmp_path / "data",
        models_file=scripted_models(tmp_path / "m.toml", steps=100, step_s=0.05),
        shutdown_grace_s=0.2,
    )
    worker = make_worker(settings, store, blobs)
    generation_id = create(client, auth)
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,))
    thread.start()
    while worker.running is None:
        time.sleep(0.01)
    stop.set()
    thread.join(10)
    assert not thread.is_alive()
    record = store.generations.get(generation_id)
    assert (record.state, record.attempts, record.lease_token) == (State.QUEUED, 0, None)


def test_shutdown_lets_a_short_job_finish(client, auth, tmp_path, store, blobs):
    settings = Settings(
        data_dir=tmp_path / "data",
        models_file=scripted_models(tmp_path / "m.toml", steps=5, step_s=0.05),
        shutdown_grace_s=30,
    )
    worker = make_worker(settings, store, blobs)
    generation_id = create(client, auth)
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,))
    thread.start()
    while worker.running is None:
        time.sleep(0.01)
    stop.set()
    thread.join(10)
    assert store.generations.get(generation_id).state == State.COMPLETED


def test_an_idle_worker_picks_up_new_work_within_milliseconds(client, auth, worker, store):
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,))
    thread.start()
    time.sleep(0.3)  # idle now
    delays = []
    for _ in range(5):
        generation_id = create(client, auth)
        while (record := store.generations.get(generation_id)).started_at is None:
            time.sleep(0.002)
        delays.append((record.started_at - record.created_at).total_seconds())
        while store.generations.get(generation_id).state != State.COMPLETED:
            time.sleep(0.005)
    stop.set()
    thread.join(5)
    assert sorted(delays)[2] < 0.2, delays  # median; the benchmark measures it properly


def test_output_urls_are_fresh_on_every_get(client, auth, worker):
    generation_id = create(client, auth)
    worker.run_once()
    first = fetch(client, auth, generation_id)["output"][0]["url"]
    time.sleep(1.1)
    second = fetch(client, auth, generation_id)["output"][0]["url"]
    assert first != second
    assert httpx.URL(second).params["X-Amz-Expires"] == "3600"
    assert client.get(first).status_code == client.get(second).status_code == 200
