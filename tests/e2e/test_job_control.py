"""Job control beyond Luma through the official SDK's raw helpers, on both profiles (the SDK has no
methods for them: apps reach them with `luma.get` / `luma.post`): listing, and cancelling a queued
and a running generation. On the cluster the running one is on an engine-only worker, and the
cancel reaches it through Temporal."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import luma_agents
import pytest

from daguerre.wire import Reason
from support.cluster import Cluster, sdk
from support.engines import runs_of
from support.helpers import LiveServer, scripted_models
from support.helpers import wait_for_generation as wait

STEPS = 100


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("runs")


@pytest.fixture(scope="module")
def server(tmp_path_factory, launch, runs_dir):
    root = tmp_path_factory.mktemp("jobs")
    models = scripted_models(root / "models.toml", steps=STEPS, step_s=0.1, runs_dir=str(runs_dir))
    live = launch(root, models)
    yield live
    assert live.stop() in (0, -signal.SIGTERM), live.log()


@pytest.fixture(scope="module")
def idle(tmp_path_factory, launch):
    """A server without workers: what is created stays queued."""
    root = tmp_path_factory.mktemp("idle")
    live = launch(
        root,
        scripted_models(root / "models.toml"),
        workers=0,
        # Webhooks to a receiver on this host, retried quickly.
        DAGUERRE_URL_ALLOW_HTTP="true",
        DAGUERRE_URL_ALLOWED_NETWORKS='["127.0.0.1/32"]',
        DAGUERRE_WEBHOOK_RETRY_BASE_S="0.1",
    )
    yield live
    assert live.stop() in (0, -signal.SIGTERM), live.log()


def cancel(luma, generation_id: str) -> dict:
    return luma.post(f"/generations/{generation_id}/cancel", cast_to=object)


def steps_run(runs_dir: Path, generation_id: str) -> list[int]:
    return [run.steps for run in runs_of(runs_dir, generation_id)]


def test_a_running_generation_is_cancelled_and_stops(server: LiveServer | Cluster, runs_dir):
    luma = sdk(server)
    created = luma.generations.create(prompt="a long one", aspect_ratio="1:1")
    deadline = time.monotonic() + 30
    while not any(steps >= 3 for steps in steps_run(runs_dir, created.id)):
        assert time.monotonic() < deadline, server.log()
        time.sleep(0.02)
    body = cancel(luma, created.id)
    assert (body["state"], body["failure_code"], body["failure_reason"]) == (
        "failed",
        "generation_failed",
        Reason.CANCELLED,
    )
    time.sleep(1.0 if isinstance(server, LiveServer) else 4.0)  # Temporal: the next heartbeat
    settled = steps_run(runs_dir, created.id)
    time.sleep(0.5)
    assert steps_run(runs_dir, created.id) == settled  # the engine stopped
    assert len(settled) == 1 and settled[0] < STEPS
    done = luma.generations.get(created.id)
    assert (done.state, done.failure_reason, done.output) == ("failed", Reason.CANCELLED, [])


def test_a_queued_generation_is_cancelled_at_once(idle):
    luma = sdk(idle)
    created = luma.generations.create(prompt="never run")
    body = cancel(luma, created.id)
    assert (body["state"], body["failure_reason"]) == ("failed", Reason.CANCELLED)
    assert wait(luma, created.id).state == "failed"


def test_the_list_through_the_sdk(idle):
    luma = sdk(idle)
    made = [luma.generations.create(prompt=f"listed {n}", user_id="lister").id for n in range(5)]
    first = luma.get("/generations", cast_to=object, options={"params": {"limit": 3, "user_id": "lister"}})
    assert [item["id"] for item in first["data"]] == made[::-1][:3] and first["has_more"] is True
    rest = luma.get(
        "/generations",
        cast_to=object,
        options={"params": {"limit": 3, "user_id": "lister", "cursor": first["next_cursor"]}},
    )
    assert [item["id"] for item in rest["data"]] == made[::-1][3:] and rest["has_more"] is False


def test_an_idempotency_key_through_the_sdk(idle):
    """On the cluster the two creates reach different API processes."""
    luma = sdk(idle)
    headers = {"Idempotency-Key": "sdk-order-7"}
    first = luma.generations.with_raw_response.create(prompt="once", extra_headers=headers)
    again = luma.generations.with_raw_response.create(prompt="once", extra_headers=headers)
    assert first.status_code == again.status_code == 201
    assert again.parse().id == first.parse().id and again.headers["idempotent-replayed"] == "true"
    with pytest.raises(luma_agents.UnprocessableEntityError) as reused:
        luma.generations.create(prompt="twice", extra_headers=headers)
    assert reused.value.body == {"detail": "Idempotency-Key reused with a different request"}


def test_a_deadline_stops_a_running_generation(server: LiveServer | Cluster, runs_dir):
    luma = sdk(server)
    created = luma.generations.create(prompt="too slow", extra_headers={"Cancel-After": "5s"})
    done = wait(luma, created.id, 30)
    assert (done.state, done.failure_code, done.failure_reason) == (
        "failed",
        "generation_failed",
        Reason.DEADLINE_EXCEEDED,
    )
    time.sleep(1.0)
    (steps,) = steps_run(runs_dir, created.id)
    assert steps < STEPS  # stopped at the deadline, not run to the end


def test_the_sdk_s_own_requests_trigger_no_extension(idle):
    """The official SDK sends none of the extensions' headers, and its answers carry none of
    theirs: what the Luma endpoints answer the SDK is unchanged by them."""
    import httpx
    import luma_agents

    sent: list[httpx.Request] = []
    received: list[httpx.Response] = []
    http = httpx.Client(
        event_hooks={"request": [sent.append], "response": [received.append]},
        timeout=30,
    )
    with luma_agents.Luma(auth_token=idle.key, base_url=idle.api_url, http_client=http) as luma:
        created = luma.generations.create(prompt="plain", aspect_ratio="1:1", user_id="u-1")
        luma.generations.get(created.id)
        file = luma.files.create(mime_type="image/png", size_bytes=100, purpose="input")
        luma.files.get(file.id)
        luma.files.list(limit=5)
        luma.files.delete(file.id)
    extension_requests = {"prefer", "idempotency-key", "cancel-after"}
    assert not [
        request for request in sent if extension_requests & {name.lower() for name in request.headers}
    ]
    extension_answers = {"preference-applied", "idempotent-replayed"}
    assert not [
        answer for answer in received if extension_answers & {name.lower() for name in answer.headers}
    ]
    generation_fields = {
        "id",
        "type",
        "state",
        "model",
        "created_at",
        "output",
        "failure_code",
        "failure_reason",
    }
    for answer in received[:2]:
        assert set(answer.json()) == generation_fields


def test_progress_and_previews_are_followed_live_until_the_end(server: LiveServer | Cluster):
    """On the cluster the engine runs on an engine-only worker, without a database: its progress
    and previews reach the stream through Temporal (the heartbeats of the generate activity)."""
    import base64
    import io
    import threading

    import httpx
    from PIL import Image

    from support.engines import preview_at
    from support.sse import read_events

    luma = sdk(server)
    created = luma.generations.create(prompt="followed", aspect_ratio="1:1")
    events: list = []

    def collect() -> None:
        headers = {"Authorization": f"Bearer {server.key}"}
        with (
            httpx.Client(base_url=server.base_url, timeout=60) as http,
            http.stream("GET", f"/v1/generations/{created.id}/events", headers=headers) as response,
        ):
            events.extend(read_events(response))  # appended as they arrive

    reader = threading.Thread(target=collect)
    reader.start()

    def seen(name: str) -> int:
        return sum(event.name == name for event in list(events))

    deadline = time.monotonic() + 20  # a preview a second (the default), each step 0.1 s
    while (seen("progress") < 2 or seen("preview") < 1) and time.monotonic() < deadline:
        time.sleep(0.1)
    cancel(luma, created.id)
    reader.join(20)
    assert not reader.is_alive()
    progress = [event.data for event in events if event.name == "progress"]
    assert len(progress) >= 2 and all(item["total"] == STEPS for item in progress), [e.name for e in events]
    previews = [event.data for event in events if event.name == "preview"]
    assert previews, [e.name for e in events]
    for preview in previews:
        picture = Image.open(io.BytesIO(base64.b64decode(preview["data"])))
        expected = preview_at("followed", preview["step"], STEPS).getpixel((0, 0))
        assert max(abs(a - b) for a, b in zip(picture.getpixel((8, 8)), expected, strict=True)) <= 3
    assert events[0].name == "generation" and events[-1].name == "generation"
    assert (events[-1].data["state"], events[-1].data["failure_reason"]) == ("failed", Reason.CANCELLED)


def test_a_signed_webhook_reaches_the_receiver(idle):
    """On the cluster the generation ends through API process A or B, and either one delivers."""
    import json

    from standardwebhooks.webhooks import Webhook

    from support.cluster import run_cli
    from support.receiver import webhook_receiver

    luma = sdk(idle)
    with webhook_receiver() as receiver:
        receiver.statuses = [500]
        created = luma.generations.create(prompt="hooked", extra_body={"callback_url": receiver.url})
        cancel(luma, created.id)
        first, second = receiver.wait_for(2)
    assert first.headers["webhook-id"] == second.headers["webhook-id"]
    secret = run_cli(idle, "accounts", "webhook-secret", "local")
    assert secret.exit_code == 0, secret.output
    body = Webhook(secret.stdout.strip()).verify(second.body, second.headers)
    assert (body["id"], body["state"], body["failure_reason"]) == (created.id, "failed", Reason.CANCELLED)
    assert json.loads(second.body) == body
