"""`Prefer: wait` on POST /v1/generations (daguerre extension, RFC 7240): the 201 comes once the
generation has ended or the time is up; the waiting requests share one watcher that reads the store
only when something changed (and once a second), never a poll per request."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from starlette.requests import Request

from daguerre.api import create_app
from daguerre.api.waiting import MAX_WAIT_S, requested_wait
from support import helpers
from support.helpers import scripted_models, uvicorn_thread

pytestmark = pytest.mark.both_databases


@pytest.fixture
def running_worker(settings, store, blobs, tmp_path):
    """A worker thread with an engine that takes about 0.3 s a job."""
    models = scripted_models(tmp_path / "m.toml", steps=3, step_s=0.1)
    with helpers.running_worker(
        settings.model_copy(update={"models_file": models, "idle_poll_s": 0.05}), store, blobs
    ) as worker:
        yield worker


def test_the_answer_comes_when_the_generation_has_ended(client, auth, running_worker):
    started = time.monotonic()
    response = client.post("/v1/generations", json={"prompt": "a cat"}, headers={**auth, "Prefer": "wait=30"})
    elapsed = time.monotonic() - started
    assert response.status_code == 201 and response.headers["preference-applied"] == "wait=30"
    body = response.json()
    assert body["state"] == "completed" and len(body["output"]) == 1
    assert elapsed < 10  # the job's 0.3 s and the hand-offs, not the 30 s
    assert client.get(body["output"][0]["url"]).status_code == 200


def test_the_answer_comes_when_the_time_is_up(client, auth):
    started = time.monotonic()
    response = client.post("/v1/generations", json={"prompt": "a cat"}, headers={**auth, "Prefer": "wait=1"})
    elapsed = time.monotonic() - started
    assert response.status_code == 201 and response.json()["state"] == "queued"  # no worker runs
    assert response.headers["preference-applied"] == "wait=1"
    assert 0.9 <= elapsed < 5


def test_without_the_preference_nothing_waits_and_nothing_is_said(client, auth):
    response = client.post("/v1/generations", json={"prompt": "a cat"}, headers=auth)
    assert response.status_code == 201 and "preference-applied" not in response.headers


def test_many_waiting_requests_share_one_watcher_that_reads_only_on_changes(
    settings, store, blobs, auth, monkeypatch
):
    reads = []
    states = store.generations.states
    monkeypatch.setattr(store.generations, "states", lambda ids: reads.append(len(ids)) or states(ids))
    with uvicorn_thread(create_app(settings, store, blobs)) as url:

        def create(_: int) -> httpx.Response:
            with httpx.Client(base_url=url, timeout=30) as http:
                return http.post(
                    "/v1/generations", json={"prompt": "x"}, headers={**auth, "Prefer": "wait=3"}
                )

        with ThreadPoolExecutor(10) as pool:
            answers = list(pool.map(create, range(10)))
    assert [answer.json()["state"] for answer in answers] == ["queued"] * 10
    # Each request's own first look, then the watcher's shared reads: about one a second over
    # the 3 s, plus one per create it saw commit; never one per request per poll (which at even
    # 10 polls a second would be 300).
    assert len(reads) <= 10 + 10 + 6, reads
    assert max(reads) > 1  # the watcher read several awaited generations at once


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ([("prefer", "wait")], MAX_WAIT_S),
        ([("prefer", "wait=5")], 5),
        ([("prefer", "respond-async, wait=100")], MAX_WAIT_S),
        ([("prefer", "handling=strict"), ("prefer", 'wait="7"')], 7),
        ([("prefer", "wait=abc")], None),
        ([("prefer", "wait=0")], None),
        ([("prefer", "waiting=5")], None),
        ([], None),
    ],
)
def test_the_preference_is_read_as_rfc_7240_says(headers, seconds):
    scope = {"type": "http", "headers": [(name.encode(), value.encode()) for name, value in headers]}
    assert requested_wait(Request(scope)) == seconds
