"""GET /v1/generations/{id}/events (daguerre extension, Server-Sent Events) on a real uvicorn: the
generation first, its queue position, engine progress at most ten times a second, every change of
state, and the ended generation last, after which the stream ends."""

from __future__ import annotations

import base64
import io
import threading
import time

import httpx
import pytest
from PIL import Image

from daguerre.api import create_app
from daguerre.wire import Reason
from support import helpers
from support.engines import preview_at
from support.helpers import make_key, scripted_models, uvicorn_thread
from support.sse import follow

pytestmark = pytest.mark.both_databases

STEPS = 20


@pytest.fixture
def url(settings, store, blobs):
    with uvicorn_thread(create_app(settings, store, blobs)) as base_url:
        yield base_url


@pytest.fixture
def running_worker(settings, store, blobs, tmp_path):
    """A worker thread with an engine of STEPS steps of 50 ms, showing a preview every 0.2 s."""
    models = scripted_models(tmp_path / "m.toml", steps=STEPS, step_s=0.05)
    with helpers.running_worker(
        settings.model_copy(update={"models_file": models, "idle_poll_s": 0.05, "preview_every_s": 0.2}),
        store,
        blobs,
    ) as worker:
        yield worker


def create(url, auth):
    response = httpx.post(url + "/v1/generations", json={"prompt": "a cat"}, headers=auth)
    assert response.status_code == 201
    return response.json()["id"]


def test_a_running_generation_is_followed_to_its_end(url, auth, running_worker):
    generation_id = create(url, auth)
    events = follow(url, generation_id, auth)
    names = [event.name for event in events]
    assert names[0] == "generation" and events[0].data["id"] == generation_id
    final = events[-1]
    assert final.name == "generation" and final.data["state"] == "completed"
    assert httpx.get(final.data["output"][0]["url"]).status_code == 200
    progress = [event for event in events if event.name == "progress"]
    assert progress, names
    steps = [event.data["step"] for event in progress]
    assert steps == sorted(set(steps)) and {event.data["total"] for event in progress} == {STEPS}
    seconds = max(progress[-1].at - progress[0].at, 0.1)
    assert len(progress) <= 10 * seconds + 2  # throttled
    assert [int(event.id) for event in events] == list(range(1, len(events) + 1))
    states = [event.data["state"] for event in events if event.name == "generation"]
    assert states == sorted(set(states), key=states.index)  # each change once, in order


def test_previews_of_the_picture_come_while_it_runs_and_go_when_it_ends(url, auth, running_worker, store):
    generation_id = create(url, auth)
    events = follow(url, generation_id, auth)
    previews = [event for event in events if event.name == "preview"]
    # 20 steps of 50 ms, a preview every 0.2 s from 0.2 s on: about four (the reader's 0.1 s reads
    # may miss one that is replaced before it looks)
    assert 2 <= len(previews) <= 5, [event.name for event in events]
    steps = [event.data["step"] for event in previews]
    assert steps == sorted(set(steps)) and steps[0] >= 3
    for event in previews:
        assert event.data["total"] == STEPS and event.data["media_type"] == "image/jpeg"
        picture = Image.open(io.BytesIO(base64.b64decode(event.data["data"])))
        assert picture.format == "JPEG" and picture.size == (32, 16)
        expected = preview_at("a cat", event.data["step"], STEPS).getpixel((0, 0))
        assert max(abs(a - b) for a, b in zip(picture.getpixel((8, 8)), expected, strict=True)) <= 3
    assert events[-1].data["state"] == "completed"
    assert store.generations.preview(generation_id) is None  # not kept once it has ended


def test_a_late_client_gets_the_ended_generation_and_the_end(url, auth, running_worker):
    generation_id = create(url, auth)
    follow(url, generation_id, auth)  # to its end
    again = follow(url, generation_id, {**auth, "Last-Event-ID": "7"})  # as a reconnecting browser
    assert [(event.name, event.data["state"]) for event in again] == [("generation", "completed")]


def test_a_queued_generation_shows_its_place_and_its_cancellation(url, auth):
    create(url, auth)
    waiting = create(url, auth)
    events: list = []
    reader = threading.Thread(target=lambda: events.extend(follow(url, waiting, auth)))
    reader.start()
    time.sleep(1.0)
    assert httpx.post(f"{url}/v1/generations/{waiting}/cancel", headers=auth).status_code == 200
    reader.join(10)
    assert [event.name for event in events] == ["generation", "queue", "generation"]
    assert events[0].data["state"] == "queued" and events[1].data == {"position": 2}
    assert (events[2].data["state"], events[2].data["failure_reason"]) == ("failed", Reason.CANCELLED)


def test_unknown_and_foreign_generations_are_404(url, auth, store):
    generation_id = create(url, auth)
    stranger = make_key(store, "stranger")
    for headers, target in (
        (stranger.headers, generation_id),
        (auth, "d290f1ee-6c54-4b01-90e6-d701748f0851"),
    ):
        response = httpx.get(f"{url}/v1/generations/{target}/events", headers=headers)
        assert (response.status_code, response.json()) == (404, {"detail": "Generation not found"})
    assert httpx.get(f"{url}/v1/generations/{generation_id}/events").status_code == 401
