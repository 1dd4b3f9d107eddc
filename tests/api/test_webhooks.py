"""Signed webhooks (daguerre extension): an ended generation is POSTed to its callback URL (or its
account's), signed per Standard Webhooks (verified with the `standardwebhooks` package), retried with
back-off under the same webhook-id until a 2xx, given up after webhook_give_up_s; deliveries are
visible to the account; callback URLs follow the image-URL rules."""

from __future__ import annotations

import itertools
import json
import time

import httpx
import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from daguerre.api import create_app
from daguerre.wire import Reason
from support.helpers import make_key, uvicorn_thread
from support.receiver import webhook_receiver

pytestmark = pytest.mark.both_databases


@pytest.fixture
def hook_settings(settings):
    return settings.model_copy(
        update={
            "url_allow_http": True,
            "url_allowed_networks": ["127.0.0.1/32"],
            "webhook_retry_base_s": 0.05,
        }
    )


@pytest.fixture
def api(hook_settings, store, blobs):
    """The app on a real uvicorn, its webhook deliverer running."""
    with uvicorn_thread(create_app(hook_settings, store, blobs)) as url:
        yield url


@pytest.fixture
def receiver():
    with webhook_receiver() as running:
        yield running


def create(api, auth, **body):
    response = httpx.post(api + "/v1/generations", json={"prompt": "a cat", **body}, headers=auth)
    assert response.status_code == 201, response.text
    return response.json()["id"]


def deliveries(api, auth, generation_id):
    response = httpx.get(f"{api}/v1/generations/{generation_id}/webhooks", headers=auth)
    assert response.status_code == 200, response.text
    return response.json()["data"]


def test_an_ended_generation_is_posted_signed(api, store, key, auth, receiver, worker):
    generation_id = create(api, auth, callback_url=receiver.url)
    assert worker.run_once().generation_id == generation_id
    (received,) = receiver.wait_for(1)
    body = json.loads(received.body)
    assert (body["id"], body["state"]) == (generation_id, "completed")
    assert httpx.get(body["output"][0]["url"]).status_code == 200
    secret = store.webhooks.secret(key.account_id)  # what `daguerre accounts webhook-secret` prints
    assert secret.startswith("whsec_")
    assert Webhook(secret).verify(received.body, received.headers) == body  # an independent verifier
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(received.body.replace(b"completed", b"failed"), received.headers)
    (delivery,) = _settled(api, auth, generation_id)
    assert delivery["id"] == received.headers["webhook-id"] and delivery["state"] == "delivered"
    assert [attempt["status"] for attempt in delivery["attempts"]] == [200]


def _settled(api, auth, generation_id, timeout_s=10.0):
    deadline = time.monotonic() + timeout_s
    while True:
        found = deliveries(api, auth, generation_id)
        if found and all(item["state"] != "pending" for item in found):
            return found
        assert time.monotonic() < deadline, found
        time.sleep(0.05)


def test_a_receiver_that_fails_three_times_gets_it_on_the_fourth(api, auth, receiver, worker):
    receiver.statuses = [500, 503, 404]
    generation_id = create(api, auth, callback_url=receiver.url)
    worker.run_once()
    received = receiver.wait_for(4)
    assert len({item.headers["webhook-id"] for item in received}) == 1  # the same message each time
    gaps = [later.at - earlier.at for earlier, later in itertools.pairwise(received)]
    assert gaps[2] > gaps[0]  # backing off
    (delivery,) = _settled(api, auth, generation_id)
    assert [attempt["status"] for attempt in delivery["attempts"]] == [500, 503, 404, 200]
    assert delivery["state"] == "delivered" and delivery["delivered_at"]


def test_failed_and_cancelled_generations_are_reported_too(api, auth, receiver):
    generation_id = create(api, auth, callback_url=receiver.url)
    httpx.post(f"{api}/v1/generations/{generation_id}/cancel", headers=auth)
    (received,) = receiver.wait_for(1)
    body = json.loads(received.body)
    assert (body["state"], body["failure_reason"]) == ("failed", Reason.CANCELLED)


def test_the_account_s_default_url_is_used_without_a_callback_url(api, store, key, auth, receiver, worker):
    store.webhooks.set_url(key.account_id, receiver.url)
    generation_id = create(api, auth)
    worker.run_once()
    (received,) = receiver.wait_for(1)
    assert json.loads(received.body)["id"] == generation_id
    store.webhooks.set_url(key.account_id, None)
    quiet = create(api, auth)
    worker.run_once()
    time.sleep(0.5)
    assert len(receiver.received) == 1 and deliveries(api, auth, quiet) == []


def test_an_address_the_rules_refuse_is_never_reached_and_retried_until_given_up(
    hook_settings, store, blobs, auth, worker
):
    settings = hook_settings.model_copy(update={"webhook_give_up_s": 0.5})
    with uvicorn_thread(create_app(settings, store, blobs)) as api:
        generation_id = create(api, auth, callback_url="http://10.1.2.3/hooks")
        worker.run_once()
        (delivery,) = _settled(api, auth, generation_id)
    assert delivery["state"] == "failed"
    assert delivery["attempts"] and {attempt["error"] for attempt in delivery["attempts"]} == {
        "address not allowed"
    }


def test_deliveries_are_the_account_s_own(api, store, auth, receiver):
    generation_id = create(api, auth, callback_url=receiver.url)
    stranger = make_key(store, "stranger")
    response = httpx.get(f"{api}/v1/generations/{generation_id}/webhooks", headers=stranger.headers)
    assert (response.status_code, response.json()) == (404, {"detail": "Generation not found"})


@pytest.mark.parametrize(
    ("url", "detail"),
    [
        ("http://example.com/hook", "callback_url: https required"),
        ("ftp://example.com/hook", "callback_url: must be an http(s) URL of at most 2048 characters"),
        ("https://", "callback_url: must be an http(s) URL of at most 2048 characters"),
        (
            "https://example.com/" + "a" * 2040,
            "callback_url: must be an http(s) URL of at most 2048 characters",
        ),
    ],
)
def test_bad_callback_urls_are_400(client, auth, url, detail):
    response = client.post("/v1/generations", json={"prompt": "x", "callback_url": url}, headers=auth)
    assert (response.status_code, response.json()) == (400, {"detail": detail})
